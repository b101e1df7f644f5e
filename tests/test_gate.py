"""lab gate and lab history: statistics over stored runs, exit codes, refusals."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from verdict_helpers import HARDWARE, cell, run_lab_main, samples, write_run

from lab.judge import gate as regression
from lab.store import reader as results

CALIBRATE = ROOT / "bench" / "calibrate_gate.py"


def _run(folder, medians_s, name="mlp", status="ok", hardware=None, when=""):
    """A stored run with one benchmark measured in len(medians_s) processes."""
    folder.mkdir(parents=True, exist_ok=True)
    data = [s for i, m in enumerate(medians_s) for s in samples(m, 10, seed=i)]
    entry = cell(name, "torch-eager", "infer", data if status == "ok" else None, status=status,
                 process_medians_s=list(medians_s))
    return write_run(folder, [entry], hardware, when)


def test_gate_compares_process_medians(tmp_path):
    base = _run(tmp_path / "a", [1.00e-3, 1.02e-3, 0.98e-3, 1.01e-3, 0.99e-3])
    same = _run(tmp_path / "b", [1.01e-3, 0.99e-3, 1.00e-3, 1.02e-3, 0.98e-3])
    slow = _run(tmp_path / "c", [1.30e-3, 1.33e-3, 1.28e-3, 1.31e-3, 1.29e-3])
    load = results.load_run
    (row,) = regression.compare_runs(load(str(base)), load(str(slow)), 0.05)
    assert row.verdict == "regressed" and row.ratio > 1.25 and row.processes == (5, 5)
    (row,) = regression.compare_runs(load(str(base)), load(str(same)), 0.05)
    assert row.verdict in ("unchanged", "inconclusive")
    (row,) = regression.compare_runs(load(str(slow)), load(str(base)), 0.05)
    assert row.verdict == "improved"


def test_gate_exit_codes_and_markdown(tmp_path):
    base = _run(tmp_path / "a", [1.00e-3, 1.02e-3, 0.98e-3, 1.01e-3, 0.99e-3])
    slow = _run(tmp_path / "c", [1.30e-3, 1.33e-3, 1.28e-3, 1.31e-3, 1.29e-3])
    summary = tmp_path / "gate.md"
    result = run_lab_main("gate", str(base.parent), str(slow), "--markdown", str(summary))
    assert result.returncode == 1, result.stderr
    assert "## lab gate: FAIL" in result.stdout and "| regressed |" in result.stdout
    assert "`mlp[torch-eager\\|infer\\|cpu" in result.stdout  # '|' escaped inside the table
    assert summary.read_text() == result.stdout
    assert run_lab_main("gate", str(base), str(base)).returncode == 0


def test_absent_cells_are_missing_and_newly_failing_cells_regressed(tmp_path):
    base = _run(tmp_path / "a", [1e-3] * 3)
    failed = _run(tmp_path / "b", [1e-3] * 3, status="fail_accuracy")
    other = _run(tmp_path / "c", [1e-3] * 3, name="transformer")
    rows = regression.compare_runs(results.load_run(str(base)), results.load_run(str(failed)), 0.05)
    assert [r.verdict for r in rows] == ["regressed"]
    assert rows[0].reason.startswith("candidate fail_accuracy")
    rows = regression.compare_runs(results.load_run(str(base)), results.load_run(str(other)), 0.05)
    assert sorted(r.verdict for r in rows) == ["missing", "missing"]
    # no benchmark in common: nothing was compared, so the gate refuses rather than pass
    assert run_lab_main("gate", str(base), str(other)).returncode == 2
    assert run_lab_main("gate", str(base), str(failed)).returncode == 1


def test_gate_refuses_runs_of_different_machines_unless_forced(tmp_path):
    base = _run(tmp_path / "a", [1e-3] * 3)
    other = _run(tmp_path / "b", [1e-3] * 3, hardware={**HARDWARE, "cpu_count": 64})
    refused = run_lab_main("gate", str(base), str(other))
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "different machines" in refused.stderr
    assert "cpu_count: 2 vs 64" in refused.stderr
    forced = run_lab_main("gate", str(base), str(other), "--force")
    assert forced.returncode == 0 and "forced across machines" in forced.stdout


@pytest.mark.parametrize("damage, words", [
    (lambda p: p.write_text(""), "is empty"),
    (lambda p: p.write_text(p.read_text()[:200]), "truncated"),
    (lambda p: p.write_text(json.dumps({"benchmarks": {}})), "not a pytest-benchmark"),
    (lambda p: p.unlink(), "no run at"),
])
def test_unusable_baseline_is_one_line_and_exit_2(tmp_path, damage, words):
    base = _run(tmp_path / "a", [1e-3] * 3)
    cand = _run(tmp_path / "b", [1e-3] * 3)
    damage(base)
    result = run_lab_main("gate", str(base), str(cand))
    assert result.returncode == 2 and words in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""


@pytest.mark.parametrize("threshold", ["five", "0", "150%", "-5%"])
def test_bad_threshold_is_exit_2(tmp_path, threshold):
    base = _run(tmp_path / "a", [1e-3] * 3)
    result = run_lab_main("gate", str(base), str(base), "--threshold", threshold)
    assert result.returncode == 2 and "--threshold" in result.stderr


def test_history_finds_the_run_where_a_benchmark_got_slower(tmp_path):
    machine = tmp_path / "runs" / "test-cpu-2c"
    for i in range(12):
        level = 1e-3 if i < 6 else 1.25e-3
        _run(machine / f"run{i:02d}", [level * (1 + 0.01 * ((i * 7) % 3 - 1))],
             when=f"2026-01-01T00:{i:02d}:00")
    (machine / "broken").mkdir()
    (machine / "broken" / "results.json").write_text("{")
    result = run_lab_main("history", "--out", str(tmp_path / "runs"), "--machine", "test-cpu-2c")
    assert result.returncode == 0, result.stderr
    assert "12 runs (1 unreadable, skipped)" in result.stdout
    assert "change at run run06: 1.2" in result.stdout and "slower" in result.stdout
    nothing = run_lab_main("history", "--out", str(tmp_path / "runs"), "--machine", "nope")
    assert nothing.returncode == 2 and "test-cpu-2c" in nothing.stderr


def test_pytest_benchmark_compare_reads_a_stored_run(tmp_path):
    path = write_run(tmp_path, [cell("mlp", "torch-eager", "infer", samples(1e-3))])
    # pytest-benchmark's own console script, installed beside this interpreter
    script = Path(sys.executable).parent / "pytest-benchmark"
    result = subprocess.run([str(script), "compare", str(path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "mlp[torch-eager|infer|cpu|float32|batch=32]" in result.stdout


# ---------------------------------------------------------------- real runs, real slowdown

@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """Baseline, A/A candidate and a candidate doing five times the work (LAB_GATE_BLOCKS), each a
    real `lab run` of three processes; one thread so neighbours on the CI machine matter less."""
    out = tmp_path_factory.mktemp("gate-runs")
    workload = f"{CALIBRATE}:make_model"
    runs = {}
    for label, blocks in (("base", 20), ("same", 20), ("slow", 100)):
        result = run_lab_main("run", "--workload", workload, "--backend", "torch-eager",
                              "--device", "cpu", "--threads", "1", "--repeats", "10",
                              "--processes", "3", "--out", str(out / label),
                              env={"LAB_GATE_BLOCKS": str(blocks)})
        assert result.returncode == 0, result.stdout + result.stderr
        (runs[label],) = (out / label).glob("*/*/results.json")
    return runs


@pytest.mark.long  # three real runs of several processes each: minutes on 2 cores
@pytest.mark.slow
def test_real_aa_pair_passes_and_real_slowdown_fails(real_runs):
    doc = results.load_run(str(real_runs["base"]))
    (bench,) = doc["benchmarks"]
    assert len(bench["extra_info"]["process_medians_s"]) == 3
    assert len(bench["stats"]["data"]) == 30
    for label, quiet_code, quiet_row in (("same", 0, ""), ("slow", 1, "| regressed |")):
        gate = run_lab_main("gate", str(real_runs["base"]), str(real_runs[label]))
        busy = [c["name"] for r in ("base", label)
                for c in results.cells(results.load_run(str(real_runs[r])))
                if c.get("machine_busy")]
        if busy:  # neighbours held the cores: the gate has nothing it may decide on
            assert gate.returncode == 2 and "busy" in gate.stderr, gate.stdout + gate.stderr
        else:
            assert gate.returncode == quiet_code, gate.stdout + gate.stderr
            assert quiet_row in gate.stdout


def test_processes_keep_every_sample_and_each_process_median(monkeypatch):
    from lab.cell import launch as runner
    from lab.cell.spec import CellOutcome, CellResult

    answers = iter([
        CellResult(samples_s=[1.0, 3.0], baseline_samples_s=[2.0, 2.0], first_call_s=9.0),
        CellResult(samples_s=[5.0, 7.0], baseline_samples_s=[4.0, 6.0]),
        CellResult(samples_s=[1.0]),
        CellResult.failed("timeout", "slow")])
    monkeypatch.setattr(runner, "run_cell", lambda spec, label, t, on_phase=None:
                        CellOutcome(spec, label, next(answers), 1.0))
    monkeypatch.setattr(runner, "run_cell_process", lambda spec, t: (next(answers), 0.5))
    outcome = runner.run_cell_processes("spec", "torch-compile", 10.0, processes=2)
    assert outcome.result.samples_s == [1.0, 3.0, 5.0, 7.0]
    assert outcome.result.baseline_samples_s == [2.0, 2.0, 4.0, 6.0]
    assert outcome.result.first_call_s == 9.0  # the cold compile is the first process's
    assert outcome.extra == {"processes": 2, "process_medians_s": [2.0, 6.0],
                             "process_baseline_medians_s": [2.0, 5.0]}
    failed = runner.run_cell_processes("spec", "torch-compile", 10.0, processes=2)
    assert failed.status == "timeout" and failed.result.reason == "process 2/2: slow"
