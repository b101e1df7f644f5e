"""The run loop under faults (docs/contract.md): an unreachable Ray cluster, signals during a Ray
run, Ctrl-C during the Python API's run, the API's bad input, temp folders on failure paths,
and progress lines when output is piped. Through the real command line or the API, as a user
meets them. Cells are small (mlp at batch 2, 3 samples, torch-eager).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
from cli_helpers import ROOT, factory, lab, one_line_error, slow_factory

from lab import api
from lab.core.errors import UsageError
from lab.store import reader as results

COMMON = ["--repeats", "3", "--device", "cpu", "--threads", "1"]
SMALL = ["--batch", "2", *COMMON]
HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (perflab[ray])")



def wait_for_first_cell(out: Path, proc: subprocess.Popen, seconds: float,
                        skip_if: str | None = None) -> dict:
    """The stored run once its first measured cell is in it; a skip when the lab ended with
    `skip_if` in its one-line refusal (a machine too loaded to start what the test needs)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        files = list(out.glob("*/*/results.json"))
        if files:
            doc = json.loads(files[0].read_text())
            if doc["benchmarks"]:
                return doc
        if proc.poll() is not None:
            output = proc.stdout.read()
            if skip_if and proc.returncode == 2 and skip_if in output:
                pytest.skip(f"{output.strip().splitlines()[-1]} (load {os.getloadavg()[0]:.1f})")
            pytest.fail(f"lab exited {proc.returncode}: {output[-3000:]}")
        time.sleep(0.2)
    pytest.fail("the first cell never finished")


# ---------------------------------------------------------------- Ray: unreachable, signals


@needs_ray
@pytest.mark.parametrize("how", ["flag", "environment"])
def test_an_unreachable_ray_cluster_is_one_line_in_seconds(tmp_path, how):
    out = tmp_path / "out"
    flag = ["--ray-address", "127.0.0.1:1"] if how == "flag" else []
    env = {"RAY_ADDRESS": "127.0.0.1:1"} if how == "environment" else {}
    t0 = time.monotonic()
    proc = lab("run", "--workload", "mlp", "--backend", "torch-eager", *SMALL, "--out", str(out),
               "--executor", "ray", *flag, env=env, timeout=120)
    took = time.monotonic() - t0
    line = one_line_error(proc)
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in line
    assert ("--ray-address" if how == "flag" else "RAY_ADDRESS") in line
    # the probe's 5 s bound plus starting Python and importing Ray on a loaded machine; the
    # unbounded ray.init retried for more than 180 s
    assert took < 60, took
    assert not out.exists()


@pytest.fixture
def silent():
    """An address that accepts TCP connections and never answers: ray.init waited on such
    an address for minutes, in C++ code where signals went unanswered."""
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def accept():
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:  # closed
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for conn in accepted:
        conn.close()


GRPC_SERVER = """
import concurrent.futures, sys, threading, grpc
class Mute(grpc.GenericRpcHandler):
    def service(self, details):
        return grpc.unary_unary_rpc_method_handler(lambda r, c: threading.Event().wait())
server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
if sys.argv[1] == "mute":
    server.add_generic_rpc_handlers((Mute(),))
print(server.add_insecure_port("127.0.0.1:0"), flush=True)
server.start()
server.wait_for_termination()
"""


@pytest.fixture
def grpc_server():
    """A gRPC server in a process of its own (gRPC's threads stay out of the test worker): `mute`
    (every request waits unanswered: the handshake done, then silence) or `empty` (serves no
    method); yields its address."""
    procs = []

    def start(kind: str) -> str:
        proc = subprocess.Popen([sys.executable, "-c", GRPC_SERVER, kind], text=True,
                                stdout=subprocess.PIPE)
        procs.append(proc)
        return f"127.0.0.1:{int(proc.stdout.readline())}"

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


@needs_ray
@pytest.mark.parametrize("kind, words", [
    ("mute", "it did not answer a cluster request within 5 s"),
    ("empty", "it does not serve Ray's cluster requests")])
def test_a_grpc_server_that_is_no_ray_cluster_is_one_line_in_seconds(tmp_path, grpc_server,
                                                                     kind, words):
    """A server that completes the HTTP/2 handshake and then never answers held ray.init for
    minutes: the probe asks it one GCS request with a deadline."""
    address = grpc_server(kind)
    t0 = time.monotonic()
    proc = lab("run", "--workload", "mlp", "--backend", "torch-eager", *SMALL, "--out",
               str(tmp_path / "out"), "--executor", "ray", "--ray-address", address,
               timeout=180)
    line = one_line_error(proc)
    assert f"{address} (--ray-address) is not a Ray cluster that answers: {words}" in line
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "out").exists()


