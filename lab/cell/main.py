"""One cell, inside its own subprocess: `python -m lab.cell.main SPEC.json RESULT.json`.

The parent (lab.cell.launch) writes the spec, starts this process with a timeout and reads the
result. Everything that can crash, hang or leak (a framework's import, its compiler, its
allocator) happens here, so a bad cell never ends the run.

Order of work (KernelBench's: compile, then correctness, then performance only if correct):
build the workload -> first call of each side (timed alone: for a compiler this is the compile)
-> accuracy on the same inputs -> warm-up -> interleaved samples. Each phase's wall time is
recorded, so a cell's cost beyond what it measures can be seen and cut.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback

from lab.cell import accuracy, measure, memory
from lab.cell.nvtx import PHASES, Ranges
from lab.cell.spec import CellPass, CellResult, CellSpec
from lab.core.status import OOM_MARKERS, CellFailure, Status

_PROCESS_START = time.perf_counter()  # a cell's budget counts from its process's start


def _is_oom(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return isinstance(exc, MemoryError) or any(m in text for m in OOM_MARKERS)


def _failure(exc: BaseException, status: Status) -> CellFailure:
    if isinstance(exc, CellFailure):
        return exc
    message = f"{type(exc).__name__}: {exc}".strip().splitlines()
    first = message[0][:500] if message else type(exc).__name__
    return CellFailure(Status.OOM if _is_oom(exc) else status, first)


# a compiled side's first-call failures that the model itself may cause: the cell then tries
# its eager baseline once, and an eager failure is reported as the model's (run_error)
EAGER_SUSPECT = (Status.COMPILE_ERROR, Status.CONVERT_ERROR, Status.RUN_ERROR)


def _eager_fails(side: measure.Side) -> CellFailure | None:
    """The eager side's own failure on one step (run_error, or oom); None when it runs."""
    try:
        side.sync(side.step())
    except Exception as exc:
        return _failure(exc, Status.RUN_ERROR)
    return None


def _loss_used(task, mode: str) -> str | None:
    """Which loss a train step ran, where the workload's loss says (a user's model: its own
    loss, the factory's loss_fn, or the default; lab.workloads.user)."""
    if mode != "train":
        return None
    return getattr(getattr(getattr(task, "task", task), "loss_fn", None), "used", None)


def _timed_first_call(side: measure.Side) -> float:
    t0 = time.perf_counter()
    side.sync(side.step())
    return time.perf_counter() - t0


def _timer(spec: CellSpec, framework: str, sides: list[measure.Side]):
    """CUDA events for torch on CUDA (they see torch's stream); otherwise the host clock
    around steps whose sync completes them (JAX's and TensorFlow's GPU work is invisible to
    torch's events, and their syncs block until it is done)."""
    if spec.device == "cuda" and framework == "torch":
        import torch

        if spec.cuda_graphs:
            if spec.mode != "infer":
                raise CellFailure(Status.SKIPPED, "cuda graphs: only infer cells")
            for side in sides:
                side.step = measure.cuda_graph_step(torch, side.step)
        return measure.CudaEventTimer(torch, cold_l2=spec.cold_l2)
    if spec.cold_l2 or spec.cuda_graphs:
        why = "no CUDA device" if spec.device != "cuda" else f"not for {framework} cells"
        raise CellFailure(Status.SKIPPED,
                          f"{why} (--cold-l2 and --cuda-graphs time torch on CUDA)")
    return measure.HostTimer()


class _Phases:
    """Each phase as an NVTX range (and a trace annotation in the tracing pass), with its wall
    time added to the result's `phases_s`."""

    def __init__(self, ranges: Ranges, result: CellResult):
        self.ranges, self.result = ranges, result

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        # the NVTX phases are a fixed set that profilers filter on; "sampling" holds the
        # per-sample `sample` ranges and must not nest another range around them
        ranged = self.ranges.phase(name) if name in PHASES else contextlib.nullcontext()
        try:
            with ranged:
                yield
        finally:
            spent = time.perf_counter() - t0
            self.result.phases_s[name] = round(self.result.phases_s.get(name, 0.0) + spent, 6)


def _check_accuracy(spec: CellSpec, result: CellResult, candidate, baseline) -> None:
    """Eager first: run twice on the timed inputs, it must agree with itself and (unless the
    user allowed it) be finite, or nothing can be judged against it. Then the compiled side
    against eager. Sets the result's accuracy, and its status and reason on a failure."""
    allow_nan = bool(spec.extra.get("allow_nan"))
    eager = baseline or candidate  # a cell without a baseline is an eager cell
    try:
        first = eager.outputs()
    except NotImplementedError:  # a side that cannot give its outputs: nothing to check
        return
    verdict = accuracy.check_eager(first, eager.outputs(), spec.precision, allow_nan)
    if verdict["passed"] and baseline:
        verdict = {**accuracy.check(candidate.outputs(), first, spec.precision,
                                    candidate.reference_fp64, allow_nan=allow_nan,
                                    stated=candidate.accuracy_tolerance),
                   "eager_repeat_max_abs_err": verdict["max_abs_err"]}
        if not verdict["passed"]:
            verdict["status"] = Status.FAIL_ACCURACY.value
            verdict["detail"] = accuracy.describe_failure(verdict)
    result.accuracy = verdict
    if not verdict["passed"]:
        result.status = Status(verdict["status"])
        result.reason = verdict["detail"]


