"""Run folders and results.json in pytest-benchmark's schema (the fingerprint beside them:
lab.store.provenance).

A run is `profiles/<machine-id>/<run-id>/` holding `results.json` (readable by
`pytest-benchmark compare`), `fingerprint.json`, and whatever traces the run made. Every write
goes to a temporary file in the same folder and is renamed into place, so a crash or Ctrl-C
never leaves half a file. Knows no framework.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import secrets
import subprocess
import tempfile
from pathlib import Path

import lab
from lab.store import provenance
from lab.store.provenance import slug
from lab.store.reader import RESULTS  # noqa: F401  (the writer and the reader name one file)

FINGERPRINT = "fingerprint.json"


def _umask() -> int:
    """The process's umask. Linux shows it in /proc; elsewhere reading it means setting it for
    a moment, which a thread creating a file at that instant would see."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write `data` to a temporary file beside `path` and rename it into place: a reader sees
    the old file or the new one, never half of one. The file gets `mode`, by default the mode
    a plain open() would give (0666 less the umask): mkstemp's 0600 would hide runs from the
    user's group. The rename replaces whatever `path` is: a path a user names goes through
    lab.store.outputs, which renames only over a regular file or a new name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False, default=str) + "\n")


def new_run_id(label: str = "") -> str:
    """Time to the second, the label, and a short random suffix: two runs started in the same
    second into one folder get different ids (create_run_dir makes sure of it)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    suffix = secrets.token_hex(2)
    return f"{stamp}-{slug(label)}-{suffix}" if label else f"{stamp}-{suffix}"


def create_run_dir(parent: Path, label: str = "", attempts: int = 20) -> Path:
    """A new, empty run folder under `parent`, created exclusively (never one that another
    run made first). OSError when `parent` cannot hold folders (a file, read-only, full)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for _ in range(attempts):
        path = parent / new_run_id(label)
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free run id under {parent} after {attempts} tries")


# ---------------------------------------------------------------- results.json

def pytest_benchmark_stats(samples_s: list[float], iterations: int) -> dict:
    """pytest-benchmark's own stats block (its Stats class), plus the raw samples."""
    from pytest_benchmark.stats import Stats

    stats = Stats()
    for value in samples_s:
        stats.update(value)
    block = stats.as_dict()
    block["data"] = list(samples_s)
    block["iterations"] = iterations
    return block


def machine_info(fp: dict) -> dict:
    from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info

    info = pytest_benchmark_generate_machine_info()
    info["lab_machine_id"] = provenance.machine_id(fp["hardware"])
    info["lab_hardware"] = fp["hardware"]
    return info


def commit_info(workload_sources=()) -> dict:
    """The lab's own commit (pytest-benchmark's commit_info), and under `user_commits` the
    commit of the repository holding each user workload (`path/file.py:factory`) among
    `workload_sources`: a user's model run is reproducible only with the user's code."""
    from pytest_benchmark.utils import get_commit_info

    cwd = os.getcwd()
    try:  # pytest-benchmark reads git from the working directory: use the project's
        os.chdir(Path(lab.__file__).resolve().parent.parent)
        info = get_commit_info("perflab")
    finally:
        os.chdir(cwd)
    users = {source: workload_commit(source) for source in workload_sources}
    users = {source: commit for source, commit in users.items() if commit is not None}
    return {**info, "user_commits": users} if users else info


@functools.lru_cache(maxsize=64)
def workload_commit(source: str) -> dict | None:
    """Git state of the repository holding a user workload's file (`path/file.py:factory`),
    read once per process: {id, dirty, branch, project, file (relative to the repository)};
    id `unversioned` when the file is in no repository; None for a built-in workload. Paths
    stay relative: a stored run must not carry this machine's folders."""
    path_text, sep, factory = source.rpartition(":")
    if not sep or not path_text.endswith(".py") or not factory:
        return None
    file = Path(path_text).resolve()

    def git(*args) -> str:
        return subprocess.run(["git", "-C", str(file.parent), *args], capture_output=True,
                              text=True, timeout=10).stdout.strip()

    try:
        root = git("rev-parse", "--show-toplevel")
        if not root:
            return {"id": "unversioned", "dirty": None, "file": file.name}
        return {"id": git("rev-parse", "--verify", "-q", "HEAD") or "unversioned",
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
                "branch": git("rev-parse", "--abbrev-ref", "HEAD") or None,
                "project": Path(root).name,
                "file": file.relative_to(Path(root).resolve()).as_posix()}
    except (OSError, subprocess.SubprocessError, ValueError):
        return {"id": "unversioned", "dirty": None, "file": file.name}


def results_document(fp: dict, benchmarks: list[dict], unmeasured: list[dict], run: dict,
                     cached_info: dict | None = None) -> dict:
    import pytest_benchmark

    cached_info = cached_info or {}
    return {
        "machine_info": cached_info.get("machine_info") or machine_info(fp),
        "commit_info": cached_info.get("commit_info") or commit_info(),
        "benchmarks": benchmarks,
        "datetime": run.get("started"),
        "version": pytest_benchmark.__version__,
        "lab": {**run, "unmeasured": unmeasured},
    }