@needs_ray
def test_an_address_that_never_answers_is_one_line_in_seconds(tmp_path, silent):
    t0 = time.monotonic()
    proc = lab("run", "--workload", "mlp", "--backend", "torch-eager", *SMALL, "--out",
               str(tmp_path / "out"), "--executor", "ray", "--ray-address", silent,
               timeout=180)
    took = time.monotonic() - t0
    line = one_line_error(proc)  # not Ray's retry lines
    assert f"cannot reach the Ray cluster at {silent} (--ray-address): no answer within 5 s" \
        in line
    assert took < 60, took


def ray_processes(marker: str) -> list[int]:
    """Live processes whose command line holds `marker` (Ray's, under its own temp folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.long  # starts a local Ray: races its start on a busy machine
@needs_ray
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_sigterm_while_a_local_ray_starts_is_answered_in_seconds(tmp_path):
    """ray.init installs Ray's driver handler (exit 15, nothing said) while it runs; a SIGTERM
    then must still end the run as the lab's handler does, and stop what Ray started."""
    ray_tmp = tempfile.mkdtemp(prefix="ray-")  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.cli", "run", "--workload", "mlp", "--backend", "torch-eager",
         *SMALL, "--out", str(tmp_path / "out"), "--executor", "ray"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        end = time.monotonic() + 120
        while not ray_processes(ray_tmp) and time.monotonic() < end:  # inside ray.init
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        assert ray_processes(ray_tmp), "Ray never started its processes"
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    time.sleep(1.0)
    left = ray_processes(ray_tmp)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    assert err.strip().splitlines()[-1] == "lab: interrupted", err[-2000:]
    # Ray's shutdown of the processes it started: 4 s measured under a load of 10 on 2 cores
    assert took < 20, took
    assert left == []
    assert not (tmp_path / "out").exists()


def test_a_ray_address_without_the_ray_executor_is_refused(tmp_path):
    line = one_line_error(lab("run", "--workload", "mlp", "--backend", "torch-eager", *SMALL,
                              "--out", str(tmp_path), "--ray-address", "127.0.0.1:6379"))
    assert "--ray-address 127.0.0.1:6379" in line and "--executor ray" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.long  # starts a local Ray and runs a cell on it
@needs_ray
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc/stat")
def test_sigterm_stops_a_ray_run_like_ctrl_c_and_the_node_samples_its_load(tmp_path):
    """Ray's driver handler made SIGTERM exit 15 (or abort) and leave the cells' folders; the
    lab's handler must stay in place. The finished cell carries the node's load sample."""
    slow = slow_factory(tmp_path, 0.5)
    temp = tmp_path / "tmp"
    temp.mkdir()
    ray_tmp = tempfile.mkdtemp(prefix="ray-")  # Ray's socket paths must stay short
    out = tmp_path / "out"
    env = {**os.environ, "TMPDIR": str(temp), "RAY_TMPDIR": ray_tmp,
           "RAY_agent_register_timeout_ms": "120000"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.cli", "run", "--workload", f"mlp,{slow}", "--backend",
         "torch-eager", *SMALL, "--out", str(out), "--executor", "ray"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        doc = wait_for_first_cell(out, proc, 240, skip_if="cannot start or reach a Ray cluster")
        time.sleep(2.0)  # the slow cell's process is up
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=90)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 130, output[-3000:]
    assert "interrupted" in output
    assert took < 60, took  # the grace the tasks get to stop their cells, and Ray's shutdown
    assert sorted(p.name for p in temp.glob("lab-*")) == []
    [first] = doc["benchmarks"]
    info = first["extra_info"]
    assert info["workload"] == "mlp" and info["node"]["hostname"]
    assert isinstance(info["machine_busy"], bool) and info["other_load_cores"] >= 0
    final = json.loads(next(out.glob("*/*/results.json")).read_text())
    assert final["lab"]["complete"] is False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc for left-over processes")
