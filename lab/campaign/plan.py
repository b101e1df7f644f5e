"""What the campaign measures: steps of items in value order, each item one cell or command.

A lab cell is its own `lab run` invocation (--resume into the campaign run), so the campaign
can skip a cell already stored, keep the value order across the steps, and stop between two
cells when the step's budget would be passed. The cells' names come from the lab's own planner
(`session.plan`, not on this machine), so a plan made on a CPU names the cells a GPU will store.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lab.cell.spec import benchmark_name
from lab.core.errors import UsageError
from lab.running import loop as session
from lab.store import identity

LAB = [sys.executable, "-m", "lab.cli"]
# the settings every cell of one campaign run shares, so its cells compare (lab.running.resume)
CELL_REPEATS = 15
CELL_TIMEOUT_S = 90
LATENCY_REPEATS = 100  # per-call samples of a latency cell: p99 needs a hundred
# data-parallel cells at 2 ranks: the seed's "Distributed Training" row as claims/seed.toml
# states it (2 ranks, so a 2-GPU machine runs the same cells as an 8-GPU one and they compare)
RANKS = 2


@dataclass(frozen=True)
class Item:
    """One unit of a step: a lab cell (`name` is its canonical benchmark name, `argv` its
    selection flags) or a command (`name` is the step's, `argv` the whole command line)."""

    name: str
    argv: tuple[str, ...]
    cell: bool = True
    key: tuple = ()  # (workload, backend, mode): how a cost is looked up across shapes
    # a command that runs part of a recorded one (a kernel size of the kernel benchmark): its
    # test cases, and the recorded command whose wall per case it costs until it has its own
    cases: int = 0
    per_case_of: str = ""
    bound_s: float | None = None  # a cell's longest possible wall, its timeouts (launch apart)


@dataclass
class Step:
    name: str
    what: str
    items: list[Item] = field(default_factory=list)
    needs: tuple[str, ...] = ()  # importable packages; missing -> the step is skipped
    needs_gpus: int = 0  # the GPUs the machine must have; fewer -> skipped, with the reason


def cell_item(workload: str, backend: str, mode: str, device: str, precision: str | None = None,
              shape: dict | None = None, latency: bool = False, repeats: int = CELL_REPEATS,
              timeout_s: float = CELL_TIMEOUT_S, ranks: int | None = None,
              parallel: str | None = None) -> Item:
    """One cell as an Item; its name as the lab will store it (UsageError if it cannot run).
    `ranks`/`parallel`: the cell data parallel (`lab run --ranks N --parallel STRATEGY`)."""
    shape = dict(shape or {})
    chosen = session.Selection(workloads=[workload], backends=[backend], modes=[mode],
                               device=device, precision=precision, shape=shape,
                               repeats=repeats, latency=latency, ranks=ranks,
                               parallel=[parallel] if parallel else None)
    chosen.on_this_machine = False  # planned here, measured on the GPU
    cells, _ = session.plan(chosen, timeout_s=timeout_s)
    spec = cells[0].spec
    name = identity.canonical(benchmark_name(spec, cells[0].choice.label))
    argv = ["--workload", workload, "--backend", backend, "--mode", mode, "--device", device,
            "--precision", spec.precision, "--repeats", str(repeats),
            "--timeout", str(int(timeout_s))]
    for key, value in sorted(shape.items()):
        argv += ["--shape", f"{key}={value}"]
    if latency:
        argv.append("--latency")
    bound = None
    if ranks:
        argv += ["--ranks", str(ranks)] + (["--parallel", parallel] if parallel else [])
        bound = 2 * timeout_s  # the 1-rank pass and the N-rank pass, each ended at --timeout
    return Item(name, tuple(argv), True, (workload, cells[0].choice.label, mode),
                bound_s=bound)


def claim_items(claims_path: str, device: str) -> list[Item]:
    """The cells the claims file needs on `device`, in the file's order."""
    from lab.judge import claims, verdict

    todo, _ = verdict.missing_cells(claims.load(claims_path), {}, device)
    items = []
    for _key, workload, backend, mode, precision, shape, latency in todo:
        try:
            # a latency claim reads p99 of per-call samples: as many as the inference step's
            items.append(cell_item(workload, backend, mode, device, precision, shape, latency,
                                   repeats=LATENCY_REPEATS if latency else CELL_REPEATS))
        except UsageError:  # a claim's cell the selection refuses (shape, memory): not planned
            continue
    return items


def _cells(workloads, backends, modes, device, **kw) -> list[Item]:
    out = []
    for w in workloads:
        for m in modes:
            for b in backends:
                try:
                    out.append(cell_item(w, b, m, device, **kw))
                except UsageError:
                    continue
    return out


def _unique(steps: list[Step]) -> list[Step]:
    """A cell named by two steps is measured once, in the first (the more valuable)."""
    seen = set()
    for step in steps:
        kept = []
        for item in step.items:
            if item.cell and item.name in seen:
                continue
            seen.add(item.name)
            kept.append(item)
        step.items = kept
    return steps


def distributed_items(device: str = "cuda") -> list[Item]:
    """The seed's data-parallel row (claims/seed.toml): transformer and GPT-2 training at
    RANKS ranks, torch DDP and FSDP2 eager and compiled, JAX data parallel, TensorFlow
    mirrored (the transformer only: GPT-2 has no TensorFlow version)."""
    items = []
    for workload in ("transformer", "gpt2"):
        for backend, strategies in (("torch-eager", ("ddp", "fsdp")),
                                    ("torch-compile", ("ddp", "fsdp")), ("jax-jit", (None,)),
                                    ("tf-graph", (None,)), ("tf-xla", (None,))):
            for strategy in strategies:
                try:
                    items.append(cell_item(workload, backend, "train", device, ranks=RANKS,
                                           parallel=strategy))
                except UsageError:  # no version of the workload in that framework
                    continue
    return items


def kernel_items(root: str) -> list[Item]:
    """One pytest invocation per deciding size of the kernel benchmark (lab.campaign.
    kernelcases), each writing its own benchmark JSON into the lease's folder."""
    from lab.campaign import kernelcases

    return [Item(case.name, (sys.executable, "-m", "pytest", "-q", kernelcases.BENCH, "-k",
                             case.select, "--benchmark-json={json}"), False,
                 cases=case.cases, per_case_of="kernels")
            for case in kernelcases.size_cases(root)]


def kernel_test_items(root: str) -> list[Item]:
    """The kernel tests compiled for the GPU, one file each (TRITON_INTERPRET=0: the lease's
    environment), so a lease stopped part-way keeps the files it finished. Until a lease has
    timed a file, it costs its test cases x the kernel benchmark's wall per case: each case
    compiles its kernels for the GPU as a benchmark case does, which also autotunes and times
    at large sizes, so the figure errs long."""
    files = sorted(p for p in (Path(root) / "tests").glob("test_kernel_*.py")
                   if p.name != "test_kernel_aot.py")  # AOT compiles for a named GPU: any host
    cases = kernel_test_cases(root, tuple(str(p.relative_to(root)) for p in files))
    return [Item(f"kernel-tests:{p.stem.removeprefix('test_kernel_')}",
                 (sys.executable, "-m", "pytest", "-q", "-x", str(p.relative_to(root))), False,
                 cases=cases.get(str(p.relative_to(root)), 0), per_case_of="kernels")
            for p in files]


@functools.lru_cache(maxsize=4)
def kernel_test_cases(root: str, files: tuple[str, ...]) -> dict[str, int]:
    """Test cases per kernel test file, as pytest collects them ({} when collection fails:
    the items then say that no figure exists)."""
    if not files:
        return {}
    env = {**os.environ, "TRITON_INTERPRET": "1"}  # collection only: any host
    try:
        out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                              "-p", "no:cacheprovider", *files], cwd=root, env=env,
                             capture_output=True, text=True, timeout=300).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    counts: dict[str, int] = {}
    for line in out.splitlines():
        if "::" in line:
            name = line.split("::", 1)[0]
            counts[name] = counts.get(name, 0) + 1
    return counts