MEMORY_STEPS = 3  # steps per side in the memory phase: the first may still grow caches


def _measure_memory(probe, after_import: int, first_call: memory.Phase,
                    sides: list[measure.Side]) -> dict:
    """Each side's peak over a few steps of its own, above what was resident before them
    (weights, inputs, optimizer state), and the first call's peak (the compile or
    conversion), beside the process's state after the framework's import."""
    steady = {}
    for side in sides:
        start = memory.begin(probe)
        for _ in range(MEMORY_STEPS):
            side.sync(side.step())
        steady[side.name] = memory.end(probe, start)
    cand, base = steady["candidate"], steady.get("baseline")
    out = {
        "probe": probe.name, "resettable": probe.resettable,
        "after_import_mib": memory.mib(after_import),
        "first_call_peak_above_start_mib": memory.mib(first_call.above_start_bytes),
        "resident_mib": memory.mib(cand.start_bytes),
        "step_peak_above_resident_mib": memory.mib(cand.above_start_bytes),
        "peak_mib": memory.mib(max(cand.peak_bytes, first_call.peak_bytes)),
        "peak_above_import_mib": memory.mib(
            max(cand.peak_bytes, first_call.peak_bytes) - after_import),
    }
    if base is not None:
        out["baseline_step_peak_above_resident_mib"] = memory.mib(base.above_start_bytes)
        # the dynamo harness's "compression ratio": eager's peak over the compiled one's; a
        # probe that cannot reset its peak cannot tell the two sides apart
        out["ratio_eager_over_candidate"] = (
            round(base.above_start_bytes / cand.above_start_bytes, 4)
            if probe.resettable and cand.above_start_bytes > 0 else None)
        why = memory.unresolved_memory_ratio(memory.mib(base.above_start_bytes),
                                      memory.mib(cand.above_start_bytes), probe.resettable)
        if why:
            out["ratio_eager_over_candidate"], out["ratio_unresolved"] = None, why
    return out


