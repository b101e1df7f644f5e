"""The only place a cell process is launched: `python -m lab.cell.main SPEC RESULT`, with the
cell's environment, a timeout, and every way it can end mapped to one status. Torch cells on
the CPU are forked from a process that has imported torch (lab.cell.fork) instead of started
from scratch, so their processes skip the framework's import.

A compiled cell runs twice: once with a fresh, empty compile cache (its first call is the cold
compile, and its samples are the steady state), then a short second process on the now-filled
cache that only times the first call (the warm compile).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lab
from lab import compile as backends
from lab.cell import fork
from lab.cell.spec import CellOutcome, CellPass, CellResult, CellSpec
from lab.core import cpu_time, stats
from lab.core.status import OOM_MARKERS, Status

# where scratch folders are made (None: the temp folder); a Ray task points it at a folder of its
# own that lab.running.executors.guard removes if the task's worker is killed
SCRATCH_ROOT_VAR = "LAB_SCRATCH_ROOT"

# progress of one cell as its processes end: (phase, seconds), e.g. ("cold compile", 10.8)
PhaseCallback = Callable[[str, float], None]


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A folder for one cell's files (its spec, result, log, compile cache, and the temp folder
    of its processes), removed on every way out: a normal end, a failure, Ctrl-C, or SIGTERM
    and SIGHUP, which the lab turns into KeyboardInterrupt and ignores while this clean-up
    runs. A cell process that is killed cannot remove its own folders, so they live in here."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get(SCRATCH_ROOT_VAR)))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def cell_env(spec: CellSpec, cache_dir: str | None = None, extra: dict | None = None) -> dict:
    """The environment of a cell process: this one's, with the same thread count for every
    framework (BLAS/OpenMP pools are sized from these at import), the backend's own
    variables, its compile caches pointed at `cache_dir`, and `extra` on top."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(spec.threads)
    module = backends.load(backends.BACKENDS[spec.backend])
    env.update(module.process_env(spec.threads, spec.device))
    if cache_dir:
        env.update(module.cache_env(cache_dir))
    repo_root = str(Path(lab.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo_root, env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def cell_command(spec_path: Path, result_path: Path, python: str | None = None) -> list[str]:
    """The cell process: the lab's own interpreter, or the environment's (`lab run --env`)."""
    return [python or sys.executable, "-m", "lab.cell.main", str(spec_path), str(result_path)]


def run_cell_process(spec: CellSpec, timeout_s: float, cache_dir: str | None = None,
                     env_extra: dict | None = None, wrapper: tuple[str, ...] = (),
                     log_path: Path | None = None) -> tuple[CellResult, float]:
    """Run one cell process; returns (its result, its wall seconds). `wrapper`: a tool that
    runs the cell under it (ncu, nsys); `log_path`: keep the process's output there."""
    t0 = time.perf_counter()
    try:
        env = cell_env(spec, cache_dir, env_extra)
    except Exception as exc:  # a backend module that fails to import ends its cell, not the run
        return CellResult.failed(Status.RUN_ERROR,
                                 f"preparing the cell: {type(exc).__name__}: {exc}"), 0.0
    with scratch("lab-cell-") as tmp:
        spec_path, result_path = Path(tmp, "spec.json"), Path(tmp, "result.json")
        spec_path.write_text(spec.to_json())
        log_path = Path(log_path or Path(tmp, "log.txt"))
        # the process's own temp files (a runtime's converted artifact, a compiler's scratch)
        # go in here too: the process exits without teardown, or is killed, and this folder
        # is removed whatever happens to it
        (tmp / "tmp").mkdir()
        env["TMPDIR"] = str(tmp / "tmp")
        modules = None if wrapper else fork.forkable(spec)
        server, started = None, time.perf_counter()
        if modules:
            try:
                server = fork.server_for(modules, env, per_cell_vars(spec), timeout_s,
                                         os.environ.get(SCRATCH_ROOT_VAR),
                                         backends.load(backends.BACKENDS[spec.backend])
                                         .cache_env)
            except fork.ServerGone as exc:
                if exc.timed_out:  # its imports alone took longer than the cell may
                    return (CellResult.failed(Status.TIMEOUT, f"no result after "
                                              f"{timeout_s:.0f} s (importing)"),
                            time.perf_counter() - t0)
        # a new server's start counts in this process's time, as a fresh process's imports do
        spent = time.perf_counter() - started
        try:
            if server is not None:
                try:
                    code = server.run([str(spec_path), str(result_path)], env, log_path,
                                      max(timeout_s - spent, 0.001), since_s=spent,
                                      cache_dir=cache_dir)
                except fork.ServerGone:  # the cell runs fresh, as it would without a server
                    fork.discard(server)
                    server = None
            if server is None:
                code = _run_fresh(wrapper, spec_path, result_path, env, log_path, timeout_s,
                                  (spec.env or {}).get("python"))
        except subprocess.TimeoutExpired:
            return (CellResult.failed(Status.TIMEOUT, f"no result after {timeout_s:.0f} s"),
                    time.perf_counter() - t0)
        wall = time.perf_counter() - t0
        if result_path.is_file():
            result = CellResult.from_dict(json.loads(result_path.read_text()))
            result.started = "forked" if server is not None else "fresh"
            return result, wall
        tail = log_path.read_text(errors="replace").strip().splitlines()[-20:]
        text = "\n".join(tail)
        if code in (-signal.SIGKILL, 137) or any(m in text.lower() for m in OOM_MARKERS):
            status = Status.OOM
        else:
            status = Status.RUN_ERROR
        last = tail[-1] if tail else ""
        return CellResult.failed(status, f"cell process exited {code}: {last}"[:500],
                                 log_tail=text[-4000:]), wall


def _run_fresh(wrapper: tuple[str, ...], spec_path: Path, result_path: Path, env: dict,
               log_path: Path, timeout_s: float, python: str | None = None) -> int:
    """A cell process started from scratch: its exit code; subprocess.TimeoutExpired (after
    killing its group) when it outlives `timeout_s`."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [*wrapper, *cell_command(spec_path, result_path, python)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,  # its own process group: a timeout kills all of it
        )
        try:
            code = proc.wait(timeout=timeout_s)
            reap_group(proc)  # helpers the cell left behind (it exits without teardown)
        except BaseException:  # a timeout, or Ctrl-C: never leave the cell running
            kill_group(proc)
            raise
    return code


def per_cell_vars(spec: CellSpec) -> set[str]:
    """The variables that differ between the processes of one cell (its compile caches, its
    temp folder): a fork server is kept per environment less these, which it points at links
    that each forked process re-points at its own folders (lab.cell.fork)."""
    module = backends.load(backends.BACKENDS[spec.backend])
    return {"TMPDIR", *module.cache_env("cache").keys()}


def validate_user_workload(spec: str, timeout_s: float, python: str | None = None) -> str | None:
    """Import a user's `file.py:factory`, call it and check what it returns, in a process of
    its own with a timeout: a factory that hangs, calls os._exit or crashes the interpreter
    cannot hang or kill the lab. None when valid, else one line saying why not. `python`: the
    interpreter its cells will run (`lab run --env`; the factory may import what only that
    environment has), else the lab's own."""
    from lab.workloads import user

    repo_root = str(Path(lab.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo_root, env.get("PYTHONPATH")]))
    with scratch("lab-check-") as tmp:  # what the factory writes in its temp folder goes too
        env["TMPDIR"] = str(tmp)
        proc = subprocess.Popen([python or sys.executable, "-m", "lab.workloads.user", spec],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                errors="replace", env=env, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout_s)
            reap_group(proc)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            return (f"workload {spec}: loading and calling the factory took more than "
                    f"{timeout_s:g} s (--timeout)")
        except BaseException:
            kill_group(proc)
            raise
    lines = [line for line in err.strip().splitlines() if line.strip()]
    if proc.returncode == 0:
        return None
    if proc.returncode == user.INVALID_EXIT:
        return lines[-1] if lines else f"workload {spec} is not valid"
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return f"workload {spec}: the process calling the factory was killed by {name}"
    last = f": {lines[-1]}" if lines else ""
    return (f"workload {spec}: the process calling the factory exited with code "
            f"{proc.returncode}{last}")[:500]


def reap_group(proc: subprocess.Popen) -> None:
    """Kill what is left of an exited cell's process group (compile workers and the like),
    counting their CPU as the lab's first (nobody waits for them)."""
    cpu_time.count_group_leftovers(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_group(proc: subprocess.Popen) -> None:
    cpu_time.count_group_leftovers(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _report_pass(on_phase: PhaseCallback | None, result: CellResult, wall: float,
                 first_call: str | None) -> None:
    """The phases of a finished timed process, as they are known once it ends: its first call
    (the cold compile, for a compiler) and its sampling; the process's wall when it failed."""
    if on_phase is None:
        return
    if first_call and result.first_call_s is not None:
        on_phase(first_call, result.first_call_s)
    if "sampling" in result.phases_s:
        on_phase("sampling", result.phases_s["sampling"])
    if not result.ok:
        on_phase(f"process ({result.status})", wall)


def run_cell(spec: CellSpec, label: str, timeout_s: float,
             on_phase: PhaseCallback | None = None) -> CellOutcome:
    info = backends.BACKENDS[spec.backend]
    t0 = time.perf_counter()
    if not info.compiles:
        result, wall = run_cell_process(spec, timeout_s)
        _report_pass(on_phase, result, wall, None)
        return CellOutcome(spec, label, result, time.perf_counter() - t0, process_wall_s=[wall])
    with scratch("lab-compile-cache-") as cache_dir:
        result, wall = run_cell_process(spec, timeout_s, str(cache_dir))
        _report_pass(on_phase, result, wall, "cold compile")
        walls, warm = [wall], None
        if result.status in (Status.OK, Status.FAIL_ACCURACY):
            warm, warm_wall = run_cell_process(spec.replace(cell_pass=CellPass.FIRST_CALL),
                                               timeout_s, str(cache_dir))
            walls.append(warm_wall)
            if on_phase and warm.first_call_s is not None:
                on_phase("warm compile", warm.first_call_s)
    return CellOutcome(spec, label, result, time.perf_counter() - t0, warm=warm,
                       process_wall_s=walls)


def run_cell_processes(spec: CellSpec, label: str, timeout_s: float,
                       processes: int = 1, on_phase: PhaseCallback | None = None) -> CellOutcome:
    """run_cell, then `processes - 1` more processes of the same cell; the outcome keeps every
    sample and each process's median (`process_medians_s`), which the gate compares.

    The extra processes skip the cold/warm compile-cache passes (the first process measured
    those); if any process does not end `ok`, the cell takes that process's status.
    """
    first = run_cell(spec, label, timeout_s, on_phase)
    if first.status != Status.OK:
        return first
    results = [first.result]
    for k in range(2, processes + 1):
        result, wall = run_cell_process(spec, timeout_s)
        first.process_wall_s.append(wall)
        if on_phase:
            on_phase(f"process {k}/{processes}", wall)
        if result.status != Status.OK:
            result.reason = f"process {k}/{processes}: {result.reason}"
            return CellOutcome(spec, label, result, first.wall_s,
                               process_wall_s=first.process_wall_s)
        results.append(result)
    first.extra["processes"] = processes
    first.extra["process_medians_s"] = [stats.median(r.samples_s) for r in results]
    if first.result.baseline_samples_s:
        first.extra["process_baseline_medians_s"] = [
            stats.median(r.baseline_samples_s) for r in results]
        first.result.baseline_samples_s = [s for r in results for s in r.baseline_samples_s]
    first.result.samples_s = [s for r in results for s in r.samples_s]
    return first
