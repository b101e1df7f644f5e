"""The hot-kernel table, read from a Chrome trace (torch, JAX and TensorFlow alike).

A trace holds two timelines that must not be mixed: the host's (Python, framework ops, the
CUDA runtime and driver calls that launch work) and, on a GPU, the device's (kernels, copies,
memsets on streams). The table keeps them in two sections, each with its own denominator:

- **device** rows: device activity per measured step, as a share of the step's *device time*
  (the union of the intervals in which the step's device activity ran, so idle gaps between
  kernels do not count and overlapping streams are not counted twice);
- **host** rows: host events per step, as a share of the step's *host wall time* (the
  `lab::sample` range). CUDA runtime/driver calls are kind `runtime`, and the ones that block
  the host until the device is done are kind `sync`.

Steps are the host's `lab::sample` ranges. Device work is asynchronous: a kernel runs after
its launch, often after the host range has closed, and the profiler also copies each host
range onto the device timeline (`gpu_user_annotation`). A device event therefore belongs to
the step of the runtime call that launched it (their `correlation` ids match); failing that, to
the device-side copy of the step's range; failing that, to the host range its start falls in
(true in the lab's tracing pass, which waits for the device at the end of every step).

An event's *self time* is its duration minus the durations of the events nested directly
inside it on the same thread, so a wrapper (`aten::linear` around `aten::addmm`) is not
counted twice. Self time per step and the step's time are medians over the traced steps (one
preempted step must not decide the table). Host events on several threads run at once, so
host shares can sum past 100%.

What counts as a kernel (the "per step" count that shows what fusion bought):
- CUDA: device kernels (torch `cat == "kernel"`, or events on a `/device:GPU` process that are
  not copies or memsets).
- CPU, torch: the outermost dispatched ops, i.e. `aten::*` ops and Inductor's generated C++
  kernels (`cpp_fused_*`, visible when Inductor is built with kernel profiling) that are not
  nested inside another such op. Eager runs every op of the model this way; a compiled graph
  runs its fused kernels plus the library calls (matmuls, attention) it kept.
- CPU, XLA (JAX, TensorFlow): XLA ops executed (events carrying an `hlo_op`).
- CPU, TensorFlow eager: ops executed eagerly (`EagerLocalExecute: <op>` events).
"""

from __future__ import annotations

import bisect
import csv
import gzip
import io
import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from lab.core import stats
from lab.store import folders as store

STEP_RANGE = "lab::sample"
TF_EAGER_OP = "EagerLocalExecute: "
TOP = 15
DEVICE_CATS = {"kernel": "kernel", "gpu_memcpy": "memcpy", "gpu_memset": "memset"}
DEVICE_ANNOTATION_CAT = "gpu_user_annotation"  # torch's copy of a host range on a stream
RUNTIME_CATS = ("cuda_runtime", "cuda_driver")
# Profiler bookkeeping, not the workload: torch.profiler's own step ranges and XLA's
# zero-length end markers.
SKIPPED_PREFIXES = ("lab::", "ProfilerStep#", "end: ")
KERNEL_UNITS = {
    "device": "device kernels per step",
    "torch-cpu": "dispatched ops per step (aten::* and generated C++ kernels, outermost)",
    "xla": "XLA ops executed per step",
    "tf-eager": "TensorFlow ops executed eagerly per step (EagerLocalExecute)",
    "none": "no kernels or ops recognised in this trace",
}
SHARE_OF = {"device": "the step's device time (union of its device activity)",
            "host": "the step's host wall time (its lab::sample range)"}


@dataclass
class HotRow:
    section: str  # "device" or "host": which timeline, and so which time `share` is of
    name: str
    # device: kernel/memcpy/memset; host: kernel (an op, nested or not)/runtime/sync/other
    kind: str
    count_per_step: float  # calls attributed to the traced steps / steps
    self_us_per_step: float  # median over the traced steps of the summed self time
    share: float  # self_us_per_step / the median step's time in this row's section
    mean_us: float  # mean inclusive duration of one call


class TraceError(ValueError):
    """A trace the table cannot be made from; the message is one line."""


def load_events(path: str | Path) -> list[dict]:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as f:
            doc = json.load(f)
    except (OSError, json.JSONDecodeError, EOFError) as exc:
        raise TraceError(f"{path}: not a readable Chrome trace ({exc})") from None
    events = doc.get("traceEvents") if isinstance(doc, dict) else doc
    if not isinstance(events, list):
        raise TraceError(f"{path}: no traceEvents list")
    return events


def _complete(events: list[dict]) -> list[dict]:
    out = []
    for e in events:
        if e.get("ph") == "X" and isinstance(e.get("ts"), (int, float)) and "name" in e:
            out.append({**e, "dur": float(e.get("dur") or 0.0), "ts": float(e["ts"])})
    return out


def _device_pids(events: list[dict]) -> set:
    return {e.get("pid") for e in events if e.get("ph") == "M" and e.get("name") == "process_name"
            and "/device:GPU" in str((e.get("args") or {}).get("name", ""))}