def test_two_quick_ctrl_cs_still_end_in_130_with_the_clean_up_done(tmp_path):
    """The second Ctrl-C used to kill the lab by SIGINT in the middle of its clean-up."""
    slow = slow_factory(tmp_path, 0.5)
    temp = tmp_path / "tmp"
    temp.mkdir()
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.cli", "run", "--workload", f"mlp,{slow}", "--backend",
         "torch-eager", *SMALL, "--out", str(out)],
        cwd=ROOT, env={**os.environ, "TMPDIR": str(temp)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_first_cell(out, proc, 180)
        time.sleep(1.0)  # the slow cell's process is up
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, output[-3000:]
    assert "interrupted" in output
    assert list(temp.iterdir()) == []
    doc = json.loads(next(out.glob("*/*/results.json")).read_text())
    assert doc["lab"]["complete"] is False and len(doc["benchmarks"]) == 1


# ---------------------------------------------------------------- the Python API


@pytest.mark.parametrize("kwargs, expect", [
    ({"repeats": 0}, "--repeats: expected a positive integer, got 0"),
    ({"repeats": "5"}, "--repeats: expected a positive integer, got '5'"),
    ({"repeats": True}, "--repeats: expected a positive integer, got True"),
    ({"timeout_s": -1}, "--timeout: expected a positive number, got -1"),
    ({"timeout_s": float("nan")}, "--timeout: expected a positive number, got nan"),
    ({"processes": 0}, "--processes: expected a positive integer, got 0"),
    ({"threads": 0}, "--threads: expected a positive integer, got 0"),
    ({"device": "tpu"}, "unknown device 'tpu'; valid: cpu, cuda, auto"),
    ({"executor": "slurm"}, "unknown executor 'slurm'; valid: local, ray"),
    ({"ray_address": "127.0.0.1:6379"}, "--ray-address 127.0.0.1:6379: cells run on a Ray"),
])
def test_the_api_refuses_what_the_command_line_refuses_before_anything_runs(tmp_path, kwargs,
                                                                             expect):
    with pytest.raises(UsageError) as caught:
        api.run("mlp", backends=["torch-eager"], out=str(tmp_path), **kwargs)
    assert str(caught.value).startswith(expect), str(caught.value)
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # no run folder, not even a fingerprint


@pytest.mark.slow
def test_ctrl_c_in_the_api_keeps_the_finished_cells_and_stops_the_callers_loop(tmp_path):
    slow = slow_factory(tmp_path, 0.5)
    out = tmp_path / "out"
    events = []

    timers = []

    def press_ctrl_c_once_a_cell_is_in(event):
        events.append(event)
        if event.status is not None and event.done == 1 and not timers:
            # the slow cell runs next (import, then 0.5 s a step); the runner kills its process
            timers.append(threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT)))
            timers[0].start()

    ran = []
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            for _ in range(3):  # a user's loop of runs: it must not go on after Ctrl-C
                ran.append(api.run(["mlp", slow], backends=["torch-eager"], device="cpu",
                                   repeats=3, threads=1, out=str(out),
                                   progress=press_ctrl_c_once_a_cell_is_in))
    finally:
        for timer in timers:
            timer.cancel()
    assert ran == []
    [path] = list(out.glob("*/*/results.json"))
    assert str(path.parent) in str(caught.value)
    doc = results.load(path)
    assert doc["lab"]["complete"] is False
    assert [c["workload"] for c in results.cells(doc)] == ["mlp"]
    assert events[0].cell == "mlp infer torch-eager" and events[-1].done == 1


# ---------------------------------------------------------------- temp folders


@pytest.mark.slow
def test_a_cell_process_that_dies_leaves_no_temp_folder(tmp_path):
    """Whatever a cell process makes in its temp folder goes with the cell's scratch folder,
    even when the process is killed before it can remove anything."""
    dying = factory(tmp_path, "dying", """
        import os, signal, sys, tempfile
        def make():
            folder = tempfile.mkdtemp(prefix="lab-onnx-")  # as a runtime's artifact folder
            open(os.path.join(folder, "model.onnx"), "w").write("x")
            main = getattr(sys.modules["__main__"], "__spec__", None)
            if main and main.name == "lab.cell.main":  # the factory's check, apart, passes
                os.kill(os.getpid(), signal.SIGKILL)
            return nn.Linear(4, 4), torch.randn(2, 4)
        """)
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = lab("run", "--workload", dying, "--backend", "torch-eager", *COMMON, "--out",
               str(tmp_path / "out"), env={"TMPDIR": str(temp)})
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert list(temp.iterdir()) == [], sorted(p.name for p in temp.iterdir())


@pytest.mark.slow
def test_a_conversion_that_fails_leaves_no_artifact_folder(tmp_path):
    """torch-export on a data-dependent branch: `convert_error`, and no lab-aoti-* left."""
    from lab import compile as backends

    if not backends.support(backends.BACKENDS["torch-export"], "cpu").ok:
        pytest.skip("torch-export does not run here")
    branchy = factory(tmp_path, "branchy", """
        class Branchy(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 4)
            def forward(self, x):
                return self.fc(x) if x.sum() > 0 else -self.fc(x)
        def make():
            torch.manual_seed(0)
            return Branchy(), torch.randn(2, 4)
        """)
    temp = tmp_path / "tmp"
    temp.mkdir()
    out = tmp_path / "out"
    proc = lab("run", "--workload", branchy, "--backend", "torch-export", *COMMON, "--out",
               str(out), env={"TMPDIR": str(temp)})
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    [cell] = results.cells(results.load(next(out.glob("*/*/results.json"))))
    assert cell["status"] == "convert_error", cell
    assert list(temp.iterdir()) == [], sorted(p.name for p in temp.iterdir())


