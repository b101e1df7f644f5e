"""Claims about data-parallel training: cells measured with `lab run --ranks N`
(lab.distributed, docs/distributed.md), judged as lab.judge.verdict judges any cell.

In a claim file (lab.judge.claims) such a claim names the ranks, and may name strategies:

    metric = "scaling"                 # the scaling efficiency: throughput at N ranks over
                                       # N x throughput at 1 (both measured in the same cell)
    ranks = 2                          # the cells `--ranks 2` made (backend+strategy@2)
    strategy = "fsdp"                  # optional: which data-parallel version of a backend;
                                       # each backend takes its own default (ddp, dp,
                                       # mirrored) unless the list names one of its own

With `versus`, a scaling claim compares two backends' efficiencies (backend's over versus's).
`ranks` also goes with the metrics that compare two backends' cells (throughput, time), which
then compare the data-parallel cells: "torch.compile still pays under DDP".

The efficiency's interval comes from the cell's two passes' samples (the 1-rank pass and the
N-rank pass ran back to back in the cell, each in its own processes): a bootstrap interval of
the ratio of their medians. The two passes are not interleaved, so a cell timed while other work
used the machine cannot decide (its ratio is shown). Two cells' efficiencies are compared with
the interval widened by the run-to-run spread, as two processes' speedups are.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from lab.core import stats

RANKED_METRICS = ("scaling", "throughput", "time")  # the metrics that may name `ranks`
_LABEL = re.compile(r"^(?P<backend>.+)\+(?P<strategy>[a-z-]+)@(?P<ranks>\d+)$")


def validate(table: dict) -> tuple[int | None, tuple[str, ...]]:
    """(ranks, strategies) of a claim table; KeyError(key, reason) on keys that cannot go
    together (the rest of the grammar is lab.judge.claims')."""
    from lab import compile as backends
    from lab.distributed import MODE, STRATEGIES
    from lab.distributed.plan import all_strategies

    metric = table.get("metric")
    if "ranks" not in table:
        if metric == "scaling":
            raise KeyError("metric", "metric 'scaling' needs ranks = N (the cells of lab run "
                                     "--ranks N)")
        if "strategy" in table:
            raise KeyError("strategy", "strategy goes with ranks = N")
        return None, ()
    ranks = table["ranks"]
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 2:
        raise KeyError("ranks", f"ranks must be an integer of at least 2, got {ranks!r}")
    if metric not in RANKED_METRICS:
        raise KeyError("ranks", f"ranks goes with metric {', '.join(RANKED_METRICS)}, not "
                                f"{metric!r}")
    names = [n for n in (table.get("backend"), table.get("versus")) if isinstance(n, str)]
    for key in ("backend", "versus"):
        name = table.get(key)
        if not isinstance(name, str):
            continue
        try:
            info = backends.resolve(name).info
        except backends.UnknownBackend:
            continue  # lab.judge.claims says why
        if info.name not in STRATEGIES:
            raise KeyError(key, f"{name!r} has no data-parallel version (--ranks: "
                                f"{', '.join(STRATEGIES)})")
    modes = table.get("mode", "infer")
    if (modes if isinstance(modes, list) else [modes]) != [MODE]:
        raise KeyError("mode", f"data parallelism splits a {MODE} step's batch: "
                               f"mode = \"{MODE}\"")
    strategies = table.get("strategy", [])
    strategies = [strategies] if isinstance(strategies, str) else strategies
    if not isinstance(strategies, list) or not all(isinstance(s, str) for s in strategies):
        raise KeyError("strategy", "strategy must be a name or a list of names")
    for name in strategies:
        if name not in all_strategies():
            raise KeyError("strategy", f"unknown strategy {name!r}; valid: "
                                       f"{', '.join(all_strategies())}")
        owners = [b for b in names if name in STRATEGIES.get(_backend_name(b), ())]
        if not owners:
            raise KeyError("strategy", f"strategy {name!r} is none of the claim's backends' "
                                       f"({', '.join(names)})")
    return ranks, tuple(strategies)


def _backend_name(text: str) -> str | None:
    """A claim's backend (NAME[:OPTION]) as the backend's name; None for an unknown one."""
    from lab import compile as backends

    try:
        return backends.resolve(text).info.name
    except backends.UnknownBackend:
        return None


def ranked_label(backend: str, ranks: int, strategies: tuple[str, ...]) -> str:
    """The label of a backend's data-parallel cell: `torch-eager+ddp@2`."""
    from lab import compile as backends
    from lab.distributed import STRATEGIES, label

    choice = backends.resolve(backend)
    own = STRATEGIES[choice.info.name]
    strategy = next((s for s in strategies if s in own), own[0])
    return label(choice.label, strategy, ranks)


def parse_label(text: str) -> tuple[str, str, int] | None:
    """(backend label, strategy, ranks) of a data-parallel cell's label, None for another."""
    found = _LABEL.match(text or "")
    if not found:
        return None
    return found["backend"], found["strategy"], int(found["ranks"])


@dataclass
class Efficiency:
    """A data-parallel cell's scaling efficiency with its interval, or why it has none."""

    value: float | None = None
    ci95: tuple[float, float] | None = None
    reason: str = ""
    detail: str = ""
    busy: bool = False


def efficiency(cell: dict) -> Efficiency:
    """Throughput at N over N x throughput at 1 from the cell's two passes' samples."""
    ranks = cell.get("ranks")
    single, multi = cell.get("single_rank_samples_s"), cell.get("samples_s")
    if not ranks or not single or not multi:
        return Efficiency(reason=f"{cell.get('backend')}: no 1-rank samples beside the "
                                 f"{ranks or 'N'}-rank ones (not a lab run --ranks cell)")
    own = [list(c) for c in cell.get("rank_cores") or []]
    cores = sorted({c for part in own for c in part})
    threads = cell.get("threads")
    what = (f"{ranks} ranks x {threads} thread{'s' if threads != 1 else ''}"
            + (f" on cores {','.join(map(str, cores))}" if cores else ""))
    if cores and len(cores) < ranks:  # the ranks took turns on shared cores
        return Efficiency(reason=f"{cell.get('backend')}: {what}: the ranks shared cores, "
                                 f"so the N-rank step measures no parallelism")
    r = stats.ratio_of_medians(single, multi)
    value, ci = r.ratio / ranks, (r.ci95[0] / ranks, r.ci95[1] / ranks)
    detail = (f"{what}; step {stats.median(single) * 1e3:.1f} ms at 1 rank, "
              f"{stats.median(multi) * 1e3:.1f} ms at {ranks}")
    return Efficiency(value, ci, detail=detail, busy=bool(cell.get("machine_busy")))


def ratio(claim, cell: dict, other: dict | None):
    """(ratio, 95% interval or None, reason, detail) of a scaling claim for one workload:
    the backend's efficiency, or its efficiency over versus's. The interval is None where the
    figure cannot decide (a busy machine); the ratio is None where there is none."""
    mine = efficiency(cell)
    if mine.value is None:
        return None, None, mine.reason, ""
    if not claim.versus:
        if mine.busy:
            return mine.value, None, (f"machine busy while {cell.get('backend')} ran: its "
                                      f"1-rank and {claim.ranks}-rank passes (one after the "
                                      f"other) are not compared"), mine.detail
        return mine.value, mine.ci95, ("1-rank and N-rank passes of one cell, back to back: "
                                       "interval from their samples"), mine.detail
    theirs = efficiency(other)
    if theirs.value is None:
        return None, None, theirs.reason, ""
    point, ci = stats.combine_log_intervals(
        (mine.value, mine.ci95), (1 / theirs.value, (1 / theirs.ci95[1], 1 / theirs.ci95[0])),
        extra_sd_log=math.sqrt(2) * stats.RUN_TO_RUN_SD_LOG)
    detail = (f"{cell.get('backend')} {mine.value:.2f} ({mine.detail}); "
              f"{other.get('backend')} {theirs.value:.2f} ({theirs.detail})")
    busy = [c.get("backend") for c, e in ((cell, mine), (other, theirs)) if e.busy]
    if busy:
        return point, None, (f"machine busy while {' and '.join(busy)} ran: efficiencies "
                             f"timed under other work are not compared"), detail
    return point, ci, ("two cells' efficiencies: interval widened by run-to-run "
                       "variance"), detail


def rests_on(claim, cells: list[dict], hardware: str, device: str) -> str:
    """What a data-parallel claim's verdict rests on: the cells, ranks, frameworks, machine."""
    measured = [c for c in cells if c and c.get("ranks")]
    if not measured:
        return (f"no data-parallel cell measured: lab run --mode train --ranks {claim.ranks} "
                f"(docs/distributed.md), then lab check --run RUN")
    frameworks = sorted({c.get("framework") for c in measured if c.get("framework")})
    strategies = sorted({c.get("strategy") for c in measured if c.get("strategy")})
    busy = sum(bool(c.get("machine_busy")) for c in measured)
    where = ("the ranks on cores of one CPU (gloo between processes; JAX's and TensorFlow's "
             "devices in one process), not on several GPUs or nodes" if device == "cpu"
             else f"one rank per GPU on {hardware}")
    return (f"rests on {len(measured)} data-parallel cell{'s' if len(measured) != 1 else ''} at "
            f"{claim.ranks} ranks ({', '.join(frameworks) or 'no framework'}; "
            f"{', '.join(strategies) or 'no strategy'}) on {hardware}"
            + (f", {busy} timed while the machine was busy" if busy else "")
            + f"; {where}")
