"""The lab's Triton kernels against eager PyTorch, torch.compile and the hardware (CUDA only).

    pytest bench/bench_kernels.py --benchmark-autosave
    pytest bench/bench_kernels.py -k "ceiling or softmax" --benchmark-autosave

First the ceilings of this run are measured on this GPU: copy bandwidth (a 1 GiB
device-to-device copy, counted as 2 GiB moved) and bf16 matmul throughput (8192^3
torch.matmul). Then, for each op and size of its sweep, the same seeded bf16 inputs run
through `torch.compile(reference)`, eager `reference`, Liger-Kernel's version of the op (for
the ops Liger has: softmax, layernorm, rmsnorm, swiglu, cross_entropy) and the lab's op,
forward only and, for ops with a Triton backward, forward + backward (`torch.autograd.grad`,
so no `.grad` accumulation is timed). The reference is the one in the kernel file; for
attention eager is SDPA restricted to its flash backend. Before the lab's op (or Liger's) is
timed, its output on those inputs is checked against the reference in fp32 within the
kernels' tolerance table: a fast wrong answer fails the test and reports no speed.

Liger-Kernel is optional: without `liger_kernel` importable its rows are skipped with
"skipped: liger-kernel not installed". Liger's cross-entropy writes the logits gradient into
the logits (its memory saving), and its RMSNorm runs with `in_place=False` so it leaves the
shared d(out) alone; Liger's RMSNorm casts x * rstd to the input dtype before the weight
("llama" casting), one rounding more than the reference, within the bf16 tolerance.

Timing: device time from CUDA events. Each sample is one round of back-to-back calls sized to
about ROUND_MS of device time, with one wait at the end of the round (not per call); L2 is warm,
and the large sizes are far beyond an H100's 50 MB of L2. pytest-benchmark's own stats are the
host-clock seconds of each round (calls_per_round calls plus one wait); the per-call numbers
are in `extra_info`: `ms` (median), `device_ms_samples`, `GBps`, `TFLOPs`,
`fraction_of_copy_bandwidth`, `fraction_of_matmul_peak`, the `ceilings`,
`peak_extra_memory_MB` (the most memory one call allocated beyond its inputs, from
`torch.cuda.max_memory_allocated`), and on the lab's rows `speedup_vs_eager` /
`speedup_vs_torch_compile` / `speedup_vs_liger` (times of the same inputs in the same run).

Without CUDA every test is skipped: "skipped: needs CUDA".
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("skipped: needs CUDA", allow_module_level=True)
if os.environ.get("TRITON_INTERPRET") == "1":
    pytest.skip("skipped: TRITON_INTERPRET=1 runs the kernels on the CPU; unset it to benchmark",
                allow_module_level=True)
triton = pytest.importorskip("triton")

from lab.kernels import KERNELS  # noqa: E402
from lab.kernels._common import tolerance  # noqa: E402

DEVICE = "cuda"
DTYPE = torch.bfloat16
ROUND_MS = 5.0  # device time per sample: long enough that one wait per round is noise
ROUNDS = 20
WARMUP_ROUNDS = 3
COPY_BYTES = 1 << 30  # the copy ceiling's source: 1 GiB, 20x an H100's L2
MATMUL_CEILING_N = 8192

# Sizes per op. Memory-bound ops go from a few MB to hundreds of MB (the targets apply to the
# large end); each sweep keeps at least one irregular or long-row case.
SWEEPS: dict[str, list[tuple]] = {
    "softmax": [(4096, 1024), (8192, 8192), (4096, 32768)],  # 32768: streamed, two passes
    "layernorm": [(4096, 1024), (16384, 4096), (16384, 8192)],
    "rmsnorm": [(4096, 1024), (16384, 4096), (16384, 8192)],
    "bias_gelu": [(4096, 4096), (16384, 16384)],
    "swiglu": [(4096, 4096), (16384, 14336)],
    "cross_entropy": [(4096, 32000), (8192, 128256)],  # (tokens, vocab)
    # (M, N, K, epilogue): epilogue "gelu_tanh" adds a bias and the activation
    "matmul": [(1024, 1024, 1024, None), (4096, 4096, 4096, None), (8192, 8192, 8192, None),
               (4096, 4096, 4096, "gelu_tanh")],
    # (batch, heads, seq, head_dim, causal)
    "attention": [(4, 16, 1024, 64, False), (4, 16, 4096, 64, True), (4, 16, 4096, 128, False),
                  (4, 16, 4096, 128, True)],
}
WITH_BACKWARD = ("softmax", "layernorm", "rmsnorm", "bias_gelu", "swiglu", "cross_entropy",
                 "attention")
COMPUTE_BOUND = ("matmul", "attention")
# the lab's last, so its speedups can be filled
IMPLS = ("torch-compile", "torch-eager", "liger", "lab")
# Liger-Kernel's function for each op it has (liger_kernel.transformers.functional, 0.8.5)
LIGER_FUNCTIONS = {"softmax": "liger_softmax", "layernorm": "liger_layer_norm",
                   "rmsnorm": "liger_rms_norm", "swiglu": "liger_swiglu",
                   "cross_entropy": "liger_cross_entropy"}
LIGER_MISSING = "skipped: liger-kernel not installed"
TARGETS = {
    "memory": ">= 0.85 of copy bandwidth at large sizes, forward and forward+backward; geomean "
              ">= 1.2x torch.compile; never slower than Liger-Kernel",
    "cross_entropy": ">= 1.5x torch.compile forward+backward at 8192 x 128256 bf16; peak "
                     "memory no higher than Liger-Kernel's",
    "matmul": ">= 0.98x torch.matmul at 4096^3 and 8192^3 bf16",
    "attention": ">= 1.0x SDPA flash forward at seq 4096 d128, >= 0.9x at seq 1024; "
                 "forward+backward >= 0.8x SDPA's",
}

_CEILINGS: dict[str, float] = {}
_MEDIAN_MS: dict[tuple, dict[str, float]] = {}


# ----------------------------------------------------------------------------------- timing


def _timed(benchmark, fn) -> list[float]:
    """Per-call device milliseconds, one per round; pytest-benchmark stores the rounds."""
    fn()  # the first call compiles and autotunes: never a sample
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    inner = max(1, min(1000, math.ceil(ROUND_MS / max(start.elapsed_time(end), 1e-3))))
    per_call_ms: list[float] = []

    def one_round():
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()  # one wait per round of `inner` calls
        per_call_ms.append(start.elapsed_time(end) / inner)

    benchmark.pedantic(one_round, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS, iterations=1)
    # the warm-up rounds ran one_round too; with --benchmark-disable only one round runs
    samples = per_call_ms[WARMUP_ROUNDS:] or per_call_ms
    benchmark.extra_info.update(calls_per_round=inner,
                                device_ms_samples=[round(ms, 6) for ms in samples])
    return samples


def _copy_problem():
    src = torch.empty(COPY_BYTES // 2, dtype=DTYPE, device=DEVICE).normal_()
    dst = torch.empty_like(src)
    return (lambda: dst.copy_(src)), 2 * COPY_BYTES


def _matmul_problem():
    n = MATMUL_CEILING_N
    a = torch.randn(n, n, dtype=DTYPE, device=DEVICE)
    b = torch.randn(n, n, dtype=DTYPE, device=DEVICE)
    return (lambda: torch.matmul(a, b)), 2 * n**3


def _measure_ceiling(name: str, benchmark=None) -> float:
    """copy_GBps or matmul_bf16_TFLOPs, measured once per run."""
    if name not in _CEILINGS:
        fn, work = _copy_problem() if name == "copy_GBps" else _matmul_problem()
        if benchmark is not None:
            ms = statistics.median(_timed(benchmark, fn))
        else:  # asked for by an op test run alone (-k): measure without storing
            ms = _median_ms_unstored(fn)
        _CEILINGS[name] = work / (ms * 1e-3) / (1e9 if name == "copy_GBps" else 1e12)
        torch.cuda.empty_cache()
    return _CEILINGS[name]


def _median_ms_unstored(fn) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples = []
    for _ in range(ROUNDS):
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return statistics.median(samples)


@pytest.fixture(scope="module")
def ceilings() -> dict[str, float]:
    for name in ("copy_GBps", "matmul_bf16_TFLOPs"):
        _measure_ceiling(name)
    return dict(_CEILINGS)


@pytest.mark.parametrize("name", ["copy_GBps", "matmul_bf16_TFLOPs"])
def test_ceiling(benchmark, name):
    benchmark.group = "ceilings"
    value = _measure_ceiling(name, benchmark)
    benchmark.extra_info.update(ceiling=name, value=round(value, 2), dtype="bfloat16",
                                device=torch.cuda.get_device_name(),
                                work="1 GiB copy (2 GiB moved)" if name == "copy_GBps"
                                else f"{MATMUL_CEILING_N}^3 torch.matmul")


# --------------------------------------------------------------------------------- problems


@dataclass
class Problem:
    args: list  # inputs, in the order of both the lab op and the reference
    grad_args: tuple  # indices of the differentiable inputs (forward + backward only)
    flops: int
    bytes_moved: int


def _problem(op: str, size: tuple, backward: bool) -> Problem:
    """Seeded inputs (the same for every implementation) and the work of one call."""
    gen = torch.Generator(device=DEVICE).manual_seed(0)

    def randn(*shape):
        return torch.randn(shape, generator=gen, device=DEVICE, dtype=DTYPE)

    module = KERNELS[op]
    kw: dict = {}
    if op == "softmax":
        args, grads, shape = [randn(*size)], (0,), size
    elif op == "layernorm":
        n = size[-1]
        args, grads, shape = [randn(*size), randn(n), randn(n), 1e-5], (0, 1, 2), size
    elif op == "rmsnorm":
        args, grads, shape = [randn(*size), randn(size[-1]), 1e-6], (0, 1), size
    elif op == "bias_gelu":
        args, grads, shape = [randn(*size), randn(size[-1]), "tanh"], (0, 1), size
    elif op == "swiglu":
        args, grads, shape = [randn(*size), randn(*size)], (0, 1), size
    elif op == "cross_entropy":
        n_rows, vocab = size
        target = torch.randint(0, vocab, (n_rows,), generator=gen, device=DEVICE)
        args, grads, shape = [randn(n_rows, vocab), target], (0,), size
    elif op == "matmul":
        m, n, k, activation = size
        bias = randn(n) if activation else None
        args, grads, shape = [randn(m, k), randn(k, n), bias, activation], (), (m, n, k)
    elif op == "attention":
        batch, heads, seq, head_dim, causal = size
        args = [randn(batch, heads, seq, head_dim) for _ in range(3)] + [causal]
        # fwd+bwd: dq, dk, dv against SDPA's flash backward
        grads, shape, kw = (0, 1, 2), (batch, heads, seq, seq, head_dim), {"causal": causal}
    else:
        raise KeyError(op)
    flops = module.flops(shape, **kw)
    if op == "cross_entropy":
        moved = module.bytes_moved(shape, DTYPE, with_grad=backward)
    else:
        moved = module.bytes_moved(shape, DTYPE)
    if backward:
        flops += module.flops(shape, backward=True, **kw)
        moved += module.bytes_moved(shape, DTYPE, backward=True)
        for i in grads:
            args[i].requires_grad_(True)
    return Problem(args, grads if backward else (), flops, moved)


def _liger(op: str):
    """Liger-Kernel's version of `op`, taking the reference's arguments; skips when Liger is
    not installed (it is optional: a pure-Python wheel, see docs/kernels.md)."""
    import importlib.util

    if importlib.util.find_spec("liger_kernel") is None:
        pytest.skip(LIGER_MISSING)
    from liger_kernel.transformers import functional

    fn = getattr(functional, LIGER_FUNCTIONS[op])
    if op == "rmsnorm":
        return lambda x, w, eps: fn(x, w, eps, in_place=False)
    if op == "cross_entropy":
        return lambda logits, target: fn(logits, target)
    return fn


def _implementation(op: str, impl: str):
    module = KERNELS[op]
    if impl == "lab":
        return getattr(module, op)
    if impl == "liger":
        return _liger(op)
    if impl == "torch-compile":
        torch._dynamo.reset()  # a fresh cache per case: no recompile limit, no stale graph
        return torch.compile(module.reference, dynamic=False)
    if op == "attention":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def sdpa_flash(*args):
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return module.reference(*args)
        return sdpa_flash
    return module.reference


def _peak_extra_bytes(step) -> int:
    """The most memory one call of `step` allocates beyond what was live before it (its inputs
    and d(out)); the first call compiles and autotunes, so this is the second."""
    step()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def _step(fn, problem: Problem):
    if not problem.grad_args:
        def forward():
            with torch.no_grad():
                return fn(*problem.args)
        return forward
    inputs = [problem.args[i] for i in problem.grad_args]
    # d(out) made once, outside the timed calls; ones, as loss.backward() starts from 1
    grad_out = torch.ones_like(fn(*problem.args).detach())

    def forward_backward():
        out = fn(*problem.args)
        return torch.autograd.grad(out, inputs, grad_out)
    return forward_backward


def _check_accuracy(op: str, problem: Problem, fn) -> float:
    """`fn`'s forward output on the timed inputs against the reference run in fp32. `fn` sees
    copies: Liger's cross-entropy overwrites logits that require grad with their gradient."""
    module = KERNELS[op]
    with torch.no_grad():
        copies = [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in problem.args]
        out = fn(*copies)
        wide = [a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                for a in problem.args]
        expected = module.reference(*wide).to(DTYPE)
    torch.testing.assert_close(out, expected, **tolerance(DTYPE),
                               msg=lambda m: f"fail_accuracy: {op} ({fn}) disagrees "
                                             f"with its reference: {m}")
    return (out.float() - expected.float()).abs().max().item()


