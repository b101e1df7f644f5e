"""Change points in each benchmark's series over one machine's stored runs (`lab history`).

A run contributes one value per benchmark: the geometric mean of its per-process medians (the
median of its samples when it stored one process). Benchmarks are keyed as the gate keys them
(lab.store.identity), and a benchmark whose runs differ in a setting the gate refuses to mix
(threads, per-call latency, machine) has one series per setting, the change marked. The series, in
run order, goes to
`lab.core.stats.change_points` (binary segmentation, permutation test); a change point is reported
with the run where the new level starts and the ratio of the levels either side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from lab.core import stats
from lab.store import reader as results

MIN_SHIFT = 0.05  # smaller level shifts are within what a gate would call unchanged
ALPHA = 0.01
MIN_RUNS = 4


@dataclass(frozen=True)
class Change:
    run_id: str  # the first run of the new level
    ratio: float  # new level / old level (> 1: slower)
    runs_before: int
    runs_after: int


# what the gate refuses to mix, besides what the key names (device, precision): a series is
# split where one of these differs, and the change is marked (lab gate: settings_mismatch)
SETTINGS = ("threads", "latency", "machine")


@dataclass(frozen=True)
class SettingChange:
    run_id: str  # the first run measured with the new settings
    what: str  # e.g. "threads 1 -> 2"


@dataclass
class History:
    run_ids: list[str]  # every readable run, in order
    series: dict[str, list[tuple[str, float]]]  # series label -> [(run id, seconds per step)]
    benchmark: dict[str, str]  # series label -> benchmark key (lab.store.identity)
    setting_changes: dict[str, list[SettingChange]]  # benchmark key -> where settings changed
    skipped: int  # unreadable runs


def settings_of(cell: dict, doc: dict) -> tuple[tuple[str, object], ...]:
    """The cell's values of SETTINGS; its machine is its node's on a cluster, else the run's."""
    machine = cell.get("machine_id") or results.machine_id(doc)
    values = {"threads": cell.get("threads"), "latency": bool(cell.get("latency")),
              "machine": machine}
    return tuple((k, values[k]) for k in SETTINGS)


def split(points: dict[str, list[tuple[str, float, tuple]]]) -> History:
    """benchmark key -> [(run id, value, settings)] in run order -> one series per benchmark
    and settings (labelled `KEY {threads=1}` where its runs differ in a setting), and the runs
    where a setting changed. `lab history` and the HTML report's history plot both use it."""
    series, benchmark, marks = {}, {}, {}
    for name, found in points.items():
        groups = list(dict.fromkeys(settings for _, _, settings in found))
        varying = [i for i, key in enumerate(SETTINGS) if len({g[i][1] for g in groups}) > 1]
        for group in groups:
            label = name if len(groups) == 1 else \
                f"{name} {{{', '.join(f'{SETTINGS[i]}={group[i][1]}' for i in varying)}}}"
            series[label] = [(r, v) for r, v, s in found if s == group]
            benchmark[label] = name
        marks[name] = [
            SettingChange(run_id, ", ".join(f"{k} {old} -> {new}" for (k, old), (_, new)
                                            in zip(before, after, strict=False) if old != new))
            for (_, _, before), (run_id, _, after) in zip(found, found[1:], strict=False)
            if before != after]
    return History([], series, benchmark, marks, 0)


def load(root: Path) -> History:
    """Every benchmark's series over the runs under `root` (one machine's folder), keyed by the
    benchmark's key, so names older versions stored join today's, and split where a setting
    the gate refuses to mix changed: one line never joins runs of different thread counts."""
    runs, skipped = [], 0
    for path in sorted(Path(root).glob(f"*/{results.RESULTS}")):
        try:
            doc = results.load(path)
        except results.StoreError:
            skipped += 1
            continue
        runs.append((str(doc.get("datetime") or ""), path.parent.name, doc))
    runs.sort(key=lambda r: (r[0], r[1]))
    points: dict[str, list[tuple[str, float, tuple]]] = {}
    for _, run_id, doc in runs:
        for cell in results.cells(doc):
            if cell.get("status") == "ok" and cell.get("samples_s"):
                medians = results.process_medians(cell)
                value = math.exp(sum(math.log(m) for m in medians) / len(medians))
                points.setdefault(cell["name"], []).append((run_id, value, settings_of(cell, doc)))
    found = split(points)
    found.run_ids, found.skipped = [r[1] for r in runs], skipped
    return found


def load_series(root: Path) -> tuple[list[str], dict[str, list[tuple[str, float]]], int]:
    """(run ids in order, series label -> [(run id, seconds per step)], unreadable runs)."""
    found = load(root)
    return found.run_ids, found.series, found.skipped


def changes(points: list[tuple[str, float]]) -> list[Change] | None:
    """The change points of one series; None when it is too short to have any."""
    values = [v for _, v in points]
    if len(values) < MIN_RUNS:
        return None
    splits = stats.change_points(values, alpha=ALPHA, min_shift=MIN_SHIFT)
    bounds = [0, *splits, len(values)]
    out = []
    for i, k in enumerate(splits):
        before, after = values[bounds[i]:k], values[k:bounds[i + 2]]
        ratio = stats.summarize(after).median / stats.summarize(before).median
        out.append(Change(points[k][0], ratio, len(before), len(after)))
    return out
