"""Where cells run. The run loop (lab.running.loop) hands every cell job to an executor and records
outcomes as they come back, in whatever order they finish.

- `local`: one cell process at a time on this machine (lab.cell.launch), so timed cells never
  share the machine with each other.
- `ray`: each cell a Ray task on a cluster node (lab.running.executors.ray, docs/cluster.md); cells
  run side by side, each holding its own CPUs (and GPU), and say which node ran them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from lab.cell import launch as runner
from lab.cell.launch import PhaseCallback
from lab.cell.spec import CellOutcome, CellSpec
from lab.core.errors import UsageError
from lab.running import machine_load

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class CellJob:
    """One cell to measure: what `lab.cell.launch.run_cell_processes` needs."""

    index: int  # its place in the plan
    spec: CellSpec
    label: str
    timeout_s: float
    processes: int = 1
    trace_dir: str | None = None  # a tracing job (`lab profile`): traces go in this run folder


def measure(job: CellJob, on_phase: PhaseCallback | None = None) -> CellOutcome:
    """The job's cell processes, with the load of the machine they ran on sampled around them
    (lab.running.machine_load): the local executor calls this here, a Ray task on its node."""
    start = machine_load.mark()
    if job.spec.extra.get("ranks"):  # a data-parallel cell: its ranks' processes
        from lab.distributed import launch

        outcome = launch.run_cell(job.spec, job.label, job.timeout_s, on_phase)
    else:
        outcome = runner.run_cell_processes(job.spec, job.label, job.timeout_s,
                                            job.processes, on_phase)
    load = machine_load.between(start)
    if load is not None:  # other work on this machine during the cell: suspect timings
        outcome.extra.update(load)
    return outcome


class Executor(Protocol):
    name: str

    def prepare(self, specs: list[CellSpec], trace: bool = False) -> dict:
        """Before the run folder is made: check that these cells can run here (UsageError if
        not) and say where they will run; the answer goes into the run's fingerprint."""

    def run(self, jobs: list[CellJob], on_phase: Callable[[CellJob, str, float], None] | None
            = None) -> Iterator[tuple[CellJob, CellOutcome]]:
        """Yield each job with its outcome as it finishes; `on_phase(job, phase, seconds)` as
        a cell's phases end, where the executor sees them (the local one does)."""

    def cancel(self) -> None:
        """Stop every job still running or waiting (Ctrl-C, SIGTERM)."""

    def close(self) -> None:
        """Release what the executor holds (a cluster connection)."""


def get(name: str, **options) -> Executor:
    if name == "local":
        from lab.running.executors.local import LocalExecutor

        return LocalExecutor()
    if name == "ray":
        from lab.running.executors.ray import RayExecutor

        return RayExecutor(**options)
    raise UsageError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")
