"""A training step timed across ranks: every rank waits at a barrier, times its own steps, and
the ranks exchange their times; the slowest rank's time is the sample, since the next step
cannot start anywhere before the slowest rank's gradients are in the all-reduce.

Framework-free: a rank gives `gather(values) -> [values of rank 0, values of rank 1, ...]`
(a collective every rank calls at the same point) and `barrier()`. Decisions that end a loop
(warm-up long enough, the budget spent) travel in the same exchange, so every rank leaves a
loop after the same step and no rank is left waiting in a collective.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Gather = Callable[[list[float]], list[list[float]]]


@dataclass
class RankTimes:
    samples_s: list[float] = field(default_factory=list)  # the slowest rank's, per sample
    per_rank_s: list[list[float]] = field(default_factory=list)  # [sample][rank]


def timed(step: Callable[[], object], sync: Callable[[object], object], inner: int,
          barrier: Callable[[], None], gather: Gather, stop: bool) -> tuple[list[float], bool]:
    """`inner` steps from a common start; (each rank's seconds per step, whether any rank
    asked to stop)."""
    barrier()
    t0 = time.perf_counter()
    out = None
    for _ in range(inner):
        out = step()
    sync(out)
    own = (time.perf_counter() - t0) / inner
    rows = gather([own, 1.0 if stop else 0.0])
    return [r[0] for r in rows], any(r[1] > 0 for r in rows)


def first_call(step, sync, barrier, gather: Gather) -> float:
    """The first step (a compile, for a compiler), the slowest rank's."""
    times, _ = timed(step, sync, 1, barrier, gather, False)
    return max(times)


def warm_up(step, sync, barrier, gather: Gather, steps: int, seconds: float,
            max_seconds: float) -> dict:
    """At least `steps` steps and `seconds` seconds, then until two windows of 3 steps agree
    within 10% or `max_seconds` pass (the lab's single-process rule, lab.cell.measure)."""
    t0 = time.perf_counter()
    history: list[float] = []
    while True:
        elapsed = time.perf_counter() - t0
        window = history[-6:]
        steady = len(window) == 6 and abs(sum(window[:3]) - sum(window[3:])) <= \
            0.1 * sum(window[3:])
        done = elapsed >= max_seconds or (len(history) >= steps and elapsed >= seconds and steady)
        times, stop = timed(step, sync, 1, barrier, gather, done)
        history.append(max(times))
        if stop:
            return {"steps": len(history), "seconds": round(time.perf_counter() - t0, 6),
                    "steady": steady}


def inner_steps(step_s: float, min_sample_s: float) -> int:
    """Steps per sample so that a sample lasts at least `min_sample_s`."""
    return max(1, math.ceil(min_sample_s / max(step_s, 1e-9)))


def sample(step, sync, barrier, gather: Gather, repeats: int, inner: int,
           deadline: float | None) -> RankTimes:
    """Up to `repeats` samples of `inner` steps (at least 5 unless a rank's budget is spent
    before: every rank leaves together)."""
    out = RankTimes()
    for k in range(repeats):
        late = deadline is not None and time.perf_counter() > deadline and k >= 5
        times, stop = timed(step, sync, inner, barrier, gather, late)
        if stop and k >= 5:
            break
        out.samples_s.append(max(times))
        out.per_rank_s.append(times)
    return out
