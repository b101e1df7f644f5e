"""`lab run` end to end on the CPU: real cells in real subprocesses."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_lab

from lab.cell import main as cell  # noqa: F401
from lab.cell.spec import CellSpec
from lab.core.status import CellFailure
from lab.store import folders as store  # noqa: F401
from lab.store import reader as results  # noqa: F401


def _results(out: Path) -> dict:
    (path,) = out.glob("*/*/results.json")
    return results.load(path)


def _by_backend(doc: dict) -> dict:
    cells = [b["extra_info"] for b in doc["benchmarks"]]
    cells += [u["extra_info"] for u in doc["lab"]["unmeasured"]]
    return {(c["workload"], c["backend"], c["mode"]): c for c in cells}


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    result = run_lab("run", "--workload", "mlp", "--backend", "torch-eager,torch-compile",
                     "--mode", "infer", "--device", "cpu", "--repeats", "6", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result


@pytest.mark.slow
def test_run_stores_eager_and_compiled_cells(mlp_run):
    out, result = mlp_run
    doc = _results(out)
    assert doc["lab"]["complete"] is True
    cells = _by_backend(doc)
    eager = cells[("mlp", "torch-eager", "infer")]
    compiled = cells[("mlp", "torch-compile", "infer")]
    assert eager["status"] == compiled["status"] == "ok"
    assert compiled["accuracy"]["passed"]
    assert compiled["diagnostics"]["graph_count"] >= 1
    assert compiled["diagnostics"]["graph_breaks"] == 0
    assert compiled["compile_s_cold"] > 0 and compiled["compile_s_warm"] is not None
    lo, hi = compiled["speedup_ci95"]
    assert lo <= compiled["speedup"] <= hi
    assert len(compiled["baseline_samples_s"]) == 6
    for bench in doc["benchmarks"]:
        assert len(bench["stats"]["data"]) == 6 and bench["stats"]["iterations"] >= 1
    assert eager["threads"] >= 1
    fp = json.loads(next(out.glob("*/*/fingerprint.json")).read_text())
    assert fp["threads"] == eager["threads"] and "torch" in fp["versions"]
    assert "speedup [95% CI]" in result.stdout and "torch-compile" in result.stdout


@pytest.mark.slow
def test_show_prints_the_same_table_from_disk(mlp_run):
    out, result = mlp_run
    (run_dir,) = out.glob("*/*")
    shown = run_lab("show", str(run_dir))
    assert shown.returncode == 0
    row = [line for line in result.stdout.splitlines() if "torch-compile" in line and "x [" in line]
    assert row and row[0] in shown.stdout


@pytest.mark.slow
def test_user_workload_runs_in_both_modes(tmp_path):
    result = run_lab("run", "--workload", "examples/my_model.py:make_model", "--backend",
                     "torch-eager", "--mode", "infer,train", "--repeats", "3",
                     "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    cells = _by_backend(_results(tmp_path))
    assert {c["status"] for c in cells.values()} == {"ok"} and len(cells) == 2


@pytest.mark.slow
def test_crashing_and_hanging_cells_do_not_end_the_run(tmp_path):
    (tmp_path / "bad.py").write_text(
        "import os, time, torch\n"
        "class Crash(torch.nn.Module):\n"
        "    def forward(self, x):\n        os._exit(3)\n"
        "class Hang(torch.nn.Module):\n"
        "    def forward(self, x):\n        time.sleep(3600)\n"
        "def crash():\n    return Crash(), torch.ones(2)\n"
        "def hang():\n    return Hang(), torch.ones(2)\n")
    bad = tmp_path / "bad.py"
    result = run_lab("run", "--workload", f"{bad}:crash,{bad}:hang,mlp", "--backend",
                     "torch-eager", "--timeout", "10", "--repeats", "3",
                     "--out", str(tmp_path / "runs"))
    # the run went on past both and kept every cell; exit 1 says that some failed
    assert result.returncode == 1, result.stderr
    cells = _by_backend(_results(tmp_path / "runs"))
    statuses = {w.split(":")[-1]: c["status"] for (w, _, _), c in cells.items()}
    assert statuses == {"crash": "run_error", "hang": "timeout", "mlp": "ok"}


@pytest.mark.slow
def test_ctrl_c_keeps_finished_cells_and_marks_the_run_incomplete(tmp_path):
    (tmp_path / "slow.py").write_text(
        "import time, torch\n"
        "class Slow(torch.nn.Module):\n"
        "    def forward(self, x):\n        time.sleep(3600)\n"
        "def make():\n    return Slow(), torch.ones(2)\n")
    out = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.cli", "run", "--workload", f"mlp,{tmp_path}/slow.py:make",
         "--backend", "torch-eager", "--repeats", "3", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the mlp cell is stored
        files = list(out.glob("*/*/results.json"))
        if files and results.load(files[0])["benchmarks"]:
            break
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    doc = _results(out)
    assert doc["lab"]["complete"] is False
    assert [b["extra_info"]["workload"] for b in doc["benchmarks"]] == ["mlp"]
    assert "interrupted" in stdout


def test_wrong_compiled_answer_is_fail_accuracy_with_no_speedup(monkeypatch):
    """A compiler that returns something else is caught on the timed inputs."""
    import numpy as np

    from lab.compile import torch as torch_backend

    class WrongSide(torch_backend.TorchSide):
        def outputs(self):
            return [o + 0.5 for o in super().outputs()]

    monkeypatch.setitem(torch_backend.SIDES, "torch-compile",
                        lambda task, mode, option: WrongSide(task, mode))
    spec = CellSpec(workload="mlp", backend="torch-compile", option="default", mode="infer",
                         shape={"batch": 4}, precision="fp32", device="cpu", threads=1, repeats=3)
    result = cell.run(spec)
    assert result.status == "fail_accuracy"
    assert not result.accuracy["passed"] and result.samples_s is None
    assert np.isfinite(result.first_call_s)


def test_cpu_cell_asked_for_l2_flush_says_it_needs_cuda():
    spec = CellSpec(workload="mlp", backend="torch-eager", option=None, mode="infer",
                         shape={"batch": 4}, precision="fp32", device="cpu", threads=1, repeats=3,
                         cold_l2=True)
    with pytest.raises(CellFailure) as failure:
        cell.run(spec)
    assert failure.value.status == "skipped" and "no CUDA device" in failure.value.reason


def test_train_cell_checks_loss_and_gradients():
    spec = CellSpec(workload="transformer", backend="torch-eager", option=None, mode="train",
                         shape={"batch": 2, "seq": 8, "d_model": 16, "heads": 2},
                         precision="fp32", device="cpu", threads=1, repeats=3)
    result = cell.run(spec)
    assert result.status == "ok" and len(result.samples_s) == 3


def test_out_of_memory_in_a_cell_is_status_oom(tmp_path, monkeypatch):
    (tmp_path / "greedy.py").write_text(
        "import torch\n"
        "class Greedy(torch.nn.Module):\n"
        "    def forward(self, x):\n        raise MemoryError('cannot allocate 1 TB')\n"
        "def make():\n    return Greedy(), torch.ones(2)\n")
    spec = CellSpec(workload=f"{tmp_path}/greedy.py:make", backend="torch-eager",
                         option=None, mode="infer", shape={}, precision="fp32", device="cpu",
                         threads=1, repeats=2)
    with pytest.raises(CellFailure) as failure:
        cell.run(spec)
    assert failure.value.status == "oom" and "1 TB" in failure.value.reason


def test_a_backend_module_that_fails_to_import_ends_only_its_cell(monkeypatch):
    from lab.cell import launch as runner

    def broken(name):
        raise ImportError(f"cannot import {name}")

    monkeypatch.setattr(runner.backends, "load", lambda info: broken(info.module))
    spec = CellSpec(workload="mlp", backend="torch-eager", option=None, mode="infer",
                         shape={"batch": 2}, precision="fp32", device="cpu", threads=1, repeats=2)
    result, _wall = runner.run_cell_process(spec, timeout_s=30)
    assert result.status == "run_error" and "cannot import lab.compile.torch" in result.reason
