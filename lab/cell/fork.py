"""Cell processes forked from a process that has already imported their framework.

A fresh torch-compile cell process spent ~3 s on an idle 2-core CPU importing torch and
torch._dynamo (what `torch.compile` imports), and a compiled cell has two such processes (the
timed one and the warm-cache one): that import, paid again by every process of every cell, was
most of the lab's own overhead per compiled cell. A fork server (`python -m lab.cell.main
--fork-server MODULE...`) imports the cell's modules once and then only forks: each cell
process is a child of it, in its own session, started where a fresh process would be after
its imports, with the cell's own environment, temp folder and log.

What the child shares with a fresh process, so its numbers are the same ones:
- The server imports and does nothing else: no step, no compile, no framework thread pool,
  so nothing is cached in memory that a fresh process would not have after the same imports.
  A cold compile is cold (its on-disk caches are the cell's empty folder, which Inductor
  reads from the environment when it first compiles, not at import) and a warm one is the
  first call of a process that has never compiled.
- The environment at import is the cell's: a server is kept per environment, less the
  variables that differ between the processes of one cell (its compile-cache folder, TMPDIR).
  Those two are read at import too: torch._dynamo keeps a cache path made from
  TORCHINDUCTOR_CACHE_DIR, and Inductor its precompiled-header folder from TMPDIR, as
  module constants. So the server imports with both pointing at links in its folder
  (`tmp`, `cache`), and each child, before its cell starts, points the links at its own
  folders: paths taken at import lead where a fresh process's would (one child at a time).
- Only torch-eager and torch-compile cells on the CPU fork (`forkable`): forking JAX and
  TensorFlow processes, whose runtimes start threads that a fork does not copy, and CUDA
  cells was not checked, so they keep fresh processes. `LAB_CELL_FORK=0` turns it off.

What differs, and is said: the process's RSS after import includes torch._dynamo for compiled
cells (imported before the cell's first phase, not during its setup), and the run stores how
each cell's processes started (`cell_process`).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import OrderedDict
from pathlib import Path

from lab.core import cpu_time

FORK_VAR = "LAB_CELL_FORK"  # "0": every cell process starts fresh
SERVER_FLAG = "--fork-server"
LINKS = ("tmp", "cache")  # what the server's TMPDIR and compile-cache variables point at
MAX_SERVERS = 2  # one per environment in use: eager and compiled cells of a suite alternate
# torch backends whose cells fork, and what their processes import before their first phase:
# what lab.cell.main's `import` phase imports (torch), and what its `setup` imports:
# torch.compile() imports torch._dynamo and Inductor (595 modules on torch 2.13, of which
# torch._inductor.compile_fx's import is a subset), and a suite model's build, transformers.
# The first call's own imports stay in the first call, timed as in a fresh process.
PRELOAD = {"torch-eager": ("lab.cell.main", "lab.compile.torch", "torch"),
           "torch-compile": ("lab.cell.main", "lab.compile.torch", "torch", "torch._dynamo",
                             "torch._inductor.compile_fx")}
SUITE_PRELOAD = {"hf": ("transformers", "transformers.modeling_utils",
                        "lab.workloads.suites.hf")}


def forkable(spec) -> tuple[str, ...] | None:
    """The modules a fork server imports for this cell's processes; None: fresh processes."""
    from lab.cell.spec import CellPass

    if os.environ.get(FORK_VAR, "1") == "0" or spec.device != "cpu":
        return None
    if (spec.env or {}).get("python"):  # another interpreter (lab run --env): its own imports
        return None
    if spec.cell_pass not in (CellPass.TIMED, CellPass.FIRST_CALL):
        return None  # tracing and counting run under their own tools, started fresh
    from lab.workloads import suites

    modules = PRELOAD.get(spec.backend)
    if modules is None:
        return None
    return modules + SUITE_PRELOAD.get(suites.suite_of(spec.workload), ())


