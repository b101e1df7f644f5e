"""The lab's engine under pytest-benchmark: eager and torch.compile steps of the built-in
workloads, and a check that the lab's timer agrees with torch.utils.benchmark.Timer.

    pytest bench/bench_core.py --benchmark-autosave
    pytest bench/bench_core.py --benchmark-compare --benchmark-compare-fail=median:10%
"""

from __future__ import annotations

import statistics

import pytest

torch = pytest.importorskip("torch")

from lab import measure, workloads  # noqa: E402
from lab.compile import torch as torch_backend  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CASES = [(w, m) for w in ("mlp", "transformer") for m in ("infer", "train")]


def _side(workload: str, mode: str, backend: str):
    w = workloads.get(workload)
    shape = w.shape_for(DEVICE)
    task = w.build("torch", shape, mode, DEVICE, "float32", seed=0)
    return w, shape, torch_backend.SIDES[backend](task, mode, None)


def _completed(side):
    """A call that returns only when the step's work is done (pytest-benchmark reads a host
    clock, so on CUDA the stream must be drained inside the timed call)."""
    if DEVICE == "cuda":
        def call():
            side.step()
            torch.cuda.synchronize()
        return call
    return lambda: side.sync(side.step())


@pytest.mark.parametrize("backend", ["torch-eager", "torch-compile"])
@pytest.mark.parametrize("workload, mode", CASES)
def test_step(benchmark, workload, mode, backend):
    w, shape, side = _side(workload, mode, backend)
    call = _completed(side)
    call()  # the first call compiles; the lab reports it apart, so keep it out of the samples
    timer = measure.HostTimer()
    measure.warm_up(timer, [measure.Side("s", call)])
    inner = measure.calibrate_inner(timer, measure.Side("s", call), measure.DEFAULT_MIN_SAMPLE_S)
    benchmark.extra_info.update(workload=workload, mode=mode, backend=backend, device=DEVICE,
                                shape=shape, flops_per_step=w.flops(shape, mode),
                                threads=torch.get_num_threads())
    benchmark.pedantic(call, rounds=30, iterations=inner, warmup_rounds=2)


def test_lab_eager_median_agrees_with_torch_utils_benchmark_timer(benchmark):
    """The lab's sampling (warm-up, calibrated inner steps, per-sample means) against
    torch.utils.benchmark.Timer on the same eager MLP step, in this one process. The two
    methods alternate five times so that drift hits both alike."""
    from torch.utils.benchmark import Timer

    _, _, side = _side("mlp", "infer", "torch-eager")
    call = _completed(side)
    threads = torch.get_num_threads()
    lab_medians, timer_medians = [], []
    for _ in range(5):
        lab_side, timer = measure.Side("lab", call), measure.HostTimer()
        measure.warm_up(timer, [lab_side])
        inner = measure.calibrate_inner(timer, lab_side, measure.DEFAULT_MIN_SAMPLE_S)
        measure.sample_interleaved(timer, [lab_side], repeats=30, inner=inner)
        lab_medians.append(statistics.median(lab_side.samples_s))
        # Timer defaults to one thread: give it the lab's thread count, or it measures
        # something else
        reference = Timer(stmt="call()", globals={"call": call}, num_threads=threads)
        timer_medians.append(reference.blocked_autorange(min_run_time=0.5).median)
    lab_s, timer_s = statistics.median(lab_medians), statistics.median(timer_medians)
    ratio = lab_s / timer_s
    benchmark.extra_info.update(lab_median_s=lab_s, timer_median_s=timer_s, ratio=ratio,
                                lab_medians_s=lab_medians, timer_medians_s=timer_medians,
                                threads=threads, device=DEVICE)
    print(f"\nlab median {lab_s * 1e6:.1f} us, torch Timer median {timer_s * 1e6:.1f} us, "
          f"ratio {ratio:.3f}")
    benchmark.pedantic(call, rounds=10, iterations=inner)
    assert abs(ratio - 1) <= 0.05, f"lab/Timer = {ratio:.3f}, outside 5%"
