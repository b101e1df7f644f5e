"""The share of a JAX or TensorFlow data-parallel step spent in communication, as each
framework's own profiler shows it (lab.distributed.comm does the same for torch's profiler).

A few steps are traced after the timed samples (a profiler slows the steps it watches), and
the collectives' events are read back from the trace the profiler wrote:

- JAX (`jax.profiler.trace`, its Perfetto JSON): XLA's runtime records one event per HLO
  instruction it runs, with the instruction (`hlo_op`) and the device it ran for
  (`device_ordinal`); the collectives are all-reduce, all-gather, reduce-scatter,
  collective-permute and all-to-all (and their async -start/-done halves, NCCL's kernels on
  CUDA). The share is given per device.
- TensorFlow (`tf.profiler.experimental`, its XSpace protobuf): the executor records one event
  per op it runs, named `op_name:OpType`; the collectives are the `Collective*` ops
  (CollectiveReduceV2: MirroredStrategy's all-reduce on CPU devices) and NCCL's. Events do not
  name their replica, so the share is one figure for the process: the time during which any
  replica's collective was in flight.

As for torch on the CPU, a device that waits for a slower one waits inside the collective (XLA's
rendezvous, TensorFlow's collective executor): this is time in flight, an upper bound on what
communication cost the step, not its cost. Where a trace shows no collective (or the profiler
fails) the result holds the reason in place of a number.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import re
import time

from lab.distributed.comm import PROFILED_STEPS, _merged_us

JAX_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute",
                   "all-to-all")


def _result(intervals_us: list, wall_s: float, steps: int, names: set, source: str) -> dict:
    comm_s = _merged_us(intervals_us) / 1e6
    return {"comm_share": round(min(comm_s / wall_s, 1.0), 4) if wall_s > 0 else None,
            "comm_s_per_step": comm_s / steps, "profiled_steps": steps,
            "events": sorted(names)[:8], "source": source}


def _no_share(reason: str, steps: int, source: str) -> dict:
    return {"comm_share": None, "reason": reason, "profiled_steps": steps, "source": source}


def _traced(start, stop, step, sync, steps: int) -> float:
    """`steps` steps between start() and stop(); the steps' wall in seconds."""
    start()
    try:
        t0 = time.perf_counter()
        for _ in range(steps):
            sync(step())
        return time.perf_counter() - t0
    finally:
        stop()


# ---------------------------------------------------------------- JAX

def jax_collective(event: dict) -> bool:
    """A Perfetto event of an HLO collective: `all-reduce`, `all-reduce.3`, `all-reduce-start`
    (the instruction's name, as the runtime records it), or an NCCL kernel."""
    if event.get("ph") != "X":
        return False
    op = str((event.get("args") or {}).get("hlo_op") or "")
    base = re.sub(r"\.\d+$", "", op)
    return base.removesuffix("-start").removesuffix("-done") in JAX_COLLECTIVES or \
        "nccl" in str(event.get("name", "")).lower()


def jax_intervals(events: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """Device -> the (start, end) microseconds of its collectives' events."""
    out: dict[str, list[tuple[float, float]]] = {}
    for e in events:
        if jax_collective(e):
            device = str((e.get("args") or {}).get("device_ordinal", e.get("pid")))
            ts = float(e["ts"])
            out.setdefault(device, []).append((ts, ts + float(e.get("dur") or 0.0)))
    return out


def jax_share(jax, step, sync, folder: str, steps: int = PROFILED_STEPS) -> dict:
    """{"comm_share" (the devices' mean), "per_device": [...], ...} or the reason there is
    none."""
    source = "jax.profiler trace (XLA's HLO collectives per device)"
    try:
        wall = _traced(lambda: jax.profiler.start_trace(folder, create_perfetto_trace=True),
                       jax.profiler.stop_trace, step, sync, steps)
        paths = sorted(glob.glob(os.path.join(folder, "**", "perfetto_trace.json.gz"),
                                 recursive=True))
        if not paths:
            return _no_share("the profiler wrote no Perfetto trace", steps, source)
        with gzip.open(paths[-1], "rt") as f:
            doc = json.load(f)
    except Exception as exc:  # the share is a diagnostic: its failure never fails the cell
        return _no_share(f"profiler failed: {type(exc).__name__}: {exc}"[:200], steps, source)
    events = doc.get("traceEvents", []) if isinstance(doc, dict) else doc
    by_device = jax_intervals(events)
    if not by_device:
        return _no_share("no HLO collective in the trace", steps, source)
    names = {str(e.get("args", {}).get("hlo_op") or e.get("name")) for e in events
             if jax_collective(e)}
    devices = [_result(by_device[d], wall, steps, names, source)
               for d in sorted(by_device, key=lambda d: (len(d), d))]
    out = devices[0]
    for key in ("comm_share", "comm_s_per_step"):  # the devices' mean
        known = [d[key] for d in devices if d[key] is not None]
        out[key] = round(sum(known) / len(known), 6) if known else None
    out["per_device"] = [d["comm_share"] for d in devices]
    return out


# ---------------------------------------------------------------- TensorFlow

def tf_collective(name: str) -> bool:
    """An executor event `op_name:OpType` of a collective op, or an NCCL kernel."""
    op_type = name.rpartition(":")[2] if ":" in name else ""
    return op_type.startswith("Collective") or "nccl" in name.lower()


def tf_intervals(space) -> tuple[list[tuple[float, float]], set]:
    """The (start, end) microseconds of an XSpace's collective events, and their names."""
    intervals, names = [], set()
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if not tf_collective(name):
                    continue
                start_ps = line.timestamp_ns * 1000 + event.offset_ps
                intervals.append((start_ps / 1e6, (start_ps + event.duration_ps) / 1e6))
                names.add(name.rpartition(":")[2] or name)
    return intervals, names


def _xplane_pb2():
    try:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2
    except ImportError:  # where TensorFlow ships tsl at the top level
        from tsl.profiler.protobuf import xplane_pb2
    return xplane_pb2


def tf_share(tf, step, sync, folder: str, steps: int = PROFILED_STEPS) -> dict:
    """{"comm_share" (any replica's collective in flight), ...} or the reason there is none."""
    source = "tf.profiler trace (Collective* ops, any replica)"
    try:
        wall = _traced(lambda: tf.profiler.experimental.start(folder),
                       tf.profiler.experimental.stop, step, sync, steps)
        paths = sorted(glob.glob(os.path.join(folder, "**", "*.xplane.pb"), recursive=True))
        if not paths:
            return _no_share("the profiler wrote no trace", steps, source)
        space = _xplane_pb2().XSpace()
        with open(paths[-1], "rb") as f:
            space.ParseFromString(f.read())
    except Exception as exc:  # the share is a diagnostic: its failure never fails the cell
        return _no_share(f"profiler failed: {type(exc).__name__}: {exc}"[:200], steps, source)
    intervals, names = tf_intervals(space)
    if not intervals:
        return _no_share("no collective op in the trace", steps, source)
    return _result(intervals, wall, steps, names, source)
