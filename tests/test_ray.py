"""The Ray executor on a two-node cluster on this machine (ray.cluster_utils.Cluster: a head
and one more node, each with its own raylet), and the gate's refusal of mixed machines.

The cluster tests run real cells through lab.cell.launch on the nodes. A held cell
(tests/ray_helpers.py) stays alive until the test lets it go, so a test can kill its worker,
remove its node or press Ctrl-C while the cell process runs, and then check that no cell
process survives. Every test is bounded by an alarm; the cluster is shut down even when a test
fails. Skipped when ray is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import ROOT
from ray_helpers import HOLD_DIR_VAR
from verdict_helpers import HARDWARE, cell, clear_busy, run_lab_main, samples, write_run

from lab import compile as backends
from lab import workloads
from lab.cell.spec import CellSpec
from lab.core.errors import UsageError
from lab.judge import gate as regression
from lab.running import loop as session
from lab.running.executors import CellJob
from lab.running.executors import guard as cell_guard
from lab.store import folders as store
from lab.store import provenance
from lab.store import reader as results

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (perflab[ray])")
HELD = f"{ROOT / 'tests' / 'ray_helpers.py'}:held_model"
HEAD_CPUS, WORKER_CPUS = 1, 2  # only the worker node fits a 2-thread cell


@contextmanager
def deadline(seconds: float):
    """TimeoutError in the main thread after `seconds`: no test waits on the cluster forever."""
    def expire(signum, frame):
        raise TimeoutError(f"test took longer than {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def hold_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ray-hold")


@pytest.fixture(scope="module")
def ray_cluster(hold_dir):
    """A head node and a worker node on this machine, with the driver connected to the head."""
    if not HAS_RAY:
        pytest.skip("ray is not installed (perflab[ray])")
    import ray
    from ray.cluster_utils import Cluster

    # inherited by the raylets, so by workers and cell processes: where held cells look
    saved = {k: os.environ.get(k) for k in (HOLD_DIR_VAR, "RAY_agent_register_timeout_ms")}
    os.environ[HOLD_DIR_VAR] = str(hold_dir)
    # a raylet waits for its dashboard agent (a Python process) before it registers; on a
    # loaded 2-core machine that agent takes longer than Ray's default 15 s to start
    os.environ["RAY_agent_register_timeout_ms"] = "120000"
    cluster = Cluster()
    try:
        with deadline(150):
            cluster.add_node(num_cpus=HEAD_CPUS, include_dashboard=False)
            worker = cluster.add_node(num_cpus=WORKER_CPUS)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, log_to_driver=False)
    except Exception as exc:  # the machine could not start Ray: not a fault of the lab
        cluster.shutdown()
        pytest.skip(f"a local Ray cluster did not start here: {type(exc).__name__}: {exc} "
                    f"(load {os.getloadavg()[0]:.1f})")
    cluster.test_worker = worker
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def hold(hold_dir):
    """Held cells wait while this exists; started-PID files say which cell processes began."""
    for old in hold_dir.glob("started-*"):
        old.unlink()
    flag = hold_dir / "hold"
    flag.touch()
    yield flag
    flag.unlink(missing_ok=True)


def held_job(threads: int = 1, index: int = 0) -> CellJob:
    spec = CellSpec(workload=HELD, backend="torch-eager", option=None, mode="infer", shape={},
                    precision="fp32", device="cpu", threads=threads, repeats=3)
    return CellJob(index, spec, "torch-eager", timeout_s=150)


def first_cell_pid(hold_dir: Path, seconds: float = 60) -> int:
    """The pid of the first held cell process to start."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = sorted(hold_dir.glob("started-*"), key=lambda p: p.stat().st_mtime)
        if started:
            return int(started[0].name.split("-")[1])
        time.sleep(0.05)
    raise TimeoutError("no held cell process started")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def wait_gone(pid: int, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


def lab_cells_of_this_test(hold_dir: Path) -> list[int]:
    """Live `lab.cell.main` processes started by these tests (they carry HOLD_DIR_VAR)."""
    needle = f"{HOLD_DIR_VAR}={hold_dir}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"lab.cell.main" in (entry / "cmdline").read_bytes() \
                    and needle in (entry / "environ").read_bytes().split(b"\0") \
                    and alive(int(entry.name)):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


# ---------------------------------------------------------------- the cluster


@pytest.mark.long  # a run on the two-node cluster end to end
@needs_ray
@pytest.mark.slow
def test_a_two_node_run_reads_like_a_local_run(ray_cluster, tmp_path):
    import ray

    from lab.running.executors.local import LocalExecutor
    from lab.running.executors.ray import RayExecutor

    selection = session.Selection(workloads=["mlp"], backends=["torch-eager"],
                                  modes=["infer", "train"], device="cpu", threads=1, repeats=3)
    with deadline(240):
        cells, _ = session.plan(selection)
        ran = session.run_cells(cells, out=tmp_path / "ray", label="ray", argv=[],
                                executor=RayExecutor())
        local = session.run_cells(cells, out=tmp_path / "local", label="local", argv=[],
                                  executor=LocalExecutor())
    ray_doc, local_doc = results.load(ran.path), results.load(local.path)
    assert [(c["name"], c["status"]) for c in results.cells(ray_doc)] == \
        [(c["name"], c["status"]) for c in results.cells(local_doc)] == \
        [(c.name, "ok") for c in cells]

    node_ids = {n["NodeID"] for n in ray.nodes()}
    here = provenance.machine_id(provenance.hardware())
    for c in results.cells(ray_doc):
        assert c["attempts"] == 1 and "lost_attempts" not in c
        assert c["machine_id"] == here  # both nodes are this machine
        assert c["node"]["node_id"] in node_ids
        assert c["node"]["fingerprint"]["hardware"] == provenance.hardware()
    assert {c["machine_id"] for c in results.cells(local_doc)} == {here}
    fingerprint = json.loads((ran.run_dir / store.FINGERPRINT).read_text())
    assert fingerprint["executor"]["name"] == "ray"
    assert len(fingerprint["executor"]["nodes"]) == 2
    assert ray_doc["lab"]["executor"] == "ray" and local_doc["lab"]["executor"] == "local"

    # the same readers as for a local run
    shown = run_lab_main("show", str(ran.run_dir))
    assert shown.returncode == 0, shown.stderr
    assert "mlp" in shown.stdout and "torch-eager" in shown.stdout
    # two nodes on this machine load it, and the gate decides nothing on busy cells
    # (docs/verdicts.md): what is tested is that a Ray run gates like a local one, so the
    # load marks come off copies
    copies = []
    for run_dir in (local.run_dir, ran.run_dir):
        copy = tmp_path / "gated" / run_dir.name
        shutil.copytree(run_dir, copy)
        clear_busy(copy / "results.json")
        copies.append(str(copy))
    gated = run_lab_main("gate", *copies, "--threshold", "50%")
    assert gated.returncode in (0, 1), gated.stderr  # compared, not refused (2)
    assert "## lab gate" in gated.stdout
    compare = subprocess.run([str(Path(sys.executable).parent / "pytest-benchmark"), "compare",
                              str(ran.path)], capture_output=True, text=True, timeout=120)
    assert compare.returncode == 0, compare.stderr
    assert "mlp[torch-eager|infer" in compare.stdout


@needs_ray
def test_b_cells_that_fit_no_node_and_tracing_are_refused(ray_cluster):
    from lab.running.executors.ray import RayExecutor

    executor = RayExecutor()
    with pytest.raises(UsageError, match=r"no node of the Ray cluster has 64 CPUs.*--threads"):
        executor.prepare([held_job(threads=64).spec])
    with pytest.raises(UsageError, match="does not trace"):
        executor.prepare([held_job().spec], trace=True)
    assert executor.prepare([held_job(threads=WORKER_CPUS).spec])["name"] == "ray"


@needs_ray
@pytest.mark.slow
def test_c_a_killed_worker_leaves_no_cell_and_its_cell_is_retried(ray_cluster, hold_dir, hold):
    from lab.running.executors.ray import RayExecutor

    with deadline(150):
        outcomes = RayExecutor().run([held_job()])
        pid = first_cell_pid(hold_dir)
        token = next(v.split(b"=", 1)[1] for v in Path(f"/proc/{pid}/environ").read_bytes()
                     .split(b"\0") if v.startswith(cell_guard.TOKEN_VAR.encode() + b"="))
        assert token  # the cell carries its task's token: the guard can find it
        os.kill(parent_of(pid), signal.SIGKILL)  # the Ray worker running the task
        # the runner never got to kill its cell; the guard must
        assert wait_gone(pid, 20), "the cell process outlived its killed worker"
        hold.unlink()
        job, outcome = next(outcomes)
    assert outcome.status == "ok", outcome.result.reason
    assert outcome.extra["attempts"] == 2
    assert len(outcome.extra["lost_attempts"]) == 1
    assert outcome.extra["lost_attempts"][0].startswith("WorkerCrashedError")
    assert outcome.result.samples_s  # the retry measured the cell


@needs_ray
@pytest.mark.slow
def test_d_ctrl_c_cancels_the_task_and_kills_its_cell(ray_cluster, hold_dir, hold, tmp_path):
    from lab.running.executors.ray import RayExecutor

    planned = session.PlannedCell(held_job().spec, backends.resolve("torch-eager"),
                                  workloads.get(HELD, validate_user=False))
    pids = []

    def press_ctrl_c():
        pids.append(first_cell_pid(hold_dir))
        os.kill(os.getpid(), signal.SIGINT)

    presser = threading.Thread(target=press_ctrl_c, daemon=True)
    with deadline(150):
        presser.start()
        result = session.run_cells([planned], out=tmp_path, label="ctrl-c", argv=[],
                                   executor=RayExecutor())
        presser.join(5)
        assert result.interrupted
        assert pids and wait_gone(pids[0], 15), "the cell process survived Ctrl-C"
    assert lab_cells_of_this_test(hold_dir) == []
    doc = results.load(result.path)
    assert doc["lab"]["complete"] is False and results.cells(doc) == []


@needs_ray
@pytest.mark.slow
def test_z_a_lost_node_ends_its_cell_lost(ray_cluster, hold_dir, hold):
    """Runs last: it removes the worker node. The 2-thread cell fits only that node, so once
    the node is gone its retry has nowhere to run and the cell ends `lost`, at once."""
    from lab.running.executors.ray import RayExecutor

    with deadline(150):
        outcomes = RayExecutor().run([held_job(threads=WORKER_CPUS)])
        pid = first_cell_pid(hold_dir)
        ray_cluster.remove_node(ray_cluster.test_worker)
        assert wait_gone(pid, 20), "the cell process outlived its node"
        job, outcome = next(outcomes)
    assert outcome.status == "lost"
    assert outcome.result.reason.startswith("no live node left can run it")
    assert outcome.extra["attempts"] == 1 and len(outcome.extra["lost_attempts"]) == 1
    assert outcome.extra["machine_id"] is None
    assert lab_cells_of_this_test(hold_dir) == []


# ---------------------------------------------------------------- the gate, no cluster needed


def _cluster_cell(name: str, machine: str, hardware: dict, median_s: float = 1e-3) -> dict:
    return cell(name, "torch-eager", "infer", samples(median_s, seed=len(name)),
                machine_id=machine, node={"node_id": machine, "fingerprint": {
                    "hardware": hardware}})


def test_gate_refuses_a_run_that_mixes_machines_unless_forced(tmp_path):
    gpu = {**HARDWARE, "gpus": [{"name": "Test GPU", "memory": "80 GiB"}]}
    cpu_id, gpu_id = provenance.machine_id(HARDWARE), provenance.machine_id(gpu)
    mixed = write_run(tmp_path / "mixed", [_cluster_cell("mlp", cpu_id, HARDWARE),
                                           _cluster_cell("transformer", gpu_id, gpu)])
    plain = write_run(tmp_path / "plain", [cell("mlp", "torch-eager", "infer", samples(1e-3)),
                                           cell("transformer", "torch-eager", "infer",
                                                samples(1e-3))])
    why = regression.machine_mismatch(results.load(plain), results.load(mixed))
    assert why == f"the candidate mixes machines: {', '.join(sorted([cpu_id, gpu_id]))}"
    refused = run_lab_main("gate", str(plain), str(mixed))
    assert refused.returncode == 2 and "mixes machines" in refused.stderr
    forced = run_lab_main("gate", str(plain), str(mixed), "--force")
    assert forced.returncode in (0, 1) and "forced across machines" in forced.stdout


def test_gate_compares_cluster_cells_by_the_nodes_that_timed_them(tmp_path):
    # the driver's machine (machine_info) is not where the cells ran: the nodes' hardware is
    gpu = {**HARDWARE, "gpus": [{"name": "Test GPU", "memory": "80 GiB"}]}
    same = write_run(tmp_path / "same", [_cluster_cell("mlp", provenance.machine_id(HARDWARE),
                                                       HARDWARE)])
    other = write_run(tmp_path / "other", [_cluster_cell("mlp", provenance.machine_id(gpu), gpu)])
    local = write_run(tmp_path / "local", [cell("mlp", "torch-eager", "infer", samples(1e-3))])
    assert regression.machine_mismatch(results.load(local), results.load(same)) is None
    why = regression.machine_mismatch(results.load(local), results.load(other))
    assert why.startswith("gpus: []")
    # a failed cell was timed nowhere: it does not make a run mixed
    lost = cell("transformer", "torch-eager", "infer", None, status="lost", machine_id=None)
    partly = write_run(tmp_path / "partly", [_cluster_cell("mlp", provenance.machine_id(HARDWARE),
                                                           HARDWARE), lost])
    assert regression.machine_mismatch(results.load(local), results.load(partly)) is None


def test_guard_kills_marked_processes_when_its_owner_dies(tmp_path):
    """The guard on its own: a parent that starts a cell-like child in a session of its own
    and is then killed; the guard must kill the child, and only it."""
    script = tmp_path / "owner.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "from lab.running.executors import guard\n"
        "with guard.cells_die_with_this_process():\n"
        "    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'],\n"
        "                             start_new_session=True)\n"
        "    print(child.pid, flush=True)\n"
        "    time.sleep(120)\n")
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                 start_new_session=True)
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        with deadline(60):
            child = int(owner.stdout.readline())
            assert alive(child)
            owner.kill()
            owner.wait()
            assert wait_gone(child, 20), "the guard did not kill the orphaned child"
        assert alive(bystander.pid)  # no token, not touched
    finally:
        bystander.kill()
        owner.kill()


