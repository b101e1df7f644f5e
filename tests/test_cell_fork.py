"""Cell processes forked from a fork server (lab.cell.fork): each one sees its own cell's
environment and temp folder, runs in its own session, counts its budget from its fork, is
killed at its timeout, and the run's wall breakdown still adds up to the cell's wall."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import pytest

from lab.cell import fork
from lab.cell import launch as runner
from lab.cell.spec import CellOutcome, CellPass, CellResult, CellSpec
from lab.core import cpu_time
from lab.running.writer import wall_breakdown

# the factory writes what its process sees, then fails the cell at once (no timing needed)
PROBE = """
    import json, os, sys, tempfile, time
    BURNER = ("import sys, time\\nwhile time.process_time() < float(sys.argv[1]): pass\\n"
              "open(sys.argv[2], 'w').close()\\ntime.sleep(600)")
    def make():
        main = sys.modules["__main__"]
        # paths torch takes at import (the server's import, for a forked process)
        import torch._dynamo.package, torch._inductor.codecache
        seen = {"tmpdir": tempfile.gettempdir(), "cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
                "headers": os.path.realpath(torch._inductor.codecache._HEADER_DIR),
                "dynamo_cache": os.path.realpath(torch._dynamo.package.DynamoCache._path_prefix),
                "pid": os.getpid(), "ppid": os.getppid(), "sid": os.getsid(0),
                "since_start": time.perf_counter() - main._PROCESS_START,
                "main": main.__spec__.name}
        with open(os.environ["PROBE_OUT"], "a") as f:
            f.write(json.dumps(seen) + "\\n")
        burn_file = os.environ["PROBE_OUT"] + ".burn"  # not a variable: one server for all
        burn = float(open(burn_file).read()) if os.path.exists(burn_file) else 0.0
        if burn:  # CPU work here, and in a helper left running as compile workers are
            import subprocess
            flag = os.environ["PROBE_OUT"] + ".burnt"
            subprocess.Popen([sys.executable, "-c", BURNER, str(burn), flag])
            t0 = time.process_time()
            while time.process_time() - t0 < burn:
                pass
            while not os.path.exists(flag):
                time.sleep(0.01)
        if os.environ.get("PROBE_SLEEP"):
            time.sleep(float(os.environ["PROBE_SLEEP"]))
        raise RuntimeError("probe done")
    """


def _spec(workload: str, backend: str = "torch-compile", **more) -> CellSpec:
    return CellSpec(workload=workload, backend=backend, option=None, mode="infer",
                    shape={}, precision="fp32", device="cpu", threads=1, repeats=2, **more)


@pytest.fixture
def probe(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text(textwrap.dedent(PROBE))
    out = tmp_path / "seen.jsonl"
    yield f"{path}:make", out
    fork.close_all()


@pytest.mark.slow
def test_forked_cell_processes_see_their_own_cell_and_share_one_server(probe, tmp_path):
    workload, out = probe
    spec = _spec(workload)  # its server imports torch._dynamo and Inductor
    env = {"PROBE_OUT": str(out)}
    first, _ = runner.run_cell_process(spec, 120, cache_dir=str(tmp_path / "c1"), env_extra=env)
    second, _ = runner.run_cell_process(spec.replace(cell_pass=CellPass.FIRST_CALL), 120,
                                        cache_dir=str(tmp_path / "c2"), env_extra=env)
    assert first.status == second.status == "run_error", (first.reason, second.reason)
    assert "probe done" in first.reason and first.started == second.started == "forked"
    a, b = (json.loads(line) for line in out.read_text().splitlines())
    assert a["cache"] == str(tmp_path / "c1") and b["cache"] == str(tmp_path / "c2")
    assert a["tmpdir"] != b["tmpdir"] and "lab-cell-" in a["tmpdir"]
    # what the server's import took from TMPDIR and the cache folder leads to each cell's own
    for seen, cache in ((a, tmp_path / "c1"), (b, tmp_path / "c2")):
        assert seen["dynamo_cache"] == os.path.realpath(cache / "dynamo")
        assert seen["headers"].startswith(os.path.realpath(seen["tmpdir"]) + os.sep)
    assert a["ppid"] == b["ppid"] != os.getpid()  # one server forked both
    assert a["sid"] == a["pid"] and b["sid"] == b["pid"]  # each its own session
    assert a["main"] == "lab.cell.main"
    # the budget counts from the fork, not from the server's start long before
    assert 0 <= b["since_start"] < 30
    # another environment at import time is another server
    other, _ = runner.run_cell_process(spec.replace(backend="torch-eager"), 120,
                                       env_extra={**env, "SOME_SETTING": "1"})
    c = json.loads(out.read_text().splitlines()[-1])
    assert other.started == "forked" and c["ppid"] != a["ppid"]


def _dead(pid: int) -> bool:
    """Gone, or a zombie: once its server is killed the cell is reaped by whoever adopts it
    (pid 1 of a container may reap late or never), and a zombie still answers kill(pid, 0)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