def _correlation(e: dict):
    args = e.get("args") or {}
    return args.get("correlation", args.get("correlation_id"))


def _self_times(events: list[dict]) -> tuple[dict[int, float], dict[int, int | None]]:
    """Self time of each event and the index of its enclosing event (same pid and tid)."""
    self_us, parent = {}, {}
    by_thread = defaultdict(list)
    for i, e in enumerate(events):
        by_thread[(e.get("pid"), e.get("tid"))].append(i)
    eps = 1e-3  # exported timestamps are rounded to the ns; a child may overhang by that
    for indices in by_thread.values():
        indices.sort(key=lambda i: (events[i]["ts"], -events[i]["dur"]))
        stack: list[int] = []
        for i in indices:
            e = events[i]
            while stack and events[stack[-1]]["ts"] + events[stack[-1]]["dur"] + eps < \
                    e["ts"] + e["dur"]:
                stack.pop()
            parent[i] = stack[-1] if stack else None
            self_us[i] = e["dur"]
            if stack:
                self_us[stack[-1]] -= e["dur"]
            stack.append(i)
    return {i: max(v, 0.0) for i, v in self_us.items()}, parent


def _is_torch_op(e: dict) -> bool:
    name = e["name"]
    return e.get("cat") == "cpu_op" and (name.startswith("aten::") or "cpp_fused" in name)


class _Windows:
    """Sorted, non-overlapping [start, end] ranges; `find(ts)` is the index containing ts."""

    def __init__(self, ranges: list[tuple[float, float]]):
        self.ranges = sorted(ranges)
        self.starts = [a for a, _ in self.ranges]

    def find(self, ts: float) -> int | None:
        k = bisect.bisect_right(self.starts, ts) - 1
        if k >= 0 and ts <= self.ranges[k][1]:
            return k
        return None


def _union_us(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by the intervals: device time with idle gaps and overlaps out."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def _host_kernel_flags(host: list[dict], parent: dict[int, int | None]
                       ) -> tuple[str, list[bool], list[bool]]:
    """Which host events are kernels when there is no device timeline (see module doc), and
    which of them the per-step count counts: only the outermost, so an op nested in another
    (eager's `aten::addmm` inside `aten::linear`) is not counted twice. Its kind is `kernel`
    all the same, nested or not, so one op reads alike in eager and compiled tables."""
    is_op = [_is_torch_op(e) for e in host]
    if any(is_op):
        def outermost(i):
            p = parent[i]
            while p is not None:
                if is_op[p]:
                    return False
                p = parent[p]
            return True
        return "torch-cpu", is_op, [is_op[i] and outermost(i) for i in range(len(host))]
    is_xla = ["hlo_op" in (e.get("args") or {}) for e in host]
    if any(is_xla):
        return "xla", is_xla, is_xla
    is_tf = [e["name"].startswith(TF_EAGER_OP) for e in host]
    if any(is_tf):
        return "tf-eager", is_tf, is_tf
    return "none", [False] * len(host), [False] * len(host)


def _host_kind(e: dict, kernel: bool) -> str:
    if kernel:
        return "kernel"
    if e.get("cat") in RUNTIME_CATS:
        return "sync" if "Synchronize" in e["name"] else "runtime"
    return "other"


def _device_step(e: dict, launch_step: dict, device_windows: _Windows,
                 device_to_host: list[int | None], host_windows: _Windows) -> tuple[int | None,
                                                                                   str]:
    """The step a device event belongs to, and how that was decided."""
    corr = _correlation(e)
    if corr is not None and corr in launch_step:
        return launch_step[corr], "correlation"
    k = device_windows.find(e["ts"])
    if k is not None and device_to_host[k] is not None:
        return device_to_host[k], "device ranges"
    return host_windows.find(e["ts"]), "host ranges"


def _rows(groups: dict, n: int, step_time_us: float, section: str) -> list[HotRow]:
    rows = []
    for name, g in groups.items():
        self_step = stats.median(g["self"])
        rows.append(HotRow(section, name, g["kind"], g["count"] / n, self_step,
                           self_step / step_time_us if step_time_us > 0 else 0.0,
                           g["total"] / g["count"]))
    rows.sort(key=lambda r: r.self_us_per_step, reverse=True)
    return rows


def _add(groups: dict, e: dict, step: int, self_us: float, kind: str, n: int) -> None:
    g = groups.setdefault(e["name"], {"count": 0, "self": [0.0] * n, "total": 0.0,
                                      "kind": kind})
    g["count"] += 1
    g["self"][step] += self_us
    g["total"] += e["dur"]
    if kind == "kernel":  # a name counted once as a kernel stays one (CPU ops nest variously)
        g["kind"] = "kernel"


