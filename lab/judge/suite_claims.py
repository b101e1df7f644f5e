"""Claims about a suite's distribution rather than a cell: "torch.compile is 43% faster on
average" (a geometric mean over the suite's models), "93% of models work" (a pass rate),
"up to 2x in many scenarios" (the share of models at or above a speedup).

In a claim file (lab.judge.claims) a suite claim names `suite = "hf"` in place of `workload` (and
optionally `size = "real" | "tiny"`), and one of:

    aggregate = "geomean"              # metric speedup: the geomean over the passing models,
                                       # with a bootstrap interval over models
    aggregate = "share", at = 1.5      # metric speedup: the fraction of the models tried
                                       # whose speedup is at least `at` (a failed model counts
                                       # as not reaching it), Clopper-Pearson interval
    metric = "pass_rate"               # the fraction of the models tried that are `ok`,
                                       # Clopper-Pearson interval

`value`/`range` of a share or pass rate are fractions in (0, 1]. The interval is over models:
how far the figure moves with which models a suite happens to hold. Nothing here decides a
verdict: lab.judge.verdict judges the interval against the claim as for a cell.

Sizes: a claim is about one size (`size`, default `real`: the published models), and is judged
on the cells of that size only. A `tiny` model (two layers of width 64) says whether a model
compiles, not what the compiler buys on the published one, so a claim about real models is
never decided on tiny cells: it is inconclusive, its reason giving the tiny figure and saying
why. One run may hold both sizes of a model (`--resume` of a tiny run with `--size real`):
`index` keeps both, keyed by size, where the run's other index keeps one.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.core import precision, stats
from lab.judge import scorecard

SUITE_AGGREGATES = ("geomean", "share")
SUITE_METRICS = ("pass_rate",)
SUITE_KEYS = ("suite", "size", "at")


def expand(table: dict) -> dict:
    """A suite claim's table with `workload` (every model of the suite) and the size's shape
    key filled in, so the rest of the grammar, and the cells to run, are a cell claim's.
    ValueError(key, reason) on a suite claim that cannot be judged."""
    from lab.workloads import suites

    if "suite" not in table:
        for key in ("size", "at"):
            if key in table:
                raise KeyError(key, f"{key!r} goes with suite = ...")
        if table.get("aggregate") in SUITE_AGGREGATES or table.get("metric") in SUITE_METRICS:
            key = "aggregate" if table.get("aggregate") in SUITE_AGGREGATES else "metric"
            raise KeyError(key, f"{key} {table[key]!r} is judged over a suite: give suite = "
                                f"\"hf\"")
        return table
    if "workload" in table:
        raise KeyError("workload", "give suite or workload, not both")
    try:
        names = suites.names(table["suite"]) if isinstance(table["suite"], str) else None
    except suites.UnknownSuite as exc:
        raise KeyError("suite", str(exc)) from None
    if names is None:
        raise KeyError("suite", "suite must be a suite's name, e.g. \"hf\"")
    out = {k: v for k, v in table.items() if k not in SUITE_KEYS}
    out["workload"] = names
    size = table.get("size", "real")
    try:
        out["shape"] = {**table.get("shape", {}), **suites.size_shape(size)}
    except suites.UnknownSuite as exc:
        raise KeyError("size", str(exc)) from None
    if not out["shape"].get("tiny"):
        out["shape"].pop("tiny")  # 0 is the default and not a positive shape value
    aggregate, metric = table.get("aggregate"), table.get("metric")
    if metric in SUITE_METRICS:
        out["metric"] = "speedup"  # the cells a pass rate counts are the backend's
        if aggregate is not None:
            raise KeyError("aggregate", "a pass rate is over the suite: no aggregate")
    elif aggregate not in SUITE_AGGREGATES:
        raise KeyError("aggregate", f"a suite claim's aggregate is one of "
                                    f"{', '.join(SUITE_AGGREGATES)} (or metric = \"pass_rate\")")
    if aggregate == "share":
        at = table.get("at")
        if isinstance(at, bool) or not isinstance(at, int | float) or not at > 0:
            raise KeyError("at", "aggregate share needs at = <speedup>, a positive number")
    elif "at" in table:
        raise KeyError("at", "at goes with aggregate = \"share\"")
    out.pop("aggregate", None)
    return out


def check_fraction(claim_low: float, claim_high: float, what: str) -> None:
    if claim_high != float("inf") and claim_high > 1.0 + 1e-12 or claim_low > 1.0:
        raise KeyError("value", f"{what} is a fraction of models: value in (0, 1]")


@dataclass
class SuiteFigure:
    """A suite claim's figure: the value, its 95% interval over models, and what it rests on."""

    value: float | None
    ci95: tuple[float, float] | None
    models: int  # models tried
    counted: int  # models the figure is over (passing ones for a geomean)
    detail: str