def test_guard_leaves_children_alone_when_its_owner_finishes(tmp_path):
    survivor = tmp_path / "pid"
    code = ("import subprocess, sys\n"
            "from lab.running.executors import guard\n"
            "with guard.cells_die_with_this_process():\n"
            "    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'],\n"
            "                             start_new_session=True)\n"
            f"open({str(survivor)!r}, 'w').write(str(child.pid))\n")
    with deadline(60):
        subprocess.run([sys.executable, "-c", code], check=True, timeout=50,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        child = int(survivor.read_text())
        time.sleep(0.5)  # a guard that wrongly fired would have killed it by now
        try:
            assert alive(child)
        finally:
            os.kill(child, signal.SIGKILL)


def test_check_refuses_a_run_that_mixes_machines_and_names_the_node_that_timed_it(tmp_path):
    claims = tmp_path / "c.toml"
    claims.write_text('[[claim]]\nid = "t"\nquote = "q"\nmetric = "speedup"\n'
                      'backend = "torch-compile"\nworkload = "mlp"\nmode = "infer"\n'
                      'expect = "at_least"\nvalue = 1.5\n')
    gpu = {**HARDWARE, "gpus": [{"name": "Test GPU", "memory": "80 GiB"}]}
    mixed = write_run(tmp_path / "mixed", [
        _cluster_cell("mlp", provenance.machine_id(HARDWARE), HARDWARE),
        _cluster_cell("transformer", provenance.machine_id(gpu), gpu)])
    refused = run_lab_main("check", str(claims), "--run", str(mixed), "--stored-only")
    assert refused.returncode == 2 and "kinds of machine" in refused.stderr
    node = write_run(tmp_path / "node", [_cluster_cell("mlp", provenance.machine_id(gpu), gpu)])
    judged = run_lab_main("check", str(claims), "--run", str(node), "--stored-only")
    assert judged.returncode == 0 and "Test GPU x1" in judged.stdout
