"""The lab under faults, bad input and concurrent use, tried through the real command line as a
user would (docs/contract.md): every bad input is one line and exit 2, a failing cell is its
status and exit 1, an interrupt is exit 130 with the finished cells kept, and nothing is left
running or on disk. Cells are small (mlp at batch 2, 3 samples, torch-eager) so the suite
stays fast on two cores.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import ROOT, factory, lab, one_line_error, slow_factory, stored_run
from verdict_helpers import cell, samples, write_run

from lab import cli
from lab.running import machine_load
from lab.store import folders as store

COMMON = ["--repeats", "3", "--device", "cpu", "--threads", "1"]
SMALL = ["--batch", "2", *COMMON]  # built-in workloads; a user's factory fixes its own shape


def refused(capsys, *args: str) -> str:
    """The same refusal, asked of cli.main in this process (for input refused before any cell
    process starts)."""
    code = cli.main(list(args))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lab: error: "), err
    return lines[0]


def stored(out: Path) -> dict:
    return stored_run(out)[1]


def cells(doc: dict) -> dict[str, dict]:
    entries = doc["benchmarks"] + doc["lab"]["unmeasured"]
    return {e["extra_info"]["workload"]: e["extra_info"] for e in entries}


# ---------------------------------------------------------------- data lost or a wrong answer


def test_run_ids_created_in_one_second_never_collide(tmp_path, monkeypatch):
    made = {store.create_run_dir(tmp_path, "cpu") for _ in range(50)}
    assert len(made) == 50 and all(p.is_dir() for p in made)
    # two runs that draw the same id: the second finds the folder taken and draws again
    ids = iter(["same", "same", "other"])
    monkeypatch.setattr(store, "new_run_id", lambda label="": next(ids))
    assert store.create_run_dir(tmp_path / "x").name == "same"
    assert store.create_run_dir(tmp_path / "x").name == "other"


def test_stored_files_are_readable_by_the_group(tmp_path):
    old = os.umask(0o022)
    try:
        store.atomic_write_json(tmp_path / "results.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "results.json").stat().st_mode) == 0o644


def _gate_runs(tmp_path, base_extra=None, cand_extra=None, cand_names=("mlp",),
               complete=True):
    base = write_run(tmp_path / "base", [
        cell(w, "torch-eager", "infer", samples(1e-3), **(base_extra or {}))
        for w in ("mlp", "transformer")])
    cand = write_run(tmp_path / "cand", [
        cell(w, "torch-eager", "infer", samples(1e-3, seed=1), **(cand_extra or {}))
        for w in cand_names])
    if not complete:
        doc = json.loads(Path(cand).read_text())
        doc["lab"]["complete"] = False
        Path(cand).write_text(json.dumps(doc))
    return str(base), str(cand)


def test_gate_refuses_an_incomplete_candidate(tmp_path, capsys):
    base, cand = _gate_runs(tmp_path, cand_names=("mlp", "transformer"), complete=False)
    assert "incomplete" in refused(capsys, "gate", base, cand)


def test_gate_refuses_runs_that_share_no_benchmark(tmp_path, capsys):
    base, cand = _gate_runs(tmp_path, cand_names=("resnet50",))
    assert "share no benchmark" in refused(capsys, "gate", base, cand)


def test_gate_fails_on_a_benchmark_missing_from_the_candidate(tmp_path, capsys):
    base, cand = _gate_runs(tmp_path, cand_names=("mlp",))
    assert cli.main(["gate", base, cand]) == 1
    assert "missing from the candidate" in capsys.readouterr().out
    assert cli.main(["gate", base, cand, "--allow-missing"]) == 0


def test_gate_refuses_runs_with_different_thread_counts(tmp_path, capsys):
    base, cand = _gate_runs(tmp_path, {"threads": 1}, {"threads": 2}, ("mlp", "transformer"))
    assert "threads 1 vs 2" in refused(capsys, "gate", base, cand)
    assert cli.main(["gate", base, cand, "--force"]) == 0
    assert "forced across settings" in capsys.readouterr().out


ACCURACY_MODELS = {
    # NaN in every output, eager and compiled alike: NaN == NaN proves nothing
    "nan": """
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(8, 8)
            def forward(self, x):
                return self.fc(x) * float("nan")
        def make():
            return M(), torch.randn(2, 8)
        """,
    # an unseeded random op: two eager runs on the same inputs disagree
    "noise": """
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(8, 8)
            def forward(self, x):
                return self.fc(x) + torch.randn(2, 8)
        def make():
            return M(), torch.randn(2, 8)
        """,
    # dropout: off in infer once the model is in eval mode, so eager agrees with itself
    "dropout": """
        def make():
            return nn.Sequential(nn.Linear(8, 64), nn.Dropout(0.5), nn.Linear(64, 8)), \\
                torch.randn(2, 8)
        """,
}


def test_nan_outputs_and_nondeterministic_eager_fail_and_dropout_is_off_in_infer(tmp_path):
    specs = {name: factory(tmp_path, name, body) for name, body in ACCURACY_MODELS.items()}
    out = tmp_path / "out"
    proc = lab("run", "--workload", ",".join(specs.values()), "--backend", "torch-eager",
               "--mode", "infer", *COMMON, "--out", str(out))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = {name: cells(stored(out))[spec] for name, spec in specs.items()}
    assert found["nan"]["status"] == "fail_accuracy"
    assert "NaN" in found["nan"]["reason"]
    assert found["noise"]["status"] == "eager_nondeterministic"
    assert "eager_nondeterministic" in proc.stdout
    assert found["dropout"]["status"] == "ok"
    assert found["dropout"]["accuracy"]["max_abs_err"] == 0.0

    # asked for: NaN where eager has it is accepted (and said so in the accuracy record)
    out = tmp_path / "allowed"
    proc = lab("run", "--workload", specs["nan"], "--backend", "torch-eager", "--mode", "infer",
               *COMMON, "--out", str(out), "--allow-nan")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    info = cells(stored(out))[specs["nan"]]
    assert info["status"] == "ok" and info["accuracy"]["nonfinite"] is True


def _burn(seconds: float) -> list[subprocess.Popen]:
    """Two busy processes for `seconds`: what another user's run does to this machine."""
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass\n"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]


