"""The local executor: one cell process at a time, in plan order, on this machine."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

from lab.cell.spec import CellOutcome, CellSpec
from lab.running.executors import CellJob, measure


class LocalExecutor:
    name = "local"

    def prepare(self, specs: list[CellSpec], trace: bool = False) -> dict:
        return {"name": self.name}  # the run's own fingerprint says where: this machine

    def run(self, jobs: list[CellJob],
            on_phase=None) -> Iterator[tuple[CellJob, CellOutcome]]:
        # a cell process that is running when Ctrl-C or SIGTERM arrives is killed by
        # lab.cell.launch before the exception leaves it, so cancel has nothing left to stop
        for job in jobs:
            if job.trace_dir is not None:
                from lab.profiling import trace_pass as profile

                outcome, _entry = profile.trace_outcome(job.spec, job.label,
                                                        Path(job.trace_dir), job.timeout_s)
                yield job, outcome
                continue
            yield job, measure(job, partial(on_phase, job) if on_phase else None)

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        from lab.cell import fork

        fork.close_all()  # the fork servers of this run's cells