def gpu_steps(root: str) -> list[Step]:
    """The CUDA campaign: the CUDA tests, then value order: the seed claims' cells, the
    data-parallel cells (a machine with several GPUs only), the kernel benchmark at its
    deciding sizes, the kernel tests on the GPU, the suite, the profile."""
    suite = _cells(["mlp", "transformer", "resnet50"],
                   ["torch-eager", "torch-compile", "torch-triton", "jax-jit", "tf-xla"],
                   ["infer", "train"], "cuda")
    suite += _cells(["transformer", "resnet50"], ["torch-eager", "torch-compile"],
                    ["infer", "train"], "cuda", precision="fp32")
    suite += _cells(["gpt2", "llama"], ["torch-eager", "torch-compile", "jax-jit"],
                    ["train", "infer", "generate"], "cuda")
    # the inference runtimes in strict fp32 (an exported artifact runs in the dtype it was
    # exported in), per call at batch 1; TorchScript and TensorRT first
    suite += _cells(["mlp", "transformer", "resnet50"],
                    ["torch-eager", "torchscript", "tensorrt", "onnxruntime", "torch-export"],
                    ["infer"], "cuda", precision="fp32", shape={"batch": 1}, latency=True,
                    repeats=LATENCY_REPEATS)
    return _unique([
        Step("cuda-tests", "the lab's CUDA paths (tests/test_cuda.py), every lease",
             [Item("cuda-tests", (sys.executable, "-m", "pytest", "-q", "-x",
                                  "tests/test_cuda.py"), False)],
             needs=("torch",)),
        Step("claims", "the cells the seed's claims need, judged afterwards on the campaign run",
             claim_items(str(Path(root) / "claims" / "seed.toml"), "cuda"), needs=("torch",)),
        Step("distributed", f"the seed's data-parallel row: training at {RANKS} ranks, one GPU "
             "each (DDP, FSDP2, JAX, TensorFlow)", distributed_items(), needs=("torch",),
             needs_gpus=RANKS),
        Step("kernels", "the lab's kernels vs eager, torch.compile and Liger at the sizes "
             "that decide the kernel targets, one size at a time", kernel_items(root),
             needs=("torch", "triton")),
        Step("kernel-tests", "every kernel test compiled for the GPU, one file at a time",
             kernel_test_items(root), needs=("torch", "triton")),
        Step("suite", "mlp, transformer, resnet50 x the torch, jax and tf compilers x infer, "
             "train (CUDA default precision), the torch pair in strict fp32, GPT-2 and Llama, "
             "the inference runtimes per call",
             suite, needs=("torch",)),
        Step("profile", "one transformer cell traced, its hot table and an ncu report",
             [Item("profile", (*LAB, "profile", "--workload", "transformer", "--backend",
                               "torch-compile", "--mode", "infer", "--device", "cuda",
                               "--timeout", "55", "--out", "{out}"), False)],
             needs=("torch",)),
        # last: what the steps above leave of each lease, so successive leases extend it
        Step("model-suite", "the HF model suite at its real sizes, eager and compiled, "
             "inference, one model at a time (docs/suites.md)", suite_items("cuda"),
             needs=("torch", "transformers")),
    ])


def suite_items(device: str) -> list[Item]:
    """The `hf` suite's cells, model by model (eager, then compiled), at the real size."""
    from lab.workloads import suites

    return _cells(suites.names("hf"), ["torch-eager", "torch-compile"], ["infer"], device,
                  shape=suites.size_shape("real"))


def rehearsal_steps() -> list[Step]:
    """The same campaign on the CPU with tiny shapes: the mlp in eager torch, few samples."""
    tiny = {"repeats": 3, "timeout_s": 30}
    return _unique([
        Step("claims", "rehearsal: one claim-like cell",
             [cell_item("mlp", "torch-eager", "infer", "cpu", "fp32", {"batch": 8}, **tiny)],
             needs=("torch",)),
        Step("suite", "rehearsal: the mlp's two modes at batch 4",
             _cells(["mlp"], ["torch-eager"], ["infer", "train"], "cpu", precision="fp32",
                    shape={"batch": 4}, **tiny), needs=("torch",)),
    ])
