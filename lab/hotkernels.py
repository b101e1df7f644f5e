"""The hot-kernel table, read from a Chrome trace (torch, JAX and TensorFlow alike).

One code path for every framework: complete events (`"ph": "X"`) that start inside one of the
lab's measured-step ranges (`lab::sample`) are grouped by name. An event's *self time* is its
duration minus the durations of the events nested directly inside it on the same thread, so
a wrapper (`aten::linear` around `aten::addmm`) is not counted twice. Self time per step and
the step's wall time are medians over the traced steps (one preempted step must not decide the
table); shares are of that median step. Events on several threads run at once, so shares can
sum past 100%.

What counts as a kernel (the "per step" count that shows what fusion bought):
- CUDA: device kernels (torch `cat == "kernel"`, or events on a `/device:GPU` process).
- CPU, torch: the outermost dispatched ops, i.e. `aten::*` ops and Inductor's generated C++
  kernels (`cpp_fused_*`, visible when Inductor is built with kernel profiling) that are not
  nested inside another such op. Eager runs every op of the model this way; a compiled graph
  runs its fused kernels plus the library calls (matmuls, attention) it kept.
- CPU, XLA (JAX, TensorFlow): XLA ops executed (events carrying an `hlo_op`).
- CPU, TensorFlow eager: ops executed eagerly (`EagerLocalExecute: <op>` events).
"""

from __future__ import annotations

import csv
import gzip
import json
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

STEP_RANGE = "lab::sample"
TF_EAGER_OP = "EagerLocalExecute: "
TOP = 15
KERNEL_UNITS = {
    "device": "device kernels per step",
    "torch-cpu": "dispatched ops per step (aten::* and generated C++ kernels, outermost)",
    "xla": "XLA ops executed per step",
    "tf-eager": "TensorFlow ops executed eagerly per step (EagerLocalExecute)",
    "none": "no kernels or ops recognised in this trace",
}


@dataclass
class HotRow:
    name: str
    kind: str  # "kernel" when it counts as a kernel (see the module doc), else "other"
    count_per_step: float  # calls in the traced steps / steps
    self_us_per_step: float  # median over the traced steps of the summed self time
    share_of_step: float  # self_us_per_step / median traced step wall time
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


def hot_table(events: list[dict], top: int = TOP) -> dict:
    """The table for one trace: rows, step count and time, and kernels per step."""
    device_pids = _device_pids(events)
    xs = _complete(events)
    steps = [e for e in xs if e["name"] == STEP_RANGE]
    if not steps:
        raise TraceError(f"no {STEP_RANGE} ranges in the trace (was it captured by the lab?)")
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in steps)
    durations = [b - a for a, b in windows]

    def step_of(e):
        for k, (a, b) in enumerate(windows):
            if a <= e["ts"] <= b:
                return k
        return None

    self_us, parent = _self_times(xs)
    is_device = [e.get("cat") == "kernel" or e.get("pid") in device_pids for e in xs]
    is_xla = ["hlo_op" in (e.get("args") or {}) for e in xs]
    is_op = [_is_torch_op(e) for e in xs]
    if any(is_device):
        unit, kernel = "device", is_device
    elif any(is_op):
        def outermost(i):
            p = parent[i]
            while p is not None:
                if is_op[p]:
                    return False
                p = parent[p]
            return True
        unit, kernel = "torch-cpu", [is_op[i] and outermost(i) for i in range(len(xs))]
    elif any(is_xla):
        unit, kernel = "xla", is_xla
    elif any(e["name"].startswith(TF_EAGER_OP) for e in xs):
        unit, kernel = "tf-eager", [e["name"].startswith(TF_EAGER_OP) for e in xs]
    else:
        unit, kernel = "none", [False] * len(xs)

    n = len(windows)
    groups: dict[str, dict] = {}
    kernels = 0
    for i, e in enumerate(xs):
        name = e["name"]
        k = step_of(e)
        if name.startswith("lab::") or name.startswith("end: ") or k is None:
            continue  # the lab's own ranges, and XLA's zero-length end markers
        g = groups.setdefault(name, {"count": 0, "self": [0.0] * n, "total": 0.0,
                                     "kernel": False})
        g["count"] += 1
        g["self"][k] += self_us[i]
        g["total"] += e["dur"]
        g["kernel"] |= kernel[i]
        kernels += kernel[i]
    # Medians over the traced steps: one preempted step on a busy machine would otherwise
    # decide the table.
    step_us = statistics.median(durations)
    rows = []
    for name, g in groups.items():
        self_step = statistics.median(g["self"])
        rows.append(HotRow(name, "kernel" if g["kernel"] else "other", g["count"] / n,
                           self_step, self_step / step_us if step_us > 0 else 0.0,
                           g["total"] / g["count"]))
    rows.sort(key=lambda r: r.self_us_per_step, reverse=True)
    return {"steps": n, "step_us": step_us, "kernels_per_step": kernels / n,
            "kernel_unit": KERNEL_UNITS[unit], "rows": [asdict(r) for r in rows[:top]],
            "distinct_events": len(rows)}


def table_from_trace(path: str | Path, top: int = TOP) -> dict:
    return hot_table(load_events(path), top)


def write(table: dict, folder: str | Path) -> dict:
    """`hot.json` (the whole table) and `hot.csv` (its rows) in `folder`; returns the paths."""
    folder = Path(folder)
    json_path, csv_path = folder / "hot.json", folder / "hot.csv"
    json_path.write_text(json.dumps(table, indent=1) + "\n")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(HotRow.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(table["rows"])
    return {"json": json_path, "csv": csv_path}