# ---------------------------------------------------------------- progress


@pytest.mark.slow
def test_a_piped_run_prints_a_line_per_phase_and_cell_on_stderr(tmp_path):
    out = tmp_path / "out"
    proc = lab("run", "--workload", "mlp", "--backend", "torch-eager", "--mode", "infer,train",
               *SMALL, "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    cells = [line for line in lines if ": ok in " in line]
    assert [c.split(":")[0] for c in cells] == ["[1/2] mlp infer torch-eager",
                                                "[2/2] mlp train torch-eager"], lines
    phases = [line for line in lines if ": sampling " in line]
    assert len(phases) == 2 and all(p.endswith(" s") for p in phases), lines
    assert "[1/2]" not in proc.stdout  # stdout keeps the table alone


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="the guard reads /proc")
def test_a_killed_ray_worker_leaves_no_scratch_folder(tmp_path):
    """A force-cancelled task's worker dies before its runner removes the cells' folders; the
    guard removes them (the task's scratch root) once it has killed the cells."""
    script = tmp_path / "owner.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from lab.cell import launch as runner
        from lab.running.executors import guard
        with guard.cells_die_with_this_process():
            with runner.scratch("lab-cell-") as folder:
                (folder / "tmp").mkdir()
                print(folder, flush=True)
                time.sleep(120)
        """))
    temp = tmp_path / "tmp"
    temp.mkdir()
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(temp)})
    try:
        folder = Path(owner.stdout.readline().strip())
        assert folder.is_dir() and folder.parent.name.startswith("lab-task-")
        owner.kill()  # as Ray kills a worker: no finally runs
        owner.wait()
        end = time.monotonic() + 20
        while list(temp.iterdir()) and time.monotonic() < end:
            time.sleep(0.1)
        assert list(temp.iterdir()) == []
    finally:
        owner.kill()
        owner.wait()


@needs_ray
def test_the_labs_signal_handlers_survive_ray_init(monkeypatch):
    """ray.init installs a driver SIGTERM handler that exits 15 at once (no cancel, no clean-up,
    no "interrupted"); the executor puts the lab's back. ray.init is replaced by what it does to
    the handlers, so no cluster starts; the SIGTERM test above runs a real one."""
    import ray
    import ray._private.utils as ray_utils

    from lab import cli
    from lab.running.executors.ray import RayExecutor

    def init(**kwargs):  # the handler Ray's own init installs in the driver
        ray_utils.set_sigterm_handler(lambda signum, frame: sys.exit(signum))

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    previous = {sig: signal.signal(sig, cli._interrupt) for sig in (signal.SIGTERM,
                                                                      signal.SIGINT)}
    try:
        executor = RayExecutor(task=lambda job: None)
        executor._connect()
        executor._owns_connection = False  # nothing was started: nothing to shut down
        assert signal.getsignal(signal.SIGTERM) is cli._interrupt
        assert signal.getsignal(signal.SIGINT) is cli._interrupt
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@needs_ray
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="the load sample reads /proc/stat")
def test_a_ray_task_samples_the_load_of_its_node(monkeypatch):
    """The task body a Ray worker runs, here in this process (Ray's runtime context stands in:
    no cluster starts; the SIGTERM test above runs a real one): its cell carries the load
    sample taken where it ran, which Ray cells stored as null before."""
    import ray

    from lab.running import loop as session
    from lab.running.executors import CellJob
    from lab.running.executors.ray import run_on_node

    class Context:
        def get_node_id(self):
            return "node-1"

    monkeypatch.setattr(ray, "get_runtime_context", Context)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    cells, _ = session.plan(session.Selection(
        workloads=["mlp"], backends=["torch-eager"], device="cpu", threads=1, repeats=3,
        named_shape={"batch": 2}))
    answer = run_on_node(CellJob(0, cells[0].spec, "torch-eager", timeout_s=240))
    assert answer.outcome.status == "ok", answer.outcome.result.reason
    extra = answer.outcome.extra
    assert isinstance(extra["machine_busy"], bool) and extra["other_load_cores"] >= 0
    assert answer.node["node_id"] == "node-1"