def _cases() -> list:
    params = []
    for op, sizes in SWEEPS.items():
        for size in sizes:
            for backward in (False, True) if op in WITH_BACKWARD else (False,):
                for impl in IMPLS:
                    if impl == "liger" and op not in LIGER_FUNCTIONS:
                        continue
                    pass_id = "fwd+bwd" if backward else "fwd"
                    size_id = "x".join(str(s) for s in size if type(s) is int)
                    extra = [f"bias+{s}" for s in size if isinstance(s, str)]
                    extra += ["causal"] if op == "attention" and size[-1] else []
                    case_id = "-".join([op, size_id, *extra, pass_id, impl])
                    params.append(pytest.param(op, size, backward, impl, id=case_id))
    return params


# ------------------------------------------------------------------------------------ cases


@pytest.mark.parametrize("op, size, backward, impl", _cases())
def test_kernel(benchmark, ceilings, op, size, backward, impl):
    problem = _problem(op, size, backward)
    pass_name = "forward+backward" if backward else "forward"
    benchmark.group = f"{op} {pass_name} {size}"
    info = {"op": op, "impl": impl, "pass": pass_name, "size": list(size), "dtype": "bfloat16",
            "device": torch.cuda.get_device_name(), "bytes": problem.bytes_moved,
            "flops": problem.flops, "ceilings": ceilings,
            "bound": "compute" if op in COMPUTE_BOUND else "memory",
            "target": TARGETS.get(op, TARGETS["memory"]),
            "versions": {"torch": torch.__version__, "triton": triton.__version__}}
    fn = _implementation(op, impl)
    if impl in ("lab", "liger"):
        info["max_abs_error_vs_fp32_reference"] = _check_accuracy(op, problem, fn)
    if impl == "torch-compile":
        from torch._dynamo.utils import counters

        counters.clear()
    step = _step(fn, problem)
    info["peak_extra_memory_MB"] = round(_peak_extra_bytes(step) / 1e6, 1)
    samples = _timed(benchmark, step)
    if impl == "torch-compile":
        info["compile_graph_breaks"] = sum(counters["graph_break"].values())

    ms = statistics.median(samples)
    seconds = ms * 1e-3
    gbps = problem.bytes_moved / seconds / 1e9
    tflops = problem.flops / seconds / 1e12
    info.update(ms=round(ms, 5), GBps=round(gbps, 1), TFLOPs=round(tflops, 2),
                fraction_of_copy_bandwidth=round(gbps / ceilings["copy_GBps"], 3),
                fraction_of_matmul_peak=round(tflops / ceilings["matmul_bf16_TFLOPs"], 3))

    key = (op, size, backward)
    _MEDIAN_MS.setdefault(key, {})[impl] = ms
    if impl == "lab":
        for other, field in (("torch-eager", "speedup_vs_eager"),
                             ("torch-compile", "speedup_vs_torch_compile"),
                             ("liger", "speedup_vs_liger")):
            if other in _MEDIAN_MS[key]:
                info[field] = round(_MEDIAN_MS[key][other] / ms, 3)
    benchmark.extra_info.update(info)
