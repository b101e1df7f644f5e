"""Which cells `--ranks N` makes: each train cell of a backend with a data-parallel version
becomes one cell per strategy, named `backend+strategy@N`, with the threads split between
the ranks; the rest are skipped with the reason. Refuses (UsageError) what cannot be measured
fairly: more ranks x threads than cores, a global batch the ranks cannot split evenly."""

from __future__ import annotations

from dataclasses import dataclass

from lab.compile import BackendChoice
from lab.core.errors import UsageError
from lab.distributed import MODE, STRATEGIES, label


@dataclass(frozen=True)
class RankedChoice(BackendChoice):
    """A backend choice run data parallel; its label names the strategy and the ranks, so the
    cell's benchmark name differs from the same backend's single-process cell."""

    strategy: str = ""
    ranks: int = 1

    @property
    def label(self) -> str:
        return label(BackendChoice(self.info, self.option).label, self.strategy, self.ranks)


def all_strategies() -> tuple[str, ...]:
    return tuple(dict.fromkeys(s for names in STRATEGIES.values() for s in names))


def check(ranks: int, strategies: list[str] | None, threads: int | None, cores: int) -> int:
    """The threads per rank; UsageError for a rank count, strategy or thread count that
    cannot run here."""
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 2:
        raise UsageError(f"--ranks {ranks}: a data-parallel cell needs at least 2 ranks "
                         f"(it measures the 1-rank step itself, for the scaling efficiency)")
    for name in strategies or []:
        if name not in all_strategies():
            raise UsageError(f"unknown strategy {name!r}; valid: {', '.join(all_strategies())}")
    if threads is None and ranks > cores:
        raise UsageError(f"--ranks {ranks}: this process may use {cores} cores; each rank "
                         f"needs one of its own at least")
    per_rank = threads if threads is not None else cores // ranks
    if ranks * per_rank > cores:
        raise UsageError(f"--ranks {ranks} x --threads {per_rank}: this process may use {cores} "
                         f"cores; each rank needs cores of its own (ranks x threads <= cores)")
    return per_rank


def expand(cells: list[tuple], ranks: int, strategies: list[str] | None,
           threads: int) -> list[tuple]:
    """(spec, choice, workload, skip_reason) tuples -> the data-parallel cells, same form."""
    out = []
    for spec, choice, workload, reason in cells:
        names = STRATEGIES.get(spec.backend)
        if names is None:
            why = (f"no data-parallel version of {spec.backend} (--ranks: "
                   f"{', '.join(STRATEGIES)})")
            out.append((spec, choice, workload, reason or why))
            continue
        chosen = [s for s in names if s in strategies] if strategies else list(names[:1])
        if not chosen and len(names) > 1:  # the backend has strategies, none of them asked
            out.append((spec, choice, workload, reason or (
                f"--parallel {','.join(strategies)}: none of {spec.backend}'s strategies "
                f"({', '.join(names)})")))
            continue
        for strategy in chosen or names[:1]:
            ranked = RankedChoice(choice.info, choice.option, strategy, ranks)
            batch = spec.shape.get("batch")
            why = reason
            if spec.mode != MODE:
                why = why or f"--ranks {ranks}: data parallelism splits a {MODE} step's batch"
            elif batch is None or batch % ranks:
                raise UsageError(f"--ranks {ranks}: workload {spec.workload}'s global batch "
                                 f"{batch} does not split evenly across {ranks} ranks "
                                 f"(--batch)")
            extra = {**spec.extra, "ranks": ranks, "strategy": strategy}
            out.append((spec.replace(threads=threads, extra=extra), ranked, workload, why))
    return out