class ServerGone(Exception):
    """The fork server died or did not start: the cell runs in a fresh process instead, or,
    when the server's imports outlived the cell's timeout (`timed_out`), ends as `timeout`."""

    def __init__(self, message: str, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out


class _Lines:
    """Lines read from a pipe with a deadline (a buffered reader would hide lines from
    select)."""

    def __init__(self, fd: int):
        self.fd, self.buffer = fd, b""

    def read(self, deadline: float | None) -> dict | None:
        """The next JSON line; None at the deadline; ServerGone at end of file."""
        while b"\n" not in self.buffer:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], wait)
            if not ready:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise ServerGone("the fork server exited")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


class Server:
    """The parent's handle on one fork server: starts it, asks it for cell processes."""

    def __init__(self, modules: tuple[str, ...], env: dict, timeout_s: float, scratch_root,
                 cache_env=None):
        self.folder = Path(tempfile.mkdtemp(prefix="lab-fork-", dir=scratch_root))
        for link in LINKS:  # until a child points them at its own folders
            (self.folder / f"idle-{link}").mkdir()
            (self.folder / link).symlink_to(self.folder / f"idle-{link}")
        env = dict(env, TMPDIR=str(self.folder / "tmp"),
                   **(cache_env(str(self.folder / "cache")) if cache_env else {}))
        with open(self.folder / "log.txt", "w") as log:
            self.proc = subprocess.Popen(
                # its folder on its command line, and so on its cell processes': what the
                # lab left running can be found by its temp folder
                [sys.executable, "-m", "lab.cell.main", SERVER_FLAG, str(self.folder),
                 *modules],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
                start_new_session=True)  # a Ctrl-C at the terminal is the parent's to handle
        cpu_time.add_helper(self.proc.pid)  # its CPU and its cells' are the lab's own
        self.lines = _Lines(self.proc.stdout.fileno())
        try:
            ready = self.lines.read(time.monotonic() + timeout_s)
        except ServerGone:
            ready = {}
        if not ready or not ready.get("ready"):
            self.close()
            raise ServerGone(f"the fork server did not start: {self.log_tail()}",
                             timed_out=ready is None)

    def log_tail(self) -> str:
        try:
            return (self.folder / "log.txt").read_text(errors="replace").strip()[-300:]
        except OSError:
            return ""

    def run(self, argv: list[str], env: dict, log_path: Path, timeout_s: float,
            since_s: float = 0.0, cache_dir: str | None = None) -> int:
        """One cell process, forked: its exit code (negative: the signal that ended it).
        subprocess.TimeoutExpired when it outlives `timeout_s` (it is killed); on any
        exception, the process group is killed and the server closed before it propagates.
        `since_s`: seconds the parent already spent on this process (starting the server),
        which the cell's budget counts as a fresh process's counts its imports; `cache_dir`:
        the process's compile-cache folder (None: the framework's default under TMPDIR)."""
        deadline = time.monotonic() + timeout_s
        pid = None
        try:
            request = {"argv": argv, "env": env, "log": str(log_path), "since_s": since_s,
                       "cache_dir": cache_dir}
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
            started = self.lines.read(deadline)
            if started is None:
                raise subprocess.TimeoutExpired(argv, timeout_s)
            pid = started["pid"]
            ended = self.lines.read(deadline)
            if ended is None:
                raise subprocess.TimeoutExpired(argv, timeout_s)
        except BaseException as exc:
            if pid is not None:
                _kill_group(pid)
            self.close()
            if isinstance(exc, (OSError, ValueError)):
                raise ServerGone(f"the fork server failed: {exc}") from exc
            raise
        _kill_group(pid)  # helpers the cell left behind (it exits without teardown)
        return int(ended["returncode"])

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        cpu_time.remove_helper(self.proc.pid)  # now in this process's RUSAGE_CHILDREN
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        shutil.rmtree(self.folder, ignore_errors=True)


