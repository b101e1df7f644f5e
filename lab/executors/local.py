"""The local executor: one cell process at a time, in plan order, on this machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lab import machine_load, runner
from lab.cellspec import CellSpec
from lab.executors import CellJob
from lab.runner import CellOutcome


class LocalExecutor:
    name = "local"

    def prepare(self, specs: list[CellSpec], trace: bool = False) -> dict:
        return {"name": self.name}  # the run's own fingerprint says where: this machine

    def run(self, jobs: list[CellJob]) -> Iterator[tuple[CellJob, CellOutcome]]:
        # a cell process that is running when Ctrl-C or SIGTERM arrives is killed by
        # lab.runner before the exception leaves it, so cancel has nothing left to stop
        for job in jobs:
            if job.trace_dir is not None:
                from lab import profile

                outcome, _entry = profile.trace_outcome(job.spec, job.label,
                                                        Path(job.trace_dir), job.timeout_s)
                yield job, outcome
                continue
            start = machine_load.mark()
            outcome = runner.run_cell_processes(job.spec, job.label, job.timeout_s,
                                                job.processes)
            load = machine_load.between(start)
            if load is not None:  # other work on this machine during the cell: suspect timings
                outcome.extra.update(load)
            yield job, outcome

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass
