"""Where a run was measured, as stored beside its results (`fingerprint.json`): the hardware
that decides whether two runs compare, the machine id that names their folder, package
versions, the lab's commit, and the environment variables that change what a run measures,
with anything that looks like a credential left out or redacted (run folders are committed
and shared). Knows no framework: versions are read from package metadata, GPUs from
nvidia-smi.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import lab
from lab.core.cores import usable_cores

PACKAGES = ("torch", "triton", "jax", "jaxlib", "tensorflow", "tensorflow-cpu", "keras",
            "numpy", "scipy", "pytest-benchmark", "nvtx")
# The environment variables that change what a run measures (threads, allocators, instruction
# sets, compilers and their caches, devices), stored in the fingerprint. Names, not prefixes: a
# prefix such as TF_ also matches Terraform's TF_TOKEN_<host>, NVIDIA_ matches NVIDIA_API_KEY,
# and run folders are committed and shared. docs/profiles.md lists them.
ENV_NAMES = frozenset({
    # thread pools: OpenMP (GNU and Intel), MKL, OpenBLAS, TensorFlow's own
    "OMP_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES", "OMP_DYNAMIC", "OMP_WAIT_POLICY",
    "OMP_SCHEDULE", "OMP_MAX_ACTIVE_LEVELS", "OMP_STACKSIZE", "GOMP_SPINCOUNT",
    "KMP_AFFINITY", "KMP_BLOCKTIME", "KMP_HW_SUBSET", "KMP_TPAUSE", "KMP_SETTINGS",
    "MKL_NUM_THREADS", "MKL_DYNAMIC", "MKL_THREADING_LAYER", "MKL_ENABLE_INSTRUCTIONS",
    "MKL_CBWR", "MKL_DEBUG_CPU_TYPE", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
    "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
    # instruction sets and math modes of the CPU kernels
    "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ONEDNN_DEFAULT_FPMATH_MODE", "ATEN_CPU_CAPABILITY",
    "TF_ENABLE_ONEDNN_OPTS",
    # allocators
    "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF", "PYTORCH_NO_CUDA_MEMORY_CACHING",
    "LD_PRELOAD", "MALLOC_ARENA_MAX", "TF_GPU_ALLOCATOR", "TF_FORCE_GPU_ALLOW_GROWTH",
    "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION",
    "XLA_PYTHON_CLIENT_ALLOCATOR",
    # compilers, their settings and caches
    "XLA_FLAGS", "TF_XLA_FLAGS", "TF_DETERMINISTIC_OPS", "TF_CUDNN_DETERMINISTIC",
    "JAX_PLATFORMS", "JAX_ENABLE_X64", "JAX_DEFAULT_MATMUL_PRECISION", "JAX_DISABLE_JIT",
    "JAX_COMPILATION_CACHE_DIR", "TORCHDYNAMO_DISABLE", "TORCH_COMPILE_DISABLE", "TORCH_LOGS",
    "TORCH_COMPILE_DEBUG", "PYTORCH_JIT", "PYTORCH_TUNABLEOP_ENABLED",
    "TORCHINDUCTOR_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCHINDUCTOR_AUTOGRAD_CACHE",
    "TORCHINDUCTOR_FORCE_DISABLE_CACHES", "TORCHINDUCTOR_MAX_AUTOTUNE",
    "TORCHINDUCTOR_MAX_AUTOTUNE_GEMM", "TORCHINDUCTOR_MAX_AUTOTUNE_POINTWISE",
    "TORCHINDUCTOR_COORDINATE_DESCENT_TUNING", "TORCHINDUCTOR_FREEZING",
    "TORCHINDUCTOR_CPP_WRAPPER", "TORCHINDUCTOR_COMPILE_THREADS",
    "TORCHINDUCTOR_LAYOUT_OPTIMIZATION", "TORCHINDUCTOR_SHAPE_PADDING",
    "TRITON_INTERPRET", "TRITON_CACHE_DIR",
    # devices
    "CUDA_VISIBLE_DEVICES", "CUDA_LAUNCH_BLOCKING", "CUDA_MODULE_LOADING",
    "CUDA_DEVICE_MAX_CONNECTIONS", "CUBLAS_WORKSPACE_CONFIG", "NVIDIA_TF32_OVERRIDE",
    "NVIDIA_VISIBLE_DEVICES",
})
# Never stored, even where listed above: a name that says it holds a credential
CREDENTIAL_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|CREDENTIAL"
                             r"|AUTH|KEY|PRIVATE", re.IGNORECASE)
# ... or a value that carries one: a URL's user:password@, or a well-known token's prefix
# (GitHub, Hugging Face, OpenAI-style, AWS access key ids, Slack, GitLab)
CREDENTIAL_VALUE = re.compile(r"://[^/\s:@]+:[^/\s@]+@|\b(?:(?:ghp_|gho_|ghs_|github_pat_|hf_"
                              r"|sk-|xox[abprs]-|glpat-)[A-Za-z0-9_-]{8,}|AKIA[0-9A-Z]{16})")
REDACTED = "<redacted>"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _gpus() -> list[dict]:
    """GPUs as nvidia-smi reports them (no framework import); [] when there is none."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2],
                         "max_sm_clock": parts[3] if len(parts) > 3 else None})
    return gpus


def _package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def _git_commit() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                              cwd=Path(lab.__file__).resolve().parent).stdout.strip()
    try:
        return {"id": git("rev-parse", "HEAD") or "unversioned",
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"id": "unversioned", "dirty": None}


def hardware() -> dict:
    """The part of the fingerprint that decides whether two runs are comparable."""
    gpus = _gpus()
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": len(usable_cores()),
        "memory_gib": _memory_gib(),
        "machine": platform.machine(),
        "gpus": [{"name": g["name"], "memory": g["memory"]} for g in gpus],
    }


def performance_env(environ) -> dict:
    """The variables of ENV_NAMES that are set, less any whose name says credential; a value
    that carries one is stored as REDACTED (the variable was set, its value is not kept)."""
    return {name: redact(value) for name, value in sorted(environ.items())
            if name in ENV_NAMES and not CREDENTIAL_NAME.search(name)}


def redact(text: str) -> str:
    """`text` with any credential CREDENTIAL_VALUE finds replaced: for what a run stores of
    its command line and environment."""
    return CREDENTIAL_VALUE.sub(lambda m: "://" + REDACTED + "@" if m.group(0).startswith("://")
                                else REDACTED, text)


def fingerprint(threads: int | None = None) -> dict:
    gpus = _gpus()
    return {
        "hardware": hardware(),
        "gpu_drivers": sorted({g["driver"] for g in gpus}),
        "gpu_max_sm_clock": [g["max_sm_clock"] for g in gpus],
        "os": f"{platform.system()} {platform.release()}",
        "versions": _package_versions(),
        "threads": threads,
        # other work on the machine competes for cores: with every core busy, a multi-threaded
        # step waits on descheduled threads and can be 100x slower; record it to explain that
        "load_avg_1m_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "env": performance_env(os.environ),
        "git": _git_commit(),
    }


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def machine_id(hw: dict | None = None) -> str:
    """A readable id for a class of machine: the GPU if any, else the CPU, and the core count."""
    hw = hw or hardware()
    if hw["gpus"]:
        return f"{slug(hw['gpus'][0]['name'])}-x{len(hw['gpus'])}"
    return f"{slug(hw['cpu_model'])}-{hw['cpu_count']}c"
