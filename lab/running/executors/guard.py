"""Cell processes die with the worker process that started them.

The runner starts every cell process in a session of its own, so that a timeout kills the cell
and its children as one group. That also lets a cell outlive its parent: when a Ray task is
force-cancelled (Ctrl-C) or its worker crashes, the worker is killed outright and the runner
never gets to kill its cell, which would then go on timing itself on cores that the scheduler
hands to the next cell (or to the retry of the same one).

So a task runs its cells under `cells_die_with_this_process()`: a small guard process, in its
own session (outside the worker's process group, which Ray kills with the worker), waits on a
pipe from the worker. The worker writes "done" when the task ends normally; if the pipe closes
without it, the worker died, and the guard kills every process group whose environment carries
the task's token (each cell process inherits it from the worker's environment at its start),
then removes the task's scratch folder: the cells' spec, log, compile cache and temp files,
which the killed worker's runner never got to remove (lab.cell.launch makes its scratch folders in
it, through SCRATCH_ROOT_VAR).

Linux only (it reads /proc); elsewhere the context manager does nothing.

    python -m lab.running.executors.guard TOKEN FOLDER   # the guard, started by the context manager
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.cell.launch import SCRATCH_ROOT_VAR

TOKEN_VAR = "LAB_CELL_OWNER"
DONE = b"done\n"


@contextmanager
def cells_die_with_this_process() -> Iterator[str | None]:
    """Processes started inside carry a token; if this process dies before the block ends, a
    guard kills them. Yields the token (None where there is no /proc to find them by)."""
    if not Path("/proc/self/environ").exists():
        yield None
        return
    token = secrets.token_hex(8)
    folder = tempfile.mkdtemp(prefix="lab-task-")
    # started before the token is set: the guard must not find (and kill) itself
    guard = subprocess.Popen([sys.executable, "-m", "lab.running.executors.guard", token, folder],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    previous = {var: os.environ.get(var) for var in (TOKEN_VAR, SCRATCH_ROOT_VAR)}
    os.environ[TOKEN_VAR], os.environ[SCRATCH_ROOT_VAR] = token, folder
    try:
        yield token
    finally:
        for var, value in previous.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        shutil.rmtree(folder, ignore_errors=True)
        try:
            guard.stdin.write(DONE)
            guard.stdin.close()
        except OSError:  # the guard is gone already: nothing left to tell it
            pass
        guard.wait()


def marked_processes(token: str) -> list[int]:
    """Pids of the processes whose environment holds TOKEN_VAR=token."""
    needle = f"{TOKEN_VAR}={token}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # exited meanwhile, or another user's
            continue
        if needle in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def kill_marked(token: str) -> list[int]:
    """SIGKILL the process group of every marked process, and the process itself (a child may
    have left its group); returns the pids found."""
    pids = [pid for pid in marked_processes(token) if pid != os.getpid()]
    for pid in pids:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return pids


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: python -m lab.running.executors.guard TOKEN [FOLDER]", file=sys.stderr)
        return 2
    told = sys.stdin.buffer.read()  # returns at EOF: the worker closed the pipe, or died
    if told == DONE:
        return 0
    kill_marked(argv[1])
    if len(argv) == 3:  # after the kill: nothing writes in it any more
        shutil.rmtree(argv[2], ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
