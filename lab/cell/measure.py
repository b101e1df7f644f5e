"""Timers and sampling: how one step's duration is read, and how sides are interleaved.

A *step* is a zero-argument callable that launches one unit of work and returns a handle; a
*sync* turns that handle into a completed result (a no-op for synchronous CPU torch, `.numpy()`
for TensorFlow, `block_until_ready()` for JAX). The CPU clock reads time around step + sync.
On CUDA, events are recorded on the stream around the steps and read once per round, so the
host never blocks on a tiny call (a bare synchronize per call would add its own latency).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Step = Callable[[], object]
Sync = Callable[[object], object]

DEFAULT_MIN_SAMPLE_S = 0.002  # a sample shorter than this is dominated by clock/loop overhead


def _identity(x):
    return x


@dataclass
class Side:
    """One side of a comparison: a named step and how to complete it."""

    name: str
    step: Step
    sync: Sync = _identity
    samples_s: list[float] = field(default_factory=list)  # seconds per step, one per sample


class HostTimer:
    """perf_counter around `inner` completed steps; the per-step time is the mean."""

    name = "perf_counter"

    def time(self, side: Side, inner: int) -> float:
        step, sync = side.step, side.sync
        t0 = time.perf_counter()
        for _ in range(inner):
            out = step()
        sync(out)
        return (time.perf_counter() - t0) / inner

    def flush(self) -> None:
        """Host timing needs no deferred readout."""


def l2_flush_bytes(l2_cache_bytes: int) -> int:
    """Size of the buffer written before each timed step to evict the card's L2.

    Twice the L2 so that, whatever the replacement policy, no line of the previous step's
    working set can survive; at least 8 MiB so a card that reports 0 is still flushed.
    """
    return max(2 * int(l2_cache_bytes), 8 << 20)


class CudaEventTimer:
    """CUDA events on the current stream; read back in `flush()`, once per round.

    Warm L2 (the default): one event pair around `inner` back-to-back steps; the sample is
    their mean. Cold L2 (`cold_l2`): every step gets its own event pair, and a buffer of
    `l2_flush_bytes` is zeroed before each step, outside its events, so that every timed step
    starts with a cold L2 (as KernelBench and tritonbench time). A flush per sample would
    leave all but the first of a sample's steps warm: a sample lasts at least 2 ms, so a 20 us
    kernel would run 99 of its 100 timed steps on the previous step's cache lines. The sample
    is then the mean of its steps' event times, the same statistic as the warm path's.
    """

    name = "cuda_event"

    def __init__(self, torch_module, cold_l2: bool = False):
        self.torch = torch_module
        props = torch_module.cuda.get_device_properties(torch_module.cuda.current_device())
        l2 = getattr(props, "L2_cache_size", 0)
        self.flush_buffer = (
            torch_module.empty(l2_flush_bytes(l2), dtype=torch_module.uint8, device="cuda")
            if cold_l2 else None
        )
        # (side, [(start, end), ...], steps between each start and end)
        self._pending: list[tuple[Side, list[tuple[object, object]], int]] = []

    def _event_pair(self):
        event = self.torch.cuda.Event
        return event(enable_timing=True), event(enable_timing=True)

    def time(self, side: Side, inner: int) -> None:
        if self.flush_buffer is not None:
            self._pending.append((side, self._cold_steps(side, inner), 1))
            return None
        start, end = self._event_pair()
        start.record()
        for _ in range(inner):
            side.step()
        end.record()
        self._pending.append((side, [(start, end)], inner))
        return None

    def _cold_steps(self, side: Side, inner: int) -> list[tuple[object, object]]:
        pairs = []
        for _ in range(inner):
            self.flush_buffer.zero_()  # before the start event: the flush is never timed
            start, end = self._event_pair()
            start.record()
            side.step()
            end.record()
            pairs.append((start, end))
        return pairs

    def flush(self) -> None:
        """Wait once for the round, then turn event pairs into samples."""
        if not self._pending:
            return
        self._pending[-1][1][-1][1].synchronize()
        for side, pairs, steps_per_pair in self._pending:
            side.samples_s.append(step_seconds(pairs, steps_per_pair))
        self._pending.clear()


def step_seconds(pairs: list[tuple[object, object]], steps_per_pair: int) -> float:
    """Mean seconds per step over event pairs that each enclose `steps_per_pair` steps."""
    total_ms = sum(start.elapsed_time(end) for start, end in pairs)
    return total_ms / 1e3 / (steps_per_pair * len(pairs))


def calibrate_inner(timer, side: Side, min_sample_s: float, max_inner: int = 10_000) -> int:
    """Steps per sample so that one sample lasts at least `min_sample_s` (after warm-up)."""
    per_step = _time_once(timer, side, 1)
    if per_step <= 0:
        return max_inner
    return max(1, min(max_inner, int(min_sample_s / per_step + 0.999)))


def _time_once(timer, side: Side, inner: int) -> float:
    if isinstance(timer, HostTimer):
        return timer.time(side, inner)
    before = len(side.samples_s)
    timer.time(side, inner)
    timer.flush()
    value = side.samples_s.pop()
    assert len(side.samples_s) == before
    return value


def warm_up(timer, sides: list[Side], min_steps: int = 3, min_seconds: float = 0.2,
            max_seconds: float = 10.0, window: int = 5, tolerance: float = 0.10,
            max_spread: float = 0.5) -> dict:
    """Run every side until its step time is steady, or `max_seconds` pass.

    Steady means, for every side: the median of the last `window` steps is within `tolerance`
    of the median of the `window` steps before, and those 2*window steps are not erratic
    (interquartile range under `max_spread` of their median; sub-millisecond CPU steps show
    IQRs of 15-60%, so the bound is loose). A compiler's background work (worker pools
    starting, lazy initialisation) can make the first seconds after a compile slow and erratic;
    sampling then would measure the machine's state, not the steady step.
    """
    from lab.core import stats  # numpy: loaded only where a cell samples

    history: dict[str, list[float]] = {side.name: [] for side in sides}
    t0 = time.perf_counter()

    def steady() -> bool:
        for times in history.values():
            if len(times) < 2 * window:
                return False
            recent = stats.median(times[-window:])
            before = stats.median(times[-2 * window:-window])
            q1, q3 = stats.quartiles(times[-2 * window:])
            if abs(recent - before) > tolerance * before or q3 - q1 > max_spread * recent:
                return False
        return True

    steps = 0
    while True:
        elapsed = time.perf_counter() - t0
        if steps >= min_steps and elapsed >= min_seconds and steady():
            return {"steps": steps, "seconds": elapsed, "converged": True}
        if elapsed >= max_seconds:
            return {"steps": steps, "seconds": elapsed, "converged": False}
        for side in sides:
            history[side.name].append(_time_once(timer, side, 1))
        steps += 1


MIN_ROUNDS = 5  # fewer samples than this give no usable interval; a budget never cuts below


def sample_interleaved(timer, sides: list[Side], repeats: int, inner: int,
                       on_sample: Callable[[], None] | None = None, ranges=None,
                       deadline: float | None = None) -> int:
    """Collect `repeats` samples per side in ABBA order; returns the rounds taken.

    Interleaving makes slow drift (thermal, frequency, a neighbour process) hit every side
    alike; reversing the order every other round cancels the advantage of going first or
    second (caches warmed by the other side, allocator state). With a `deadline`
    (perf_counter seconds), sampling stops after the round that passes it, once MIN_ROUNDS
    are in: a cell whose slower side would run past its budget ends with fewer samples
    instead of a timeout.
    """
    for r in range(repeats):
        if deadline is not None and r >= MIN_ROUNDS and time.perf_counter() > deadline:
            return r
        order = sides if r % 2 == 0 else list(reversed(sides))
        for side in order:
            with ranges.phase("sample", payload=r) if ranges else contextlib.nullcontext():
                value = timer.time(side, inner)
            if value is not None:
                side.samples_s.append(value)
        timer.flush()
        if on_sample is not None:
            on_sample()
    return repeats


def cuda_graph_step(torch_module, step: Step, warmup_steps: int = 3) -> Step:
    """Capture `step` once in a CUDA graph and return a step that replays it.

    Inputs must be static (the same tensors every call), which holds for the lab's cells.
    Warm-up runs on a side stream first, as torch.cuda.graphs requires.
    """
    cuda = torch_module.cuda
    stream = cuda.Stream()
    stream.wait_stream(cuda.current_stream())
    with cuda.stream(stream):
        for _ in range(warmup_steps):
            step()
    cuda.current_stream().wait_stream(stream)
    graph = cuda.CUDAGraph()
    with cuda.graph(graph):
        static_out = step()

    def replay():
        graph.replay()
        return static_out

    return replay
