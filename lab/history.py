"""`lab history`: change points in each benchmark's series over one machine's stored runs.

A run contributes one value per benchmark: the geometric mean of its per-process medians (the
median of its samples when it stored one process). The series, in run order, goes to
`lab.stats.change_points` (binary segmentation, permutation test); a change point is printed
with the run where the new level starts and the ratio of the levels either side.
"""

from __future__ import annotations

import math
from pathlib import Path

from lab import stats, store
from lab.cli import UsageError

MIN_SHIFT = 0.05  # smaller level shifts are within what a gate would call unchanged
ALPHA = 0.01


def load_series(root: Path) -> tuple[list[str], dict[str, list[tuple[str, float]]], int]:
    """(run ids in order, benchmark -> [(run id, seconds per step)], unreadable runs)."""
    from lab.verdict import cells_of, process_medians

    runs, skipped = [], 0
    for path in sorted(root.glob(f"*/{store.RESULTS}")):
        try:
            doc = store.load_results(path)
        except store.StoreError:
            skipped += 1
            continue
        runs.append((str(doc.get("datetime") or ""), path.parent.name, doc))
    runs.sort(key=lambda r: (r[0], r[1]))
    series: dict[str, list[tuple[str, float]]] = {}
    for _, run_id, doc in runs:
        for name, cell in cells_of(doc).items():
            if cell.get("status") == "ok" and cell.get("samples_s"):
                medians = process_medians(cell)
                value = math.exp(sum(math.log(m) for m in medians) / len(medians))
                series.setdefault(name, []).append((run_id, value))
    return [r[1] for r in runs], series, skipped


def cmd_history(args) -> int:
    out = Path(args.out)
    machine = args.machine or store.machine_id()
    root = out / machine
    if not root.is_dir():
        known = sorted(p.name for p in out.glob("*") if p.is_dir()) if out.is_dir() else []
        raise UsageError(f"no stored runs for machine {machine!r} under {out}"
                         + (f" (machines there: {', '.join(known)})" if known else ""))
    run_ids, series, skipped = load_series(root)
    if args.benchmark:
        if args.benchmark not in series:
            raise UsageError(f"no benchmark {args.benchmark!r} in the runs of {machine}")
        series = {args.benchmark: series[args.benchmark]}
    print(f"{machine}: {len(run_ids)} runs" + (f" ({skipped} unreadable, skipped)"
                                                 if skipped else ""))
    for name, points in sorted(series.items()):
        values = [v for _, v in points]
        if len(values) < 4:
            print(f"  {name}: {len(values)} runs (needs 4 for a change point)")
            continue
        splits = stats.change_points(values, alpha=ALPHA, min_shift=MIN_SHIFT)
        if not splits:
            print(f"  {name}: {len(values)} runs, no change point")
            continue
        bounds = [0, *splits, len(values)]
        for i, k in enumerate(splits):
            before = values[bounds[i]:k]
            after = values[k:bounds[i + 2]]
            ratio = stats.summarize(after).median / stats.summarize(before).median
            print(f"  {name}: change at run {points[k][0]}: {ratio:.3f}x "
                  f"({'slower' if ratio > 1 else 'faster'}; {len(before)} runs before, "
                  f"{len(after)} after)")
    return 0
