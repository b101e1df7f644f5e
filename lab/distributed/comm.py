"""The share of a torch step spent in communication, as torch's profiler shows it: a few
steps profiled on every rank (the steps are collective: every rank must run them), the
intervals of the collectives' events (gloo's, NCCL's and c10d's all-reduce, reduce-scatter,
all-gather, broadcast) merged so nested and overlapping ones count once, over the steps' wall.

On the CPU the gloo collectives run on a thread of their own, overlapping the backward that is
still computing, so this is the share of the step during which a collective was in flight,
not the share the step waited for one; on CUDA the NCCL kernels' device time is taken.
`cell_fields` turns any framework's per-rank figures (this module's, lab.distributed.comm_trace's
for JAX and TensorFlow) into the cell's fields.
"""

from __future__ import annotations

import time

# the process group's own events (c10d's ops, gloo's and NCCL's), never an aten op whose name
# merely contains a collective's word (aten::broadcast_tensors is a shape rule)
COLLECTIVES = ("c10d::", "gloo:", "nccl")
PROFILED_STEPS = 3


def _merged_us(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def share(torch, step, sync, cuda: bool, steps: int = PROFILED_STEPS) -> dict:
    """{"comm_share", "comm_s_per_step", "profiled_steps", "events"} for this rank."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            sync(step())
        wall = time.perf_counter() - t0
    intervals, names = [], set()
    for event in prof.events():
        name = event.name.lower()
        if not any(c in name for c in COLLECTIVES):
            continue
        on_device = cuda and getattr(event, "device_type", None) is not None and \
            "cuda" in str(event.device_type).lower()
        if cuda and not on_device and "nccl" not in name:
            continue  # on CUDA: the kernels' time, not the host's launch
        intervals.append((event.time_range.start, event.time_range.end))
        names.add(event.name)
    comm_s = _merged_us(intervals) / 1e6
    return {"comm_share": round(min(comm_s / wall, 1.0), 4) if wall > 0 else None,
            "comm_s_per_step": comm_s / steps, "profiled_steps": steps,
            "events": sorted(names)[:8]}


def cell_fields(diagnostics: dict | None) -> dict:
    """The cell's communication share where the framework's profiler shows it: one figure per
    rank (torch: per process; JAX: per device of the one process; TensorFlow: one for the
    process, any replica's collective in flight), or the reason there is none."""
    shares, reasons = [], []
    for r in (diagnostics or {}).get("per_rank") or []:
        comm = (r or {}).get("communication") or {}
        shares += comm.get("per_device") or [comm.get("comm_share")]
        if comm.get("reason"):
            reasons.append(comm["reason"])
    if any(x is not None for x in shares):
        return {"comm_share_per_rank": shares}
    if reasons:
        return {"comm_share_reason": "; ".join(dict.fromkeys(reasons))}
    return {}