def test_machine_load_sees_other_work_on_the_cores():
    start = machine_load.mark()
    burners = _burn(1.5)
    time.sleep(1.2)  # read while they run, before they are reaped: work that is not the lab's
    other = machine_load.between(start)
    for p in burners:
        p.wait()
    if other is None:
        pytest.skip("no /proc/stat here")
    assert other["other_load_cores"] >= 0.5 * min(2, other["usable_cores"])
    assert other["machine_busy"]


def test_a_cell_measured_while_the_machine_is_busy_says_so(tmp_path):
    burners = _burn(60)
    try:
        out = tmp_path / "out"
        proc = lab("run", "--workload", "mlp", "--backend", "torch-eager", "--mode", "infer",
                   *SMALL, "--out", str(out))
    finally:
        for p in burners:
            p.kill()
            p.wait()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    info = cells(stored(out))["mlp"]
    assert info["machine_busy"] is True and info["other_load_cores"] > 0.5
    assert "busy)" in proc.stdout


def test_threads_beyond_the_usable_cores_are_refused(capsys):
    line = refused(capsys, "run", "--workload", "mlp", "--backend", "torch-eager",
                   "--threads", "1000", "--device", "cpu")
    assert "--threads 1000" in line and "cores" in line


# ---------------------------------------------------------------- the lab itself never dies


