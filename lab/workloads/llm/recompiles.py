"""What a compiler did over a run of steps: graphs, graph breaks and where, recompiles,
retraces, and the seconds spent compiling over a shape cycle.

Read by the backends after a cell's first call (and again after sampling). Two facts measured
with torch 2.13 shape this: `torch._dynamo.utils.counters["graph_break"]` stays empty on a
data-dependent branch; the break shows in `counters["unimplemented"]` (the reason, several
lines) and `counters["resumes"]` (`torch_dynamo_resume_in_<function>_at_<line>`, where the
graph resumed). And Dynamo counts no "recompiles" key: graphs beyond the first per frame are
counted from `counters["stats"]["unique_graphs"]`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

_RESUME = re.compile(r"torch_dynamo_resume_in_(?P<function>.+)_at_(?P<line>\d+)$")


def dynamo_summary(counters) -> dict:
    """Graphs, graph breaks, their reasons (first line each) and resume points, from Dynamo's
    counters (`torch._dynamo.utils.counters`)."""
    unimplemented = dict(counters.get("unimplemented", {}))
    resumes = dict(counters.get("resumes", {}))
    legacy = dict(counters.get("graph_break", {}))  # older torch versions count breaks here
    reasons = sorted({str(r).strip().splitlines()[0] for r in [*unimplemented, *legacy]})
    resumed_at = sorted(f"{m['function']}:{m['line']}" for m in
                        (_RESUME.match(name) for name in resumes) if m)
    return {
        "graphs": int(counters.get("stats", {}).get("unique_graphs", 0)),
        "graph_breaks": int(sum(unimplemented.values()) + sum(legacy.values())),
        "graph_break_reasons": reasons[:20],
        "resumed_at": resumed_at[:20],
    }


def explain_graph_breaks(fn: Callable, *inputs) -> list[dict]:
    """Each graph break of `fn(*inputs)` with its reason and the user source line, from
    `torch._dynamo.explain` (traces without compiling; resets Dynamo's caches first)."""
    import torch

    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn)(*inputs)
    out = []
    for brk in explained.break_reasons:
        frame = brk.user_stack[-1] if brk.user_stack else None
        where = f"{frame.filename}:{frame.lineno}" if frame is not None else "unknown"
        out.append({"reason": str(brk.reason).strip().splitlines()[0], "where": where})
    return out


def jax_executables(jitted) -> int:
    """Executables a `jax.jit` function holds: one per distinct input shape/dtype traced."""
    return int(jitted._cache_size())


def time_cycle(run_batch: Callable[[int], object], count: int, sync: Callable,
               clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Seconds of each batch of a ShapeCycle, each completed (`sync`) before the next."""
    seconds = []
    for i in range(count):
        start = clock()
        sync(run_batch(i))
        seconds.append(clock() - start)
    return seconds


def compile_seconds(first_cycle: list[float], steady_cycle: list[float]) -> dict:
    """Compile time over the cycle: each batch's first time minus its steady time (never below
    zero), per batch and in total. A batch whose shape had a graph already shows ~0."""
    per_batch = [max(0.0, a - b) for a, b in zip(first_cycle, steady_cycle, strict=True)]
    return {"compile_s_per_batch": per_batch, "compile_s_total": sum(per_batch)}
