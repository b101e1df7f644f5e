"""The capture half of a profile, inside the cell process: each side's steps under its
framework's profiler (torch.profiler, jax.profiler, the TensorFlow profiler), every step inside
the lab's `sample` range, written as a Chrome trace under the cell's trace folder.

`lab.cell.main` calls `capture` in the TRACE pass; everything that happens in the `lab` process
(launching the pass, hot tables, Nsight tools) is in lab.profiling.trace_pass.
"""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
from pathlib import Path

from lab.store import folders as store

PROFILED_STEPS = 7  # medians over 7 steps survive a preempted step; traces stay small
WARMUP_STEPS = 3  # the baseline's first call and allocator growth happen before the trace
WARMUP_SECONDS = 0.5  # CPU: the same steadiness test as the timed pass, shorter
GZIP_ABOVE_BYTES = 4 * 2**20  # larger traces are stored gzipped (Perfetto and HTA read both)
PROFILER_WARMUP_STEPS = 1  # torch.profiler's own start-up (CUPTI buffers) stays out of the trace
TRACES = "traces"  # the run folder's subfolder of per-cell traces


def capture(framework: str, device: str, sides: list, ranges, profile_dir: str,
            steps: int = PROFILED_STEPS, capture_mode: str = "trace") -> dict:
    """Trace each `(backend_name, measure.Side)` under its framework's profiler, every step
    inside the lab's `sample` range; returns {"steps", "traces": {backend: path}} with paths
    relative to `profile_dir`.

    `capture_mode="nvtx"`: no framework profiler, NVTX ranges only, the candidate side only:
    the pass an external profiler (ncu, nsys) wraps. Two CUPTI clients at once would collide,
    and one side keeps the eager and compiled kernels of a report apart.
    """
    out = Path(profile_dir)
    out.mkdir(parents=True, exist_ok=True)
    wait = _device_wait(framework, device)
    if capture_mode == "nvtx":
        sides = sides[-1:]
    traces = {}
    for name, side in sides:
        def one_step(i, side=side):
            with ranges.phase("sample", payload=i):
                wait(side.sync(side.step()))

        with ranges.phase("warmup"):
            _warm_up(side, device, wait)
        if capture_mode == "nvtx":
            for i in range(steps):
                one_step(i)
            continue
        side_dir = out / name
        side_dir.mkdir(parents=True, exist_ok=True)
        path = _CAPTURE[framework](one_step, steps, side_dir, device)
        traces[name] = str(path.relative_to(out))
    return {"steps": steps, "traces": traces, "capture_mode": capture_mode}


def _warm_up(side, device: str, wait) -> None:
    from lab.cell import measure

    if device == "cpu":  # the timed pass's steadiness test: traces of a transient mislead
        measure.warm_up(measure.HostTimer(), [side], WARMUP_STEPS, WARMUP_SECONDS,
                        max_seconds=5.0)
        return
    for _ in range(WARMUP_STEPS):
        wait(side.sync(side.step()))


def _device_wait(framework: str, device: str):
    """Torch sides return without waiting for CUDA; a trace needs each step finished inside
    its own range, so the tracing pass waits for the device (the timed pass never does)."""
    if framework == "torch" and device == "cuda":
        import torch

        return lambda _: torch.cuda.synchronize()
    return lambda _: None


def _torch_trace(one_step, steps: int, side_dir: Path, device: str) -> Path:
    import torch

    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    # A schedule makes torch.profiler mark each step `ProfilerStep#N` (around the lab's own
    # `lab::sample` range), which Holistic Trace Analysis's step-based analyses need.
    schedule = torch.profiler.schedule(wait=0, warmup=PROFILER_WARMUP_STEPS, active=steps,
                                       repeat=1)
    with torch.profiler.profile(activities=activities, schedule=schedule,
                                record_shapes=False) as prof:
        for i in range(PROFILER_WARMUP_STEPS + steps):
            one_step(max(i - PROFILER_WARMUP_STEPS, 0))
            prof.step()
    path = side_dir / "trace.json"
    prof.export_chrome_trace(str(path))
    doc = json.loads(path.read_text())
    doc.setdefault("distributedInfo", {"rank": 0})  # HTA keys traces by rank, one per folder
    return _write_trace(doc, path)


def _jax_trace(one_step, steps: int, side_dir: Path, device: str) -> Path:
    import jax.profiler

    with tempfile.TemporaryDirectory(dir=side_dir) as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for i in range(steps):
                one_step(i)
        found = sorted(Path(tmp).rglob("perfetto_trace.json.gz"))
        if not found:
            raise RuntimeError("jax.profiler wrote no perfetto_trace.json.gz")
        path = side_dir / "trace.json.gz"
        shutil.move(str(found[-1]), path)
    return path


def _tf_trace(one_step, steps: int, side_dir: Path, device: str) -> Path:
    import tensorflow as tf

    with tempfile.TemporaryDirectory(dir=side_dir) as tmp:
        tf.profiler.experimental.start(tmp)
        try:
            for i in range(steps):
                one_step(i)
        finally:
            tf.profiler.experimental.stop()
        xspaces = sorted(str(p) for p in Path(tmp).rglob("*.xplane.pb"))
        if not xspaces:
            raise RuntimeError("the TensorFlow profiler wrote no .xplane.pb")
        try:
            from xprof.convert import raw_to_tool_data
        except ImportError:  # keep the raw XSpace: TensorBoard's profile plugin opens it
            path = side_dir / "trace.xplane.pb"
            shutil.move(xspaces[-1], path)
            return path
        data, _ = raw_to_tool_data.xspace_to_tool_data(xspaces[-1:], "trace_viewer", {})
    path = side_dir / "trace.json.gz"
    store.atomic_write_bytes(path, gzip.compress(data if isinstance(data, bytes)
                                                 else data.encode()))
    return path


def _write_trace(doc: dict, path: Path) -> Path:
    """Write the trace, gzipped when large; its `traceName` is its path from the run folder
    (torch writes the absolute path it was exported to, which names this machine's folders)."""
    doc["traceName"] = run_relative(path)
    text = json.dumps(doc)
    if len(text) > GZIP_ABOVE_BYTES:
        path.unlink(missing_ok=True)
        path = path.with_name(path.name + ".gz")
        doc["traceName"] = run_relative(path)
        store.atomic_write_bytes(path, gzip.compress(json.dumps(doc).encode()))
    else:
        store.atomic_write_text(path, text)
    return path


def run_relative(path: Path) -> str:
    """`traces/<cell>/<backend>/<file>`: the part of `path` from the run folder down."""
    parts = Path(path).parts
    if TRACES not in parts:
        return Path(path).name
    last = len(parts) - 1 - parts[::-1].index(TRACES)
    return str(Path(*parts[last:]))


_CAPTURE = {"torch": _torch_trace, "jax": _jax_trace, "tf": _tf_trace}