@pytest.mark.slow
def test_a_forked_cell_past_its_timeout_is_killed_and_the_server_replaced(probe):
    workload, out = probe
    spec = _spec(workload, backend="torch-eager")
    env = {"PROBE_OUT": str(out)}
    runner.run_cell_process(spec, 120, env_extra=env)  # the server is up
    t0 = time.perf_counter()
    result, _ = runner.run_cell_process(spec, 3, env_extra={**env, "PROBE_SLEEP": "60"})
    assert result.status == "timeout" and time.perf_counter() - t0 < 30
    pid = json.loads(out.read_text().splitlines()[-1])["pid"]
    deadline = time.monotonic() + 10
    while not _dead(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _dead(pid), f"the timed-out cell process {pid} still runs"
    again, _ = runner.run_cell_process(spec, 120, env_extra=env)
    assert again.started == "forked" and "probe done" in again.reason


@pytest.mark.slow
@pytest.mark.parametrize("forked", [True, False])
def test_a_cells_cpu_and_its_left_behind_helpers_count_as_the_labs_own(probe, monkeypatch,
                                                                      forked):
    """What a cell process and the helpers it leaves (compile workers) burn is the lab's work,
    not other load: else every cell on an idle machine reads as busy (lab.core.cpu_time)."""
    workload, out = probe
    monkeypatch.setenv(fork.FORK_VAR, "1" if forked else "0")
    spec = _spec(workload, backend="torch-eager")
    runner.run_cell_process(spec, 120, env_extra={"PROBE_OUT": str(out)})  # a server is up

    def counted(burn: float) -> float:
        (out.parent / (out.name + ".burn")).write_text(str(burn))
        before = cpu_time.own_seconds()
        result, _ = runner.run_cell_process(spec, 120, env_extra={"PROBE_OUT": str(out)})
        assert "probe done" in result.reason
        assert result.started == ("forked" if forked else "fresh")
        return cpu_time.own_seconds() - before

    plain, burnt = counted(0.0), counted(2.0)
    # 2 s in the cell and 2 s in its helper, each timed by its own CPU clock: 4 s more than
    # the same cell without them (2 s more if the helper were not counted); the rest of the
    # cell (its imports when fresh) varies by tenths of a second
    assert burnt - plain >= 3.4, (plain, burnt)


def test_only_torch_cpu_cells_of_the_timed_passes_fork(monkeypatch):
    assert "torch._dynamo" in fork.forkable(_spec("mlp"))
    assert "torch._dynamo" not in fork.forkable(_spec("mlp", backend="torch-eager"))
    assert "transformers" in fork.forkable(_spec("hf/bert"))
    assert fork.forkable(_spec("mlp", backend="jax-jit")) is None
    assert fork.forkable(_spec("mlp").replace(device="cuda")) is None
    assert fork.forkable(_spec("mlp").replace(cell_pass=CellPass.TRACE)) is None
    monkeypatch.setenv(fork.FORK_VAR, "0")
    assert fork.forkable(_spec("mlp")) is None


def test_the_breakdown_adds_up_to_the_cells_wall():
    result = CellResult(phases_s={"import": 0.01, "setup": 0.2, "first_call": 5.0,
                                  "warmup": 1.0, "sampling": 0.5})
    warm = CellResult(first_call_s=1.5)
    outcome = CellOutcome(_spec("mlp"), "torch-compile", result, wall_s=9.0, warm=warm,
                          process_wall_s=[6.9, 2.0])
    parts = wall_breakdown(outcome)
    named = sum(v for k, v in parts.items() if k != "total")
    # the parent's own work between processes (spec and scratch folders) is the slack
    assert abs(named - parts["total"]) <= 0.2
    assert parts["process_start_and_exit"] == pytest.approx(0.19)