def hot_table(events: list[dict], top: int = TOP) -> dict:
    """The table for one trace: device and host rows, step count and times, kernels per step."""
    device_pids = _device_pids(events)
    xs = _complete(events)
    def on_device(e):
        return (e.get("cat") in DEVICE_CATS or e.get("cat") == DEVICE_ANNOTATION_CAT
                or e.get("pid") in device_pids)

    host = [e for e in xs if not on_device(e)]
    device = [e for e in xs if on_device(e)]

    host_steps = sorted((e for e in host if e["name"] == STEP_RANGE), key=lambda e: e["ts"])
    if not host_steps:
        raise TraceError(f"no {STEP_RANGE} ranges in the trace (was it captured by the lab?)")
    n = len(host_steps)
    host_windows = _Windows([(e["ts"], e["ts"] + e["dur"]) for e in host_steps])
    step_us = stats.median(b - a for a, b in host_windows.ranges)

    # ---- host section
    self_us, parent = _self_times(host)
    has_device = any(e.get("cat") != DEVICE_ANNOTATION_CAT for e in device)
    if has_device:  # host ops only launch the work there; the device's kernels are counted
        unit, kernel, counted = "device", [False] * len(host), [False] * len(host)
    else:
        unit, kernel, counted = _host_kernel_flags(host, parent)
    host_groups: dict[str, dict] = {}
    host_kernels = 0
    launch_step: dict = {}  # correlation id of a runtime call -> its step
    for i, e in enumerate(host):
        k = host_windows.find(e["ts"])
        if k is None:
            continue
        if e.get("cat") in RUNTIME_CATS and _correlation(e) is not None:
            launch_step[_correlation(e)] = k
        if e["name"].startswith(SKIPPED_PREFIXES):
            continue
        _add(host_groups, e, k, self_us[i], _host_kind(e, kernel[i]), n)
        host_kernels += counted[i]

    # ---- device section
    annotations = sorted((e for e in device if e["name"] == STEP_RANGE), key=lambda e: e["ts"])
    device_windows = _Windows([(e["ts"], e["ts"] + e["dur"]) for e in annotations])
    device_to_host = _device_ranges_to_steps(annotations, host_steps)
    device_groups: dict[str, dict] = {}
    busy: list[list[tuple[float, float]]] = [[] for _ in range(n)]
    attribution: dict[str, int] = defaultdict(int)
    device_kernels = 0
    for e in device:
        if e.get("cat") == DEVICE_ANNOTATION_CAT or e["name"].startswith(SKIPPED_PREFIXES):
            continue
        k, how = _device_step(e, launch_step, device_windows, device_to_host, host_windows)
        if k is None:
            continue
        attribution[how] += 1
        kind = DEVICE_CATS.get(e.get("cat"), "kernel")
        # kernels on one stream never nest, so a device event's self time is its duration
        _add(device_groups, e, k, e["dur"], kind, n)
        busy[k].append((e["ts"], e["ts"] + e["dur"]))
        device_kernels += kind == "kernel"

    device_us = stats.median(_union_us(b) for b in busy) if device_groups else None
    rows = (_rows(device_groups, n, device_us or 0.0, "device")[:top]
            + _rows(host_groups, n, step_us, "host")[:top])
    kernels = device_kernels if has_device else host_kernels
    return {"steps": n, "step_us": step_us, "device_us": device_us,
            "kernels_per_step": kernels / n, "kernel_unit": KERNEL_UNITS[unit],
            "share_of": {s: SHARE_OF[s] for s in ("device", "host")
                         if s == "host" or device_groups},
            "device_attribution": dict(attribution),
            "rows": [asdict(r) for r in rows],
            "distinct_events": len(device_groups) + len(host_groups)}


def _device_ranges_to_steps(annotations: list[dict], host_steps: list[dict]) -> list[int | None]:
    """The host step of each device-side copy of a `lab::sample` range: the host range with
    the same `External id` (torch writes it on both), else the one at the same position."""
    ext_to_step = {(e.get("args") or {}).get("External id"): k for k, e in enumerate(host_steps)}
    out: list[int | None] = []
    for k, annotation in enumerate(annotations):  # sorted by start, as the windows are
        ext = (annotation.get("args") or {}).get("External id")
        if ext is not None and ext in ext_to_step:
            out.append(ext_to_step[ext])
        else:
            out.append(k if k < len(host_steps) else None)
    return out


def table_from_trace(path: str | Path, top: int = TOP) -> dict:
    return hot_table(load_events(path), top)


def rows_of(table: dict, section: str) -> list[dict]:
    return [r for r in table["rows"] if r["section"] == section]


def write(table: dict, folder: str | Path) -> dict:
    """`hot.json` (the whole table) and `hot.csv` (its rows) in `folder`; returns the paths."""
    folder = Path(folder)
    json_path, csv_path = folder / "hot.json", folder / "hot.csv"
    store.atomic_write_text(json_path, json.dumps(table, indent=1) + "\n")
    rows = io.StringIO(newline="")
    writer = csv.DictWriter(rows, fieldnames=list(HotRow.__dataclass_fields__))
    writer.writeheader()
    writer.writerows(table["rows"])
    store.atomic_write_text(csv_path, rows.getvalue())  # never half a table on disk
    return {"json": json_path, "csv": csv_path}
