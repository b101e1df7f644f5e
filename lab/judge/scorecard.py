"""A suite's scorecard: the four numbers PyTorch's Inductor dashboard publishes per suite
(pass rate, geometric-mean speedup, compile time, peak-memory compression ratio), from a
stored run's cells, per suite, size, mode, device, precision and backend; with graph breaks
and recompiles per model, and a bootstrap interval over models on the geomean (which models
a suite holds is a sample of what people run: the interval says how much the geomean rests on
the few that were drawn).

Pass rate: models whose cell is `ok` over models tried, every other status counted by name
(a model skipped for a stated reason was tried and did not pass). The geomean is over the
passing models only, as the dashboard's is: a failure has no speedup.
"""

from __future__ import annotations

import math
from collections import Counter

from lab.core import stats
from lab.workloads import suites

KEYS = ("suite", "size", "mode", "device", "precision", "backend")
OK = "ok"


def size_of(cell: dict) -> str:
    """A suite cell's size (lab.workloads.suites.SIZES): its shape key `tiny`."""
    return "tiny" if (cell.get("shape") or {}).get("tiny") else "real"


def _finite(values) -> list[float]:
    return [float(v) for v in values
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]


def _mean(values) -> float | None:
    values = _finite(values)
    return sum(values) / len(values) if values else None


def summarize(cells: list[dict]) -> list[dict]:
    """One row per (suite, size, mode, device, precision, backend) of the suite cells among
    `cells` (results.cells of a run); none when the run holds no suite model."""
    groups: dict[tuple, list[dict]] = {}
    for cell in cells:
        suite = suites.suite_of(cell.get("workload") or "")
        if suite is None:
            continue
        key = (suite, size_of(cell), cell.get("mode"), cell.get("device"),
               cell.get("precision"), cell.get("backend"))
        groups.setdefault(key, []).append(cell)
    return [_row(dict(zip(KEYS, key, strict=True)), group) for key, group in groups.items()]


def _row(row: dict, group: list[dict]) -> dict:
    statuses = Counter(str(c.get("status")) for c in group)
    passing = [c for c in group if c.get("status") == OK]
    compiled = any(c.get("baseline_backend") for c in group)
    speedups = {c["workload"]: float(c["speedup"]) for c in passing
                if _finite([c.get("speedup")])}
    # each model's own interval (over its samples), for the report's plot of the distribution
    intervals = {c["workload"]: [float(v) for v in c["speedup_ci95"]] for c in passing
                 if c["workload"] in speedups and len(_finite(c.get("speedup_ci95") or [])) == 2}
    row.update(models=len({c.get("workload") for c in group}), ok=len(passing),
               statuses=dict(sorted(statuses.items())),
               pass_rate=len(passing) / len(group) if group else None,
               failed_models={c["workload"]: str(c.get("status")) for c in group
                              if c.get("status") != OK},
               # timed while other work used the machine's cores: the table's warning, counted
               busy_models=sum(1 for c in group if c.get("machine_busy")))
    if not compiled:
        return row
    geo, interval = stats.geomean_ci(list(speedups.values()))
    row.update(
        speedups=speedups, speedups_ci95=intervals, speedup_models=len(speedups),
        speedup_geomean=geo, speedup_geomean_ci95=interval,
        faster_share=(sum(s >= 1.0 for s in speedups.values()) / len(speedups)
                      if speedups else None),
        compile_s_mean=_mean(c.get("compile_s_cold") for c in passing),
        compile_s_max=max(_finite(c.get("compile_s_cold") for c in passing), default=None))
    ratios = _finite((c.get("memory") or {}).get("ratio_eager_over_candidate") for c in passing)
    row.update(memory_compression_geomean=stats.geomean_ci(ratios)[0],
               memory_compression_models=len(ratios))
    breaks = [(c.get("diagnostics") or {}).get("graph_breaks") for c in group]
    recompiles = [(c.get("diagnostics") or {}).get("recompiles") for c in group]
    row.update(graph_breaks_per_model=_mean(breaks), recompiles_per_model=_mean(recompiles),
               models_with_graph_breaks=sum(1 for b in _finite(breaks) if b > 0))
    return row


def _x(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _s(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _n(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _statuses(row: dict) -> str:
    others = {k: v for k, v in row["statuses"].items() if k != OK}
    said = [f"{v} {k}" for k, v in others.items()]
    if row.get("busy_models"):
        said.append(f"({row['busy_models']} timed on a busy machine)")
    return ", ".join(said) or "-"


COLUMNS = ("suite", "mode", "backend", "pass rate", "geomean speedup [95% CI over models]",
           ">= 1x", "compile s mean / max", "memory compression", "graph breaks / model",
           "recompiles / model", "not ok")


def cells_of(row: dict) -> list[str]:
    """A row's columns as text (COLUMNS), for the terminal table and the markdown."""
    suite = f"{row['suite']} ({row['size']}, {row['device']}, {row['precision']})"
    rate = f"{row['ok']}/{row['models']} ({100 * row['pass_rate']:.0f}%)" \
        if row.get("pass_rate") is not None else "-"
    if "speedup_geomean" not in row:
        return [suite, row["mode"], row["backend"], rate, "-", "-", "-", "-", "-", "-",
                _statuses(row)]
    interval = row["speedup_geomean_ci95"]
    geo = "-" if row["speedup_geomean"] is None else (
        f"{row['speedup_geomean']:.2f}x [{interval[0]:.2f}, {interval[1]:.2f}] "
        f"({row['speedup_models']} models)")
    faster = "-" if row["faster_share"] is None else f"{100 * row['faster_share']:.0f}%"
    memory = _x(row["memory_compression_geomean"])
    if row["memory_compression_models"]:
        memory += f" ({row['memory_compression_models']} models)"
    return [suite, row["mode"], row["backend"], rate, geo, faster,
            f"{_s(row['compile_s_mean'])} / {_s(row['compile_s_max'])}", memory,
            _n(row["graph_breaks_per_model"]), _n(row["recompiles_per_model"]),
            _statuses(row)]


def render(rows: list[dict], console) -> None:
    """The scorecard under a run's table (nothing when the run holds no suite model)."""
    if not rows:
        return
    from rich.table import Table

    grid = Table(title="suite summary (as PyTorch's compiler dashboard: pass rate, geomean "
                       "speedup, compile time, memory compression)")
    for column in COLUMNS:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*cells_of(row))
    console.print(grid)


def markdown(rows: list[dict]) -> str:
    if not rows:
        return ""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells_of(r)) + " |"
              for r in rows]
    return "### suite summary\n\n" + "\n".join(lines)