def _clopper_pearson(k: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return float(ci.low), float(ci.high)


def figure(kind: str, at: float | None, cells: dict[str, dict | None]) -> SuiteFigure:
    """`kind` (geomean, share, pass_rate) over `cells`: model name -> its stored cell (None:
    not measured, which counts as tried and not passing only when measured cells exist)."""
    tried = {m: c for m, c in cells.items() if c is not None}
    n = len(tried)
    if not n:
        return SuiteFigure(None, None, 0, 0, "no model of the suite measured")
    ok = {m: c for m, c in tried.items() if c.get("status") == "ok"}
    not_ok = sorted(f"{m} {c.get('status')}" for m, c in tried.items() if m not in ok)
    missing = len(cells) - n
    tail = (f"; not ok: {', '.join(not_ok[:5])}{' ...' if len(not_ok) > 5 else ''}"
            if not_ok else "") + (f"; {missing} not measured" if missing else "")
    if kind == "pass_rate":
        return SuiteFigure(len(ok) / n, _clopper_pearson(len(ok), n), n, n,
                           f"{len(ok)} of {n} models ok{tail}")
    speedups = {m: float(c["speedup"]) for m, c in ok.items()
                if isinstance(c.get("speedup"), int | float)}
    if kind == "share":
        k = sum(s >= at for s in speedups.values())
        return SuiteFigure(k / n, _clopper_pearson(k, n), n, n,
                           f"{k} of {n} models at or above {at:g}x{tail}")
    geo, ci = stats.geomean_ci(list(speedups.values()))
    return SuiteFigure(geo, ci, n, len(speedups),
                       f"geomean over {len(speedups)} passing of {n} models{tail}")


# ---------------------------------------------------------------- sizes


def claim_size(claim) -> str:
    """The size a suite claim is about: its shape key `tiny` (expand sets it from `size`)."""
    return "tiny" if (claim.shape or {}).get("tiny") else "real"


SizedKey = tuple[str, str, str, str, str]  # workload, backend, mode, precision, size


def index(cells: list[dict], device: str) -> dict[SizedKey, dict]:
    """(workload, backend, mode, precision, size) -> cell, for the suite cells of a run on
    `device` (lab.store.reader.cells): both sizes of a model, where lab.judge.verdict.index,
    keyed without the size, keeps the one stored last."""
    from lab.workloads import suites

    found = {}
    for cell in cells:
        if cell.get("device") == device and suites.suite_of(cell.get("workload") or ""):
            found[(cell.get("workload"), cell.get("backend"), cell.get("mode"),
                   precision.of_cell(cell), scorecard.size_of(cell))] = cell
    return found


def by_size(stored: dict, suite_cells: dict | None = None) -> dict[SizedKey, dict]:
    """`stored` ((workload, backend, mode, precision) -> cell: a run's cells and those run for
    the claims) keyed by size too, then `suite_cells` (index of the run) over it, so a run
    holding both sizes of a model gives both."""
    from lab.workloads import suites

    sized = {}
    for key, cell in stored.items():
        if "shape" in cell:
            sized[(*key, scorecard.size_of(cell))] = cell
        else:  # a cell that could not run at all (skipped: no such framework): at every size
            for size in suites.SIZES:
                sized.setdefault((*key, size), cell)
    sized.update(suite_cells or {})
    return sized


def sizes_held(sized: dict, workloads, backend: str, mode: str, wanted: str) -> list[str]:
    """The sizes of which `sized` holds at least one cell of these models, real first."""
    from lab.workloads import suites

    names = set(workloads)
    held = {key[4] for key in sized if key[0] in names and key[1:4] == (backend, mode, wanted)}
    return [s for s in suites.SIZES if s in held]


def cells_of_size(sized: dict, workloads, backend: str, mode: str, wanted: str,
                  size: str) -> dict[str, dict | None]:
    return {w: sized.get((w, backend, mode, wanted, size)) for w in workloads}


def describe(fig: SuiteFigure, kind: str) -> str:
    """A figure as the verdict lines print it: `1.11x [0.82, 1.50], geomean over ...` or
    `60% [26-88%], 3 of 5 models ...`."""
    if fig.value is None:
        return fig.detail
    lo, hi = fig.ci95 if fig.ci95 and None not in fig.ci95 else (None, None)
    if kind in ("share", "pass_rate"):
        interval = f" [{100 * lo:.0f}-{100 * hi:.0f}%]" if lo is not None else ""
        return f"{100 * fig.value:.0f}%{interval}, {fig.detail}"
    interval = f" [{lo:.2f}, {hi:.2f}]" if lo is not None else ""
    return f"{fig.value:.2f}x{interval}, {fig.detail}"


TINY_NOTE = ("tiny models (two layers of width 64: whether each compiles and runs, not what "
             "the compiler buys on the published models)")


def other_size_reason(size: str, held: str, fig: SuiteFigure, kind: str, suite: str) -> str:
    """Why a claim about `size` is not decided on the run's `held`-size models."""
    what = TINY_NOTE if held == "tiny" else f"{held} models"
    return (f"not judged on the run's {what}, which give {describe(fig, kind)}; the claim is "
            f"about {size} models: run `lab run --suite {suite} --size {size}` and check "
            f"that run")
