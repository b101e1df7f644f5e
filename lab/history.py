"""Change points in each benchmark's series over one machine's stored runs (`lab history`).

A run contributes one value per benchmark: the geometric mean of its per-process medians (the
median of its samples when it stored one process). The series, in run order, goes to
`lab.stats.change_points` (binary segmentation, permutation test); a change point is reported
with the run where the new level starts and the ratio of the levels either side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from lab import results, stats

MIN_SHIFT = 0.05  # smaller level shifts are within what a gate would call unchanged
ALPHA = 0.01
MIN_RUNS = 4


@dataclass(frozen=True)
class Change:
    run_id: str  # the first run of the new level
    ratio: float  # new level / old level (> 1: slower)
    runs_before: int
    runs_after: int


def load_series(root: Path) -> tuple[list[str], dict[str, list[tuple[str, float]]], int]:
    """(run ids in order, benchmark -> [(run id, seconds per step)], unreadable runs)."""
    runs, skipped = [], 0
    for path in sorted(Path(root).glob(f"*/{results.RESULTS}")):
        try:
            doc = results.load(path)
        except results.StoreError:
            skipped += 1
            continue
        runs.append((str(doc.get("datetime") or ""), path.parent.name, doc))
    runs.sort(key=lambda r: (r[0], r[1]))
    series: dict[str, list[tuple[str, float]]] = {}
    for _, run_id, doc in runs:
        for cell in results.cells(doc):
            if cell.get("status") == "ok" and cell.get("samples_s"):
                medians = results.process_medians(cell)
                value = math.exp(sum(math.log(m) for m in medians) / len(medians))
                series.setdefault(cell["name"], []).append((run_id, value))
    return [r[1] for r in runs], series, skipped


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