def read_back_versions(packages) -> dict:
    """This process's Python and the installed version of each of `packages` (None where
    absent), as this interpreter finds them: a cell of an environment names its own versions."""
    import importlib.metadata
    import platform

    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def run(spec: CellSpec, result: CellResult | None = None) -> CellResult:
    """Run the cell; returns its result. The cell's own failures raise CellFailure."""
    from lab import compile as backends
    from lab import workloads

    result = result or CellResult()
    info = backends.BACKENDS[spec.backend]
    t0 = time.perf_counter()
    support = backends.support(info, spec.device)
    if not support.ok:
        return CellResult.failed(Status.SKIPPED, support.reason, phases_s=result.phases_s)
    module = backends.load(info)
    module.set_threads(spec.threads)
    result.versions = module.versions()
    if spec.env:  # under `lab run --env`: what this interpreter holds, read here, not assumed
        # (the framework's own answer, from the module it imported, stands over the metadata's)
        result.versions = {**read_back_versions(spec.env.get("packages") or ()),
                           **result.versions}
    result.phases_s["import"] = round(time.perf_counter() - t0, 6)
    framework = info.framework.value
    probe = memory.probe(framework, spec.device)
    after_import = probe.in_use()
    # trace annotations (lab::<phase>) only in the tracing pass: they cost more than NVTX
    ranges = Ranges(f"{spec.workload}/{spec.backend}/{spec.mode}",
                    annotate=framework if spec.cell_pass == CellPass.TRACE else None)
    phase = _Phases(ranges, result)

    try:
        with phase("setup"):
            # before the model is built: Keras's dtype policy applies when layers are made
            result.precision_settings = module.apply_precision(spec.precision, spec.device)
            workload = workloads.get(spec.workload)
            task = module.build_task(workload, spec.shape, spec.mode, spec.device, spec.precision,
                                     spec.seed, spec.backend)
            candidate = module.SIDES[spec.backend](task, spec.mode, spec.option)
            baseline = (module.SIDES[info.baseline](task, spec.mode, None)
                        if info.baseline else None)
    except Exception as exc:
        raise _failure(exc, Status.RUN_ERROR) from exc

    sides = [measure.Side("baseline", baseline.step, baseline.sync)] if baseline else []
    cand_side = measure.Side("candidate", candidate.step, candidate.sync)
    sides.append(cand_side)

    # First calls: the compiled side's is its compile (cold or warm cache, set by the parent).
    try:
        with phase("first_call"):
            start = memory.begin(probe)
            result.first_call_s = _timed_first_call(cand_side)
            first_call_memory = memory.end(probe, start)
            candidate.mark_first_call_done()
    except Exception as exc:
        failure = _failure(exc, Status.COMPILE_ERROR if info.compiles else Status.RUN_ERROR)
        eager = _eager_fails(sides[0]) if baseline and failure.status in EAGER_SUSPECT \
            else None
        if eager:  # the model fails as it is, before any compiler: not a compile error
            raise CellFailure(eager.status, f"eager ({info.baseline}) fails too: "
                                            f"{eager.reason}") from exc
        raise failure from exc
    if spec.cell_pass == CellPass.FIRST_CALL:
        return result
    if spec.cell_pass == CellPass.COUNTS:  # lab.counts: instructions, not times
        from lab.counts import inner

        try:
            result.counts = inner.count_steps(cand_side, int(spec.extra["counts_steps"]))
        except Exception as exc:
            raise _failure(exc, Status.RUN_ERROR) from exc
        return result
    if spec.cell_pass == CellPass.TRACE:  # the profiling pass, a process apart from timing
        from lab.cell import trace as tracing

        named = ([(info.baseline, sides[0])] if baseline else []) + [(spec.backend, cand_side)]
        try:  # `sample` ranges stay top-level, as in the timed pass (ncu filters on them)
            with phase("trace"):
                result.profile = tracing.capture(
                    framework, spec.device, named, ranges, spec.profile_dir,
                    capture_mode=spec.extra.get("profile_capture", "trace"))
        except Exception as exc:
            raise _failure(exc, Status.RUN_ERROR) from exc
        result.diagnostics = candidate.diagnostics()
        return result
    try:
        if baseline:
            with phase("first_call"):
                result.baseline_first_call_s = _timed_first_call(sides[0])
        with phase("accuracy"):
            _check_accuracy(spec, result, candidate, baseline)
        result.diagnostics = candidate.diagnostics()
        result.loss = _loss_used(task, spec.mode)
        if not result.ok:
            return result
        with phase("memory"):
            result.memory = _measure_memory(probe, after_import, first_call_memory, sides)

        timer = _timer(spec, framework, sides)
        deadline = None if spec.budget_s is None else _PROCESS_START + spec.budget_s
        with phase("warmup"):
            # a quarter of what the budget has left, at most the usual 10 s
            longest = 10.0 if deadline is None else \
                min(10.0, max(spec.warmup_seconds, 0.25 * (deadline - time.perf_counter())))
            result.warmup = measure.warm_up(timer, sides, spec.warmup_steps,
                                            spec.warmup_seconds, max_seconds=longest)
            # latency: a sample is one call, as a request sees it; averaging many calls
            # would hide the slow ones the tail percentiles are about
            inner = 1 if spec.latency else \
                max(measure.calibrate_inner(timer, s, spec.min_sample_s) for s in sides)
        with phase("sampling"):
            rounds = measure.sample_interleaved(timer, sides, spec.repeats, inner,
                                                ranges=ranges, deadline=deadline)
        result.sampling = {"rounds_planned": spec.repeats, "rounds": rounds,
                           "cut_by_budget": rounds < spec.repeats, "budget_s": spec.budget_s}
    except CellFailure:
        raise
    except Exception as exc:
        raise _failure(exc, Status.RUN_ERROR) from exc

    result.diagnostics = candidate.diagnostics()  # again: recompiles during sampling
    result.timer, result.inner_steps = timer.name, inner
    result.samples_s = cand_side.samples_s
    result.baseline_samples_s = sides[0].samples_s if baseline else None
    return result


def main(argv: list[str]) -> int:
    spec_path, result_path = argv
    with open(spec_path) as f:
        spec = CellSpec.from_json(f.read())
    result = CellResult()
    try:
        result = run(spec, result)
    except CellFailure as failure:
        result = CellResult.failed(failure.status, failure.reason, versions=result.versions,
                                   phases_s=result.phases_s,
                                   precision_settings=result.precision_settings,
                                   traceback=traceback.format_exc(limit=8)[-4000:])
    tmp = f"{result_path}.tmp"
    with open(tmp, "w") as f:
        json.dump(result.to_dict(), f)
    os.replace(tmp, result_path)
    if spec.cell_pass != CellPass.TRACE:
        # The result is on disk; a normal exit would now wait for the frameworks' teardown
        # (Inductor's compile-worker pool alone took 4.9 s after one torch.compile on the
        # 2-core CPU). The parent reaps whatever this process group leaves behind. The
        # tracing pass exits normally: Nsight's injection libraries flush at exit.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--fork-server"]:  # lab.cell.fork: cell processes forked from here
        from lab.cell import fork

        sys.exit(fork.serve(sys.argv[2:], main))
    sys.exit(main(sys.argv[1:]))