@pytest.mark.parametrize("name, body, expect", [
    ("hangs", "import time\ndef make():\n    time.sleep(600)\n", "took more than 5 s"),
    ("exits", "import os\ndef make():\n    os._exit(7)\n", "exited with code 7"),
    ("segfaults", "import ctypes\ndef make():\n    ctypes.string_at(0)\n", "SIGSEGV"),
    ("bad_loss", "def make():\n    return {'model': nn.Linear(2, 2), 'inputs': torch.ones(1, 2),"
                 " 'loss_fn': 3}\n", "loss_fn that is not callable"),
])
def test_a_bad_user_factory_is_one_line_not_a_dead_or_hung_lab(tmp_path, name, body, expect):
    spec = factory(tmp_path, name, body)
    t0 = time.monotonic()
    proc = lab("run", "--workload", spec, "--backend", "torch-eager", "--timeout", "5",
               "--device", "cpu", "--out", str(tmp_path / "out"), timeout=120)
    assert expect in one_line_error(proc)
    assert time.monotonic() - t0 < 90
    assert not (tmp_path / "out").exists()  # refused before any run folder


def _lab_processes(marker: str) -> list[int]:
    """Processes whose command line holds `marker` (the test's own temp folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc for left-over processes")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_run_keeps_finished_cells_and_leaves_nothing(tmp_path, sig):
    slow = slow_factory(tmp_path, 0.5)
    temp = tmp_path / "tmp"  # the lab's temp folders (cell specs, compile caches) go here
    temp.mkdir()
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.cli", "run", "--workload", f"mlp,{slow}", "--backend",
         "torch-eager", "--mode", "infer", *SMALL, "--out", str(out)],
        cwd=ROOT, env={**os.environ, "TMPDIR": str(temp)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # until the mlp cell is stored and the slow runs
            files = list(out.glob("*/*/results.json"))
            if files and json.loads(files[0].read_text())["benchmarks"] \
                    and list(temp.glob("lab-cell-*")):
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.2)
        else:
            pytest.fail("the first cell never finished")
        time.sleep(1.0)  # the slow cell's process is up and importing or stepping
        assert _lab_processes(str(temp)), "the slow cell should be running"
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, output[-3000:]
    time.sleep(0.5)
    assert _lab_processes(str(temp)) == []
    assert list(temp.iterdir()) == []  # lab-cell-* and lab-compile-cache-* removed
    doc = stored(out)
    assert doc["lab"]["complete"] is False
    assert [b["extra_info"]["workload"] for b in doc["benchmarks"]] == ["mlp"]


# ---------------------------------------------------------------- unusable --out and disks


def test_an_out_that_is_a_file_is_refused_before_any_cell(tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("x")
    line = refused(capsys, "run", "--workload", "mlp", "--backend", "torch-eager",
                   "--device", "cpu", "--out", str(target))
    assert "--out" in line and "cannot create a run folder" in line


def test_a_read_only_out_is_refused_before_any_cell(tmp_path, capsys):
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        line = refused(capsys, "run", "--workload", "mlp", "--backend", "torch-eager",
                       "--device", "cpu", "--out", str(mount))
    finally:
        subprocess.run(["umount", str(mount)], check=False)
    assert "Read-only file system" in line


def test_a_disk_that_fills_mid_run_keeps_the_finished_cell(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    real = store.atomic_write_bytes
    writes = []

    def fill_up(path, data):  # fingerprint.json, results.json after cell 1, then full
        writes.append(Path(path).name)
        if writes.count("results.json") > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data)

    monkeypatch.setattr(store, "atomic_write_bytes", fill_up)
    code = cli.main(["run", "--workload", "mlp", "--backend", "torch-eager", "--mode",
                     "infer,train", *SMALL, "--out", str(out)])
    # the progress lines of the cells before it (lab.running.loop), then the one error line
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not re.match(r"\[\d+/\d+\] ", line)]
    assert code == 2 and len(err) == 1 and "No space left on device" in err[0], err
    doc = stored(out)  # still valid JSON: the last complete write
    assert doc["lab"]["complete"] is False
    assert [b["extra_info"]["mode"] for b in doc["benchmarks"]] == ["infer"]


# ---------------------------------------------------------------- errors and statuses


@pytest.mark.parametrize("command", ["show", "report", "gate", "history"])
def test_unreadable_and_foreign_results_are_one_line(tmp_path, capsys, command):
    machine = tmp_path / "some-machine"
    garbage = machine / "run-garbage"
    garbage.mkdir(parents=True)
    (garbage / "results.json").write_bytes(os.urandom(4096) + b"\xff\xfe")
    plain = machine / "run-plain"  # a plain pytest-benchmark file: no extra_info.workload
    plain.mkdir()
    (plain / "results.json").write_text(json.dumps({
        "machine_info": {"node": "x"}, "commit_info": {}, "benchmarks": [
            {"name": "test_f", "stats": {"data": [1e-3, 2e-3], "median": 1.5e-3},
             "extra_info": {}}]}))
    for run in (garbage, plain):
        if command == "history":
            code = cli.main(["history", "--machine", machine.name, "--out", str(tmp_path)])
            captured = capsys.readouterr()
            assert code == 0 and "2 unreadable, skipped" in captured.out
            continue
        args = [command, str(run)] + ([str(run)] if command == "gate" else [])
        line = refused(capsys, *args)
        assert ("not UTF-8" in line) if run is garbage else ("not a lab run" in line)


def test_torch_cpu_out_of_memory_is_oom_and_every_failed_cell_exits_1(tmp_path):
    out = tmp_path / "out"
    proc = lab("run", "--workload", "mlp", "--backend", "torch-eager", "--mode", "infer",
               "--batch", "1000000000", "--repeats", "3", "--device", "cpu", "--threads", "1",
               "--allow-large",  # past the selection's memory estimate, to reach the cell's oom
               "--out", str(out))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert cells(stored(out))["mlp"]["status"] == "oom"
    for path in (out.glob("*/*/*.json")):  # written 0644 under the default umask
        assert stat.S_IMODE(path.stat().st_mode) & 0o040


def test_a_claim_on_an_unknown_workload_or_shape_is_refused_with_its_line(tmp_path, capsys):
    head = ('[[claim]]\nid = "x"\nquote = "q"\nmetric = "speedup"\nbackend = "torch-compile"\n'
            'expect = "at_least"\nvalue = 1.0\n')
    bad_workload = tmp_path / "workload.toml"
    bad_workload.write_text(head + 'workload = "mlpp"\n')
    line = refused(capsys, "check", str(bad_workload), "--stored-only")
    assert f"{bad_workload}:8:" in line and "unknown workload 'mlpp'" in line
    bad_shape = tmp_path / "shape.toml"
    bad_shape.write_text(head + 'workload = "mlp"\nshape = {d_modell = 4}\n')
    line = refused(capsys, "check", str(bad_shape), "--stored-only")
    assert f"{bad_shape}:9:" in line and "d_modell" in line


@pytest.mark.parametrize("args, expect", [
    (["--workload", "transformer", "--shape", "d_model=0"], "positive integers"),
    (["--workload", "mlp", "--seq", "256"], "has a seq parameter"),
    (["--workload", "mlp,mlp"], "names 'mlp' twice"),
    (["--workload", "mlp", "--backend", "torch-eager,torch-eager"], "names 'torch-eager' twice"),
])
def test_bad_selections_are_one_line(capsys, args, expect):
    line = refused(capsys, "run", "--backend", "torch-eager", *args, "--device", "cpu")
    assert expect in line


def test_a_data_dependent_branch_counts_its_graph_break():
    torch = pytest.importorskip("torch")
    from lab.compile.torch import compiled_side
    from lab.workloads.base import TorchTask

    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x):
            h = self.fc(x)
            if h.sum() > 0:  # Dynamo cannot trace a branch on a tensor's value: it breaks
                return h * 2
            return h - 1

    side = compiled_side(TorchTask(Branchy(), (torch.randn(2, 4),)), "infer", None)
    side.step()
    side.mark_first_call_done()
    found = side.diagnostics()
    assert found["graph_count"] >= 2
    assert found["graph_breaks"] >= 1
    assert any("branch" in r.lower() for r in found["graph_break_reasons"])
