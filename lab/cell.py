"""One cell, inside its own subprocess: `python -m lab.cell SPEC.json RESULT.json`.

The parent (lab.runner) writes the spec, starts this process with a timeout and reads the
result. Everything that can crash, hang or leak (a framework's import, its compiler, its
allocator) happens here, so a bad cell never ends the run.

Order of work: build the workload -> first call of each side (timed alone: for a compiler this
is the compile) -> accuracy on the same inputs -> warm-up -> interleaved samples.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field

from lab import accuracy, measure
from lab.nvtx import Ranges


@dataclass
class CellSpec:
    workload: str
    backend: str  # backend name without option, e.g. "torch-compile"
    option: str | None
    mode: str
    shape: dict
    dtype: str
    device: str
    threads: int
    repeats: int
    seed: int = 0
    min_sample_s: float = measure.DEFAULT_MIN_SAMPLE_S
    warmup_steps: int = 3
    warmup_seconds: float = 1.0  # outlasts start-up transients seen after a compile
    cold_l2: bool = False
    cuda_graphs: bool = False
    first_call_only: bool = False  # only time the first call (the warm-cache compile pass)
    profile_dir: str | None = None  # set by lab.profile for a separate tracing pass
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str) -> CellSpec:
        return cls(**json.loads(text))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class CellFailure(Exception):
    """Ends the cell with a status other than ok."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def _is_oom(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "resource_exhausted" in text


def _failure(exc: BaseException, status: str) -> CellFailure:
    if isinstance(exc, CellFailure):
        return exc
    message = f"{type(exc).__name__}: {exc}".strip().splitlines()
    first = message[0][:500] if message else type(exc).__name__
    return CellFailure("oom" if _is_oom(exc) else status, first)


def _timed_first_call(side: measure.Side) -> float:
    t0 = time.perf_counter()
    side.sync(side.step())
    return time.perf_counter() - t0


def _timer(spec: CellSpec, info, sides: list[measure.Side]):
    """CUDA events for torch on CUDA (they see torch's stream); otherwise the host clock
    around steps whose sync completes them (JAX's and TensorFlow's GPU work is invisible to
    torch's events, and their syncs block until it is done)."""
    if spec.device == "cuda" and info.framework == "torch":
        import torch

        if spec.cuda_graphs:
            if spec.mode != "infer":
                raise CellFailure("skipped", "cuda graphs: only infer cells")
            for side in sides:
                side.step = measure.cuda_graph_step(torch, side.step)
        return measure.CudaEventTimer(torch, cold_l2=spec.cold_l2)
    if spec.cold_l2 or spec.cuda_graphs:
        why = "no CUDA device" if spec.device != "cuda" else f"not for {info.framework} cells"
        raise CellFailure("skipped", f"{why} (--cold-l2 and --cuda-graphs time torch on CUDA)")
    return measure.HostTimer()


def run(spec: CellSpec) -> dict:
    """Run the cell; returns the result dict (never raises for the cell's own failures)."""
    from lab import backends
    from lab import workloads

    result: dict = {"status": "ok", "reason": None}
    info = backends.BACKENDS[spec.backend]
    missing = backends.missing_packages(info)
    if missing:
        return {"status": "skipped", "reason": f"{' and '.join(missing)} not installed"}
    module = importlib.import_module(info.module)
    available, why = module.device_available(spec.device)
    if not available:
        return {"status": "skipped", "reason": why}
    module.set_threads(spec.threads)
    result["versions"] = module.versions()
    # trace annotations (lab::<phase>) only in the tracing pass: they cost more than NVTX
    ranges = Ranges(f"{spec.workload}/{spec.backend}/{spec.mode}",
                    annotate=info.framework.value if spec.profile_dir else None)

    try:
        with ranges.phase("setup"):
            workload = workloads.get(spec.workload)
            task = module.build_task(workload, spec.shape, spec.mode, spec.device, spec.dtype,
                                     spec.seed, spec.backend)
            candidate = module.SIDES[spec.backend](task, spec.mode, spec.option)
            baseline = (module.SIDES[info.baseline](task, spec.mode, None)
                        if info.baseline else None)
    except Exception as exc:
        raise _failure(exc, "run_error") from exc

    sides = [measure.Side("baseline", baseline.step, baseline.sync)] if baseline else []
    cand_side = measure.Side("candidate", candidate.step, candidate.sync)
    sides.append(cand_side)

    # First calls: the compiled side's is its compile (cold or warm cache, set by the parent).
    try:
        with ranges.phase("first_call"):
            result["first_call_s"] = _timed_first_call(cand_side)
            if hasattr(candidate, "mark_first_call_done"):
                candidate.mark_first_call_done()
    except Exception as exc:
        raise _failure(exc, "compile_error" if info.compiles else "run_error") from exc
    if spec.first_call_only:
        return result
    if spec.profile_dir:  # the tracing pass (lab.profile), a process apart from the timed one
        from lab import profile

        named = ([(info.baseline, sides[0])] if baseline else []) + [(spec.backend, cand_side)]
        try:  # `sample` ranges stay top-level, as in the timed pass (ncu filters on them)
            result["profile"] = profile.capture(
                info.framework.value, spec.device, named, ranges, spec.profile_dir,
                capture_mode=spec.extra.get("profile_capture", "trace"))
        except Exception as exc:
            raise _failure(exc, "run_error") from exc
        if hasattr(candidate, "diagnostics"):
            result["diagnostics"] = candidate.diagnostics()
        return result
    try:
        if baseline:
            result["baseline_first_call_s"] = _timed_first_call(sides[0])
        with ranges.phase("accuracy"):
            if baseline:
                result["accuracy"] = accuracy.check(candidate.outputs(), baseline.outputs(),
                                                    spec.dtype, candidate.reference_fp64)
                if not result["accuracy"]["passed"]:
                    result.update(status="fail_accuracy",
                                  reason=accuracy.describe_failure(result["accuracy"]))
        if hasattr(candidate, "diagnostics"):
            result["diagnostics"] = candidate.diagnostics()
        if result["status"] != "ok":
            return result

        timer = _timer(spec, info, sides)
        with ranges.phase("warmup"):
            result["warmup"] = measure.warm_up(timer, sides, spec.warmup_steps,
                                               spec.warmup_seconds)
        inner = max(measure.calibrate_inner(timer, s, spec.min_sample_s) for s in sides)
        measure.sample_interleaved(timer, sides, spec.repeats, inner, ranges=ranges)
    except CellFailure:
        raise
    except Exception as exc:
        raise _failure(exc, "run_error") from exc

    if hasattr(candidate, "diagnostics"):
        result["diagnostics"] = candidate.diagnostics()  # again: recompiles during sampling
    result.update(
        timer=timer.name, inner_steps=inner, samples_s=cand_side.samples_s,
        baseline_samples_s=sides[0].samples_s if baseline else None,
    )
    return result


def main(argv: list[str]) -> int:
    spec_path, result_path = argv
    with open(spec_path) as f:
        spec = CellSpec.from_json(f.read())
    try:
        result = run(spec)
    except CellFailure as failure:
        result = {"status": failure.status, "reason": failure.reason,
                  "traceback": traceback.format_exc(limit=8)[-4000:]}
    tmp = f"{result_path}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
