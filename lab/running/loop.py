"""A selection becomes cells, and the one run loop measures them: plan -> fingerprint -> run
folder -> recorder -> skip rule -> executor -> save. `lab run`, `lab profile`, `lab check` and
the Python API all go through here.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import numbers
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from lab import compile as backends
from lab import workloads
from lab.cell import launch as runner
from lab.cell.spec import CellOutcome, CellResult, CellSpec, benchmark_name
from lab.compile import BackendChoice
from lab.core import precision as precisions
from lab.core.cores import usable_cores
from lab.core.errors import UsageError
from lab.core.status import Status
from lab.running import selection as checks
from lab.running.defaults import (
    DEFAULT_LATENCY_REPEATS,
    DEFAULT_REPEATS,
    DEFAULT_TIMEOUT_S,
)
from lab.running.executors import EXECUTORS, CellJob, Executor
from lab.running.writer import RunRecorder
from lab.store import folders as store
from lab.store import identity, provenance
from lab.workloads.user import UserWorkloadError

LATENCY_MODE = "infer"  # per-call latency is a serving measure: infer cells only
# a cell process aims to finish within this share of its timeout: warm-up and sampling shrink
# to fit, so a slow but valid cell ends with fewer samples (said so) instead of `timeout`
BUDGET_SHARE = 0.75
NAMED_SHAPE_KEYS = ("batch", "seq", "image_size")  # flags that apply where a workload has them
DEVICES = ("cpu", "cuda", "auto")
log = logging.getLogger("lab")  # progress of runs, one record per finished phase and cell


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
    return len(usable_cores())


@dataclass
class Selection:
    """What to measure, as a user says it (the CLI's flags, or the Python API's arguments)."""

    workloads: list[str]
    backends: list[str] = field(default_factory=lambda: ["torch-eager", "torch-compile"])
    modes: list[str] = field(default_factory=lambda: ["infer"])
    device: str = "auto"
    # lab.core.precision name; None: the device's default (fp32 on the CPU, amp-bf16 on CUDA)
    precision: str | None = None
    dtype: str | None = None  # the old way to say it: float32 = fp32, bfloat16 = bf16, ...
    named_shape: dict = field(default_factory=dict)  # --batch/--seq/--image-size
    shape: dict = field(default_factory=dict)  # --shape key=value: must exist in every workload
    threads: int | None = None
    # the cells run here (the local executor): this machine's cores bound --threads and
    # --device cuda needs its GPU; a cluster executor checks its nodes instead
    on_this_machine: bool = True
    repeats: int | None = None  # None: DEFAULT_REPEATS, or DEFAULT_LATENCY_REPEATS (latency)
    cold_l2: bool = False
    cuda_graphs: bool = False
    allow_nan: bool = False  # NaN/Inf accepted where eager has them in the same places
    latency: bool = False  # infer cells: one call per sample, p50/p90/p99 (docs/inference.md)
    # the workloads' real sizes (their CUDA default shapes: GPT-2 124M, Llama-3.2-1B) on any
    # device, in place of the device's default
    full_size: bool = False
    # run a cell whose estimated memory exceeds what this machine has (lab.running.selection)
    allow_large: bool = False
    # where stored runs are read to say how long a large cell may take (None: not said)
    stored_runs: str | None = None
    # --ranks N: train cells data parallel over N ranks (lab.distributed); --parallel: the
    # strategies of the backends that have several (torch: ddp, fsdp)
    ranks: int | None = None
    parallel: list[str] | None = None
    # --env NAME=PYTHON: every cell once per environment, its processes run by that
    # interpreter (lab.running.envs); None: the lab's own interpreter, as always
    envs: list[str] | None = None


@dataclass
class PlannedCell:
    spec: CellSpec
    choice: BackendChoice
    workload: workloads.Workload
    skip_reason: str | None = None  # known before any process starts

    @property
    def name(self) -> str:
        return benchmark_name(self.spec, self.choice.label)


def positive_int(flag: str, value) -> int:
    """`value` if it is a positive integer (not a bool, not a string of digits), else the
    UsageError the command line gives for the flag."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise UsageError(f"{flag}: expected a positive integer, got {value!r}")
    return int(value)