def _kill_group(pid: int) -> None:
    cpu_time.count_group_leftovers(pid)  # nobody waits for them: their CPU is counted here
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


_servers: OrderedDict[tuple, Server] = OrderedDict()


def server_for(modules: tuple[str, ...], env: dict, per_cell: set[str], timeout_s: float,
               scratch_root, cache_env=None) -> Server:
    """The running server for this environment (less the per-cell variables), started if
    needed; ServerGone if it cannot start (the cell then runs fresh, and says why if it
    fails) or does not start within `timeout_s`. `cache_env(folder)`: the backend's
    variables that point its compile caches at a folder."""
    key = (modules, tuple(sorted((k, v) for k, v in env.items() if k not in per_cell)))
    server = _servers.get(key)
    if server is not None and server.proc.poll() is None:
        _servers.move_to_end(key)
        return server
    _servers.pop(key, None)
    while len(_servers) >= MAX_SERVERS:
        _servers.popitem(last=False)[1].close()
    base = {k: v for k, v in env.items() if k not in per_cell}
    server = Server(modules, base, timeout_s, scratch_root, cache_env)
    _servers[key] = server
    return server


def discard(server: Server) -> None:
    for key, known in list(_servers.items()):
        if known is server:
            del _servers[key]
    server.close()


def close_all() -> None:
    """Stop every fork server (the end of a run, and the lab's exit)."""
    while _servers:
        _servers.popitem()[1].close()


atexit.register(close_all)


# ------------------------------------------------------------------ inside the fork server


def serve(args: list[str], cell_main) -> int:
    """The fork server's loop (args: its folder, then the modules): import the modules, say
    ready, then fork one cell process per request line on stdin and report its pid and exit
    code on stdout, until stdin closes."""
    import importlib

    global _FOLDER
    _FOLDER, modules = Path(args[0]), args[1:]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it, by its group
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 1)  # nothing the imports print may reach the reply pipe
    for name in modules:
        importlib.import_module(name)
    reply.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            reply.close()
            _child(request, cell_main)  # never returns
        reply.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        reply.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
    return 0


_FOLDER: Path | None = None  # the server's folder, which holds the links


def _point_links(tmp: str, cache_dir: str | None) -> None:
    """Point the server's links at this process's folders: `tmp` at its TMPDIR, `cache` at its
    compile-cache folder, or, without one, where Inductor's default lies under its TMPDIR (what
    a fresh process's import would have taken)."""
    if cache_dir is None:
        defaults = sys.modules.get("torch._inductor.runtime.cache_dir_utils")
        cache_dir = defaults.default_cache_dir() if defaults else tmp
    for link, target in (("tmp", tmp), ("cache", cache_dir)):
        os.makedirs(target, exist_ok=True)
        staged = _FOLDER / f".{link}-{os.getpid()}"
        os.symlink(target, staged)
        os.replace(staged, _FOLDER / link)  # at once: no moment without the link


def _child(request: dict, cell_main) -> None:
    """A cell process: its own session (the parent kills its group on a timeout), the cell's
    environment and log, default signals, then lab.cell.main as a fresh process runs it."""
    code = 1
    try:
        os.setsid()
        # as in a fresh interpreter (which ignores SIGPIPE, as the server does)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.environ.clear()
        os.environ.update(request["env"])
        tempfile.tempdir = None  # read TMPDIR again: the cell's own temp folder
        _point_links(request["env"]["TMPDIR"], request.get("cache_dir"))
        sys.argv = [sys.argv[0], *request["argv"]]
        main_module = sys.modules["__main__"]
        # the budget counts from the process's start, as in a fresh process: from the fork,
        # or from the server's start when the parent started the server for this process
        main_module._PROCESS_START = time.perf_counter() - float(request.get("since_s", 0))
        code = cell_main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the log says what, the parent maps the exit code
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
