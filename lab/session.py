"""A selection becomes cells, and the one run loop measures them: plan -> fingerprint -> run
folder -> recorder -> skip rule -> executor -> save. `lab run`, `lab profile`, `lab check` and
the Python API all go through here.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lab import backends, store, workloads
from lab.backends import BackendChoice
from lab.cellspec import CellResult, CellSpec
from lab.errors import UsageError
from lab.executors import CellJob, Executor
from lab.record import RunRecorder, benchmark_name
from lab.runner import CellOutcome
from lab.status import Status
from lab.workloads.user import UserWorkloadError

DEFAULT_OUT = "profiles"
DEFAULT_REPEATS = 30
DEFAULT_TIMEOUT_S = 900.0
DTYPES = ("float32", "bfloat16", "float16")
NAMED_SHAPE_KEYS = ("batch", "seq", "image_size")  # flags that apply where a workload has them


def cuda_available() -> bool:
    """Whether a CUDA device is usable, asked of an installed framework (torch, else JAX)."""
    if importlib.util.find_spec("torch") is not None:
        import torch

        return torch.cuda.is_available()
    if importlib.util.find_spec("jax") is not None:
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    return False


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cuda" and not cuda_available():
        raise UsageError("--device cuda: no CUDA device is available on this machine")
    return device


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@dataclass
class Selection:
    """What to measure, as a user says it (the CLI's flags, or the Python API's arguments)."""

    workloads: list[str]
    backends: list[str] = field(default_factory=lambda: ["torch-eager", "torch-compile"])
    modes: list[str] = field(default_factory=lambda: ["infer"])
    device: str = "auto"
    dtype: str = "float32"
    named_shape: dict = field(default_factory=dict)  # --batch/--seq/--image-size
    shape: dict = field(default_factory=dict)  # --shape key=value: must exist in every workload
    threads: int | None = None
    repeats: int = DEFAULT_REPEATS
    cold_l2: bool = False
    cuda_graphs: bool = False


@dataclass
class PlannedCell:
    spec: CellSpec
    choice: BackendChoice
    workload: workloads.Workload
    skip_reason: str | None = None  # known before any process starts

    @property
    def name(self) -> str:
        return benchmark_name(self.spec, self.choice.label)


def plan(selection: Selection) -> tuple[list[PlannedCell], str]:
    """Validate the selection and return (cells, device); UsageError on anything unknown."""
    for mode in selection.modes:
        if mode not in workloads.MODES:
            raise UsageError(f"unknown mode {mode!r}; valid: {', '.join(workloads.MODES)}")
    if selection.dtype not in DTYPES:
        raise UsageError(f"unknown dtype {selection.dtype!r}; valid: {', '.join(DTYPES)}")
    try:
        choices = [backends.resolve(b) for b in selection.backends]
    except backends.UnknownBackend as exc:
        raise UsageError(str(exc)) from None
    device = resolve_device(selection.device)
    try:
        loaded = [workloads.get(w) for w in selection.workloads]
    except (workloads.UnknownWorkload, UserWorkloadError) as exc:
        raise UsageError(str(exc)) from None
    threads = selection.threads or default_threads()
    cells = []
    for workload in loaded:
        known = workload.shape_for(device)
        named = {k: v for k, v in selection.named_shape.items() if k in known}
        try:
            shape = workload.shape_for(device, {**named, **selection.shape})
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        for mode in selection.modes:
            for choice in choices:
                spec = CellSpec(
                    workload=workload.name, backend=choice.info.name, option=choice.option,
                    mode=mode, shape=shape, dtype=selection.dtype, device=device,
                    threads=threads, repeats=selection.repeats, cold_l2=selection.cold_l2,
                    cuda_graphs=selection.cuda_graphs)
                framework = choice.info.framework.value
                skip = (None if framework in workload.frameworks
                        else f"workload {workload.name} has no {framework} version")
                cells.append(PlannedCell(spec, choice, workload, skip))
    return cells, device


def new_run_dir(out: str | Path, fp: dict, label: str) -> Path:
    return Path(out) / store.machine_id(fp["hardware"]) / store.new_run_id(label)


@dataclass
class SessionResult:
    path: Path  # the run's results.json
    recorder: RunRecorder
    interrupted: bool

    @property
    def run_dir(self) -> Path:
        return self.recorder.run_dir

    @property
    def failed(self) -> list[CellOutcome]:
        return self.recorder.failed


def skipped_outcome(cell: PlannedCell) -> CellOutcome:
    return CellOutcome(cell.spec, cell.choice.label,
                       CellResult.failed(Status.SKIPPED, cell.skip_reason), 0.0)


def run_cells(cells: list[PlannedCell], *, out: str | Path, label: str, argv: list[str],
              executor: Executor, timeout_s: float = DEFAULT_TIMEOUT_S, processes: int = 1,
              trace: bool = False,
              on_start: Callable[[PlannedCell], None] | None = None,
              on_done: Callable[[PlannedCell, CellOutcome, Path], None] | None = None,
              after: Callable[[RunRecorder], None] | None = None) -> SessionResult:
    """The run loop: every cell measured by `executor`, recorded as it finishes; Ctrl-C keeps
    what finished, cancels the rest and marks the run incomplete. `trace`: each cell is traced
    instead of timed (`lab profile`). `after` runs on the recorder once every cell is in (the
    profiling pass of `lab run --profile`)."""
    fp = store.fingerprint(threads=cells[0].spec.threads if cells else None)
    recorder = RunRecorder(new_run_dir(out, fp, label), fp, argv,
                           kind="profile" if trace else "run")
    trace_dir = str(recorder.run_dir) if trace else None
    recorder.set_order([c.name for c in cells])
    jobs, by_index = [], {}
    interrupted = False
    try:
        for i, cell in enumerate(cells):
            if cell.skip_reason:
                outcome = skipped_outcome(cell)
                recorder.add(outcome, cell.workload)
                if on_done:
                    on_done(cell, outcome, recorder.run_dir)
            else:
                jobs.append(CellJob(i, cell.spec, cell.choice.label, timeout_s, processes,
                                    trace_dir))
                by_index[i] = cell
        pending = iter(executor.run(jobs))
        while True:
            if by_index and on_start:  # the next in plan order (the one running, when local)
                on_start(by_index[min(by_index)])
            try:
                job, outcome = next(pending)
            except StopIteration:
                break
            cell = by_index.pop(job.index)
            recorder.add(outcome, cell.workload)
            if on_done:
                on_done(cell, outcome, recorder.run_dir)
        if after:
            after(recorder)
    except KeyboardInterrupt:
        interrupted = True
        executor.cancel()
    finally:
        executor.close()
    path = recorder.save(complete=not interrupted)
    return SessionResult(path, recorder, interrupted)