def positive_number(flag: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0 \
            or math.isnan(value):
        raise UsageError(f"{flag}: expected a positive number, got {value!r}")
    return float(value)


def check_run_options(*, timeout_s, processes, executor: str,
                      ray_address: str | None) -> None:
    """What `lab run` and `lab.run()` take beyond the selection, checked once for both (the
    selection itself is checked by `plan`). UsageError names the command line's flag."""
    positive_number("--timeout", timeout_s)
    positive_int("--processes", processes)
    if executor not in EXECUTORS:
        raise UsageError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    if ray_address is not None and executor != "ray":
        raise UsageError(f"--ray-address {ray_address}: cells run on a Ray cluster only with "
                         f"--executor ray (this run's executor: {executor})")


def check_values(selection: Selection, timeout_s) -> None:
    """The selection's numbers and device as the command line's flags take them (argparse
    checks them there; the API's arguments come here unchecked): a string "5" or a bool is
    not a count, 0 samples make no median."""
    positive_number("--timeout", timeout_s)
    if selection.device not in DEVICES:
        raise UsageError(f"unknown device {selection.device!r}; valid: {', '.join(DEVICES)}")
    for flag, value in (("--repeats", selection.repeats), ("--threads", selection.threads)):
        if value is not None:
            positive_int(flag, value)


def _refuse_repeats(flag: str, names: list[str]) -> None:
    """A name given twice would run twice under one benchmark name, the second overwriting."""
    seen = set()
    for name in names:
        if name in seen:
            raise UsageError(f"{flag} names {name!r} twice")
        seen.add(name)


def _load_workloads(names: list[str], timeout_s: float,
                    pythons: tuple = (None,)) -> list[workloads.Workload]:
    """The workloads by name; a user's factory is called and checked in a child process
    (lab.cell.launch), so one that hangs or kills its process ends in a UsageError, not in a hung
    or dead lab; under `--env`, by each environment's interpreter (`pythons`)."""
    try:
        loaded = [workloads.get(w, validate_user=False) for w in names]
    except (workloads.UnknownWorkload, UserWorkloadError) as exc:
        raise UsageError(str(exc)) from None
    for workload in loaded:
        if workload.source != "builtin":
            for python in pythons:
                problem = runner.validate_user_workload(workload.source, timeout_s, python)
                if problem:
                    raise UsageError(problem + (f" (--env interpreter {python})" if python
                                                else ""))
    return loaded


def resolve_precision(selection: Selection, device: str) -> precisions.Precision:
    """The selection's precision: --precision, or --dtype's (float32 -> fp32), or the device's
    default; UsageError when the two flags disagree or name nothing known."""
    asked = {}
    for flag, value in (("--precision", selection.precision), ("--dtype", selection.dtype)):
        if value is not None:
            try:
                asked[flag] = precisions.resolve(value)
            except ValueError as exc:
                raise UsageError(f"{flag}: {exc}") from None
    if len(set(asked.values())) > 1:
        raise UsageError(f"--precision {selection.precision} and --dtype {selection.dtype} "
                         f"disagree; give one (--dtype {selection.dtype} is --precision "
                         f"{asked['--dtype']})")
    return next(iter(asked.values()), precisions.default_for(device))


def plan(selection: Selection,
         timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[list[PlannedCell], str]:
    """Validate the selection and return (cells, device); UsageError on anything unknown.
    `timeout_s` bounds the check of a user's workload factory."""
    check_values(selection, timeout_s)
    # two spellings of one file (`./m.py:f`, `m.py:f`) are one benchmark key (lab.store.identity)
    _refuse_repeats("--workload", [identity.workload_key(w) for w in selection.workloads])
    _refuse_repeats("--backend", selection.backends)
    _refuse_repeats("--mode", selection.modes)
    for key, value in selection.shape.items():  # 0 is each workload's to accept (zero_ok)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UsageError(f"--shape {key}={value}: shape values must be positive integers")
    cores = len(usable_cores())
    if selection.on_this_machine and selection.threads is not None and selection.threads > cores:
        raise UsageError(f"--threads {selection.threads}: this process may use {cores} cores; "
                         f"more threads than cores time the scheduler, not the model")
    if selection.latency and LATENCY_MODE not in selection.modes:
        raise UsageError(f"--latency times {LATENCY_MODE} cells one call at a time; "
                         f"--mode {','.join(selection.modes)} has none")
    for mode in selection.modes:
        if mode not in workloads.MODES:
            raise UsageError(f"unknown mode {mode!r}; valid: {', '.join(workloads.MODES)}")
    try:
        choices = [backends.resolve(b) for b in selection.backends]
    except backends.UnknownBackend as exc:
        raise UsageError(str(exc)) from None
    # cells that run elsewhere (a cluster) are checked against its nodes by the executor
    device = resolve_device(selection.device) if selection.on_this_machine or \
        selection.device == "auto" else selection.device
    precision = resolve_precision(selection, device)
    environments = _environments(selection, choices)
    loaded = _load_workloads(selection.workloads, timeout_s,
                             tuple(e.python for e in environments) or (None,))
    threads = selection.threads or default_threads()
    shape_device = "cuda" if selection.full_size else device  # the CUDA defaults are the real
    # keys apply where a workload has them; constraints checked here, not in a failed cell
    shapes = checks.shapes(loaded, shape_device, selection.named_shape, selection.shape)
    cells = []
    for workload in loaded:
        shape = shapes[workload.name]
        for mode in selection.modes:
            for choice in choices:
                spec = CellSpec(
                    workload=workload.name, backend=choice.info.name, option=choice.option,
                    mode=mode, shape=shape, device=device, precision=precision.value,
                    threads=threads,
                    repeats=_repeats(selection, mode), cold_l2=selection.cold_l2,
                    latency=selection.latency and mode == LATENCY_MODE,
                    cuda_graphs=selection.cuda_graphs, budget_s=BUDGET_SHARE * timeout_s,
                    extra={"allow_nan": True} if selection.allow_nan else {})
                if environments:  # the same cell once per environment (packages: checked)
                    from lab.running import envs

                    read = envs.read_back(environments)
                    cells.extend(PlannedCell(
                        spec.replace(env=e.spec_entry(read)),
                        envs.EnvChoice(choice.info, choice.option, e.name, e), workload,
                        checks.skip_reason(workload, choice, mode, precision.value, False))
                        for e in environments)
                    continue
                cells.append(PlannedCell(spec, choice, workload, checks.skip_reason(
                    workload, choice, mode, precision.value, selection.on_this_machine)))
    if selection.ranks is not None:  # data-parallel cells in place of single-process ones
        from lab.distributed import plan as ranked

        per_rank = ranked.check(selection.ranks, selection.parallel, selection.threads, cores)
        cells = [PlannedCell(*cell) for cell in ranked.expand(
            [(c.spec, c.choice, c.workload, c.skip_reason) for c in cells],
            selection.ranks, selection.parallel, per_rank)]
    elif selection.parallel:
        raise UsageError("--parallel names data-parallel strategies: it needs --ranks N")
    checks.refuse_if_nothing_runs(cells)
    if selection.on_this_machine:  # a cluster's nodes have memory of their own
        checks.check_memory(cells, device, selection.allow_large, selection.stored_runs,
                            tell=selection.full_size and device == "cpu")
    return cells, device


def _environments(selection: Selection, choices: list[BackendChoice]) -> list:
    """The `--env` interpreters, each asked what it holds (lab.running.envs); [] without
    --env. Refused with --ranks (rank processes run the lab's interpreter) and off this
    machine (a cluster's nodes have interpreters of their own)."""
    if not selection.envs:
        return []
    if selection.ranks is not None:
        raise UsageError("--env with --ranks: data-parallel cells run the lab's own "
                         "interpreter; gate environments on single-process cells")
    if not selection.on_this_machine:
        raise UsageError("--env runs cells with interpreters on this machine: "
                         "--executor local only")
    from lab.running import envs

    return envs.resolve(list(selection.envs), choices)


def _repeats(selection: Selection, mode: str) -> int:
    """Samples per side: as asked, or the default for how the cell is timed."""
    if selection.repeats is not None:
        return selection.repeats
    latent = selection.latency and mode == LATENCY_MODE
    return DEFAULT_LATENCY_REPEATS if latent else DEFAULT_REPEATS


class StoreWriteError(UsageError):
    """The run folder cannot be written (full disk, gone, read-only); one line."""


def new_run_dir(out: str | Path, fp: dict, label: str) -> Path:
    """A new run folder, created now and exclusively: a run started in the same second into
    the same --out gets its own, and an unusable --out is refused before any cell runs."""
    parent = Path(out) / provenance.machine_id(fp["hardware"])
    try:
        return store.create_run_dir(parent, label)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create a run folder in {parent}: "
                         f"{exc.strerror or exc}") from None


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


@dataclass(frozen=True)
class Progress:
    """One step of a run: a phase of a cell that ended (`phase`, with its seconds), or a cell
    that finished (`status`, with the cell's wall seconds). `done` counts finished cells."""

    cell: str  # "mlp infer torch-compile"
    done: int
    total: int
    seconds: float
    phase: str | None = None
    status: str | None = None
    elapsed_s: float = 0.0  # since the run loop started

    def line(self) -> str:
        what = f"{self.phase} {self.seconds:.1f} s" if self.status is None else \
            f"{self.status} in {self.seconds:.1f} s"
        return f"[{self.done}/{self.total}] {self.cell}: {what}"


def skipped_outcome(cell: PlannedCell) -> CellOutcome:
    return CellOutcome(cell.spec, cell.choice.label,
                       CellResult.failed(Status.SKIPPED, cell.skip_reason), 0.0)


def run_cells(cells: list[PlannedCell], *, out: str | Path, label: str, argv: list[str],
              executor: Executor, timeout_s: float = DEFAULT_TIMEOUT_S, processes: int = 1,
              trace: bool = False,
              on_start: Callable[[PlannedCell], None] | None = None,
              on_done: Callable[[PlannedCell, CellOutcome, Path], None] | None = None,
              after: Callable[[RunRecorder], None] | None = None,
              progress: Callable[[Progress], None] | None = None,
              resume=None) -> SessionResult:
    """The run loop: every cell measured by `executor`, recorded as it finishes; Ctrl-C keeps
    what finished, cancels the rest and marks the run incomplete. `trace`: each cell is traced
    instead of timed (`lab profile`). `after` runs on the recorder once every cell is in (the
    profiling pass of `lab run --profile`). `progress` is called, and the "lab" logger told at
    INFO, as each phase of a cell and each cell ends (the phases where the executor sees
    them: the local one does). `resume` (lab.running.resume.Resume): the cells go into that stored
    run's folder, beside the cells it holds."""
    fp = provenance.fingerprint(threads=cells[0].spec.threads if cells else None)
    if any(c.spec.env for c in cells):  # `--env`: what each interpreter holds, asked of it
        from lab.running import envs

        fp["envs"] = envs.fingerprint([c.choice for c in cells])
    # where the cells will run (this machine, or a cluster's nodes); refused before any folder
    # is made if they cannot run there
    fp["executor"] = executor.prepare([c.spec for c in cells if not c.skip_reason], trace)
    run_dir = resume.run_dir if resume else new_run_dir(out, fp, label)
    try:
        recorder = resume.recorder(fp, argv, "run") if resume else \
            RunRecorder(run_dir, fp, argv, kind="profile" if trace else "run")
    except OSError as exc:
        raise StoreWriteError(f"cannot write in {run_dir}: {exc.strerror or exc}") from None

    def record(outcome: CellOutcome, workload) -> None:
        try:
            recorder.add(outcome, workload)
        except OSError as exc:  # results.json on disk is the last good one (atomic writes)
            raise StoreWriteError(
                f"cannot write {run_dir / store.RESULTS}: {exc.strerror or exc}; the run "
                f"stops, the {len(recorder.outcomes) - 1} cells stored before are kept "
                f"(marked incomplete)") from None

    trace_dir = str(recorder.run_dir) if trace else None
    recorder.set_order([c.name for c in cells])
    jobs, by_index = [], {}
    interrupted = False
    started, finished = time.perf_counter(), [0]

    def tell(cell: PlannedCell, seconds: float, phase: str | None = None,
             status: str | None = None) -> None:
        event = Progress(f"{cell.spec.workload} {cell.spec.mode} {cell.choice.label}",
                         finished[0], len(cells), seconds, phase, status,
                         time.perf_counter() - started)
        log.info(event.line())
        if progress:
            progress(event)

    def done(cell: PlannedCell, outcome: CellOutcome) -> None:
        record(outcome, cell.workload)
        finished[0] += 1
        tell(cell, outcome.wall_s, status=str(outcome.status))
        if on_done:
            on_done(cell, outcome, recorder.run_dir)

    try:
        for i, cell in enumerate(cells):
            if cell.skip_reason:
                done(cell, skipped_outcome(cell))
            else:
                jobs.append(CellJob(i, cell.spec, cell.choice.label, timeout_s, processes,
                                    trace_dir))
                by_index[i] = cell
        pending = iter(executor.run(
            jobs, on_phase=lambda job, phase, seconds: tell(by_index[job.index], seconds, phase)))
        while True:
            if by_index and on_start:  # the next in plan order (the one running, when local)
                on_start(by_index[min(by_index)])
            try:
                job, outcome = next(pending)
            except StopIteration:
                break
            done(by_index.pop(job.index), outcome)
        if after:
            after(recorder)
    except KeyboardInterrupt:
        interrupted = True
        with _ctrl_c_held():
            executor.cancel()
            executor.close()
    except StoreWriteError:
        executor.cancel()
        raise
    finally:
        executor.close()  # a second call does nothing
    try:
        with _ctrl_c_held() if interrupted else nullcontext():
            path = recorder.save(complete=not interrupted)
    except OSError as exc:
        raise StoreWriteError(f"cannot write {run_dir / store.RESULTS}: "
                              f"{exc.strerror or exc}; the cells stored before are kept "
                              f"(marked incomplete)") from None
    return SessionResult(path, recorder, interrupted)


@contextmanager
def _ctrl_c_held():
    """After a Ctrl-C, a second one must not cut the clean-up short (stopping the executor's
    tasks, saving the run): it is dropped until clean-up ends, since the run is ending anyway.
    The command line's own handler ignores every repeat already; this covers Python callers
    (the API), whose handler is Python's."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
