"""Stable benchmark identity (lab.store.identity): old names gate against new ones, a user workload
has one key however its path is typed, history splits series where a setting changed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, run_lab
from verdict_helpers import clear_busy

from lab.store import identity

STORED = ROOT / "profiles"
# the first runs on this project's 2-core Xeon were stored before precisions named cells
# (`float32`), the oldest of all on the 2-core EPYC (2026-11-24)
FIRST_WAVE_XEON = STORED / "intel-r-xeon-r-processor-2c" / "20261128-083720-cpu"
OLDEST = STORED / "amd-epyc-2c" / "20261124-205247-cpu"
OLDEST_MLP = STORED / "amd-epyc-2c" / "20261124-212813-cpu"
MODEL = ("import torch\n\n"
         "def f():\n    return torch.nn.Linear(8, 4), torch.randn(2, 8)\n")


def test_old_names_read_through_the_mapping():
    old = "transformer[torch-compile|infer|cpu|float32|batch=4,d_model=256,heads=4,seq=128]"
    assert identity.canonical(old) == old.replace("float32", "fp32")
    assert identity.canonical("mlp[jax-jit|train|cuda|bfloat16|batch=32]") == \
        "mlp[jax-jit|train|cuda|bf16|batch=32]"
    assert identity.canonical("mlp[torch-eager|infer|cpu|fp32|seq=1,batch=2]") == \
        "mlp[torch-eager|infer|cpu|fp32|batch=2,seq=1]"
    assert identity.canonical("./m.py:f[torch-eager|infer|cpu|fp32|]") == \
        "m.py:f[torch-eager|infer|cpu|fp32|]"
    new = "mlp[torch-compile:max-autotune|infer|cuda|amp-bf16|batch=32]"
    assert identity.canonical(new) == new  # today's names are their own keys
    assert identity.canonical("not a lab name") == "not a lab name"


def test_every_stored_run_reads_under_todays_keys():
    from lab.store import reader as results

    for path in STORED.glob("*/*/results.json"):
        for cell in results.cells(results.load(path)):
            assert "|float32|" not in cell["name"] and "|bfloat16|" not in cell["name"], path


def _busy_cleared(run: Path) -> None:
    clear_busy(run / "results.json")


@pytest.fixture(scope="module")
def new_mlp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("new")
    result = run_lab("run", "--workload", "mlp", "--backend", "torch-eager", "--mode", "infer",
                     "--device", "cpu", "--threads", "2", "--repeats", "5", "--out", str(out))
    assert result.returncode == 0, result.stderr
    (run,) = out.glob("*/*")
    _busy_cleared(run)
    return run


@pytest.mark.slow
def test_a_first_wave_run_gates_against_a_new_run(new_mlp_run, tmp_path):
    base = tmp_path / FIRST_WAVE_XEON.name
    shutil.copytree(FIRST_WAVE_XEON, base)
    result = run_lab("gate", str(base), str(new_mlp_run), "--allow-missing", "--json")
    assert result.returncode in (0, 1), result.stderr
    verdicts = {v["name"]: v for v in json.loads(result.stdout)["verdicts"]}
    row = verdicts["mlp[torch-eager|infer|cpu|fp32|batch=32]"]
    assert row["ratio"] is not None and row["verdict"] != "missing"  # compared, not orphaned
    assert not any("float32" in name for name in verdicts)


@pytest.mark.slow
def test_the_oldest_run_meets_a_new_run_under_one_key(new_mlp_run):
    """The oldest stored runs are from another machine: the gate refuses them (exit 2) for
    that reason, never for want of a shared benchmark, and compares them when forced."""
    result = run_lab("gate", str(OLDEST_MLP), str(new_mlp_run), "--allow-missing")
    assert result.returncode == 2 and "different machines" in result.stderr, result.stderr
    forced = run_lab("gate", str(OLDEST_MLP), str(new_mlp_run), "--allow-missing", "--force",
                     "--json")
    assert forced.returncode in (0, 1), forced.stderr
    names = {v["name"]: v for v in json.loads(forced.stdout)["verdicts"]}
    assert names["mlp[torch-eager|infer|cpu|fp32|batch=32]"]["ratio"] is not None
    resnet = run_lab("diff", str(OLDEST), str(OLDEST))  # the oldest of all diffs with itself
    assert resnet.returncode == 0 and "resnet50[torch-eager|train|cpu|fp32|" in resnet.stdout


def _git_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "models" / "m.py").write_text(MODEL)
    return repo


def _stored_names(out: Path) -> list[str]:
    (path,) = out.glob("*/*/results.json")
    return [b["name"] for b in json.loads(path.read_text())["benchmarks"]]


@pytest.mark.long  # three runs through the CLI; the key rule: test_keys_relative_to_the_git_root...
@pytest.mark.slow
def test_a_user_workload_has_one_key_however_its_path_is_typed(tmp_path):
    repo = _git_repo(tmp_path)
    key = "models/m.py:f[torch-eager|infer|cpu|fp32|]"
    for n, (cwd, spelling) in enumerate([(repo / "models", "./m.py:f"),
                                         (repo / "models", "m.py:f"),
                                         (tmp_path, str(repo / "models" / "m.py") + ":f")]):
        out = tmp_path / f"out{n}"
        result = run_lab("run", "--workload", spelling, "--backend", "torch-eager",
                         "--repeats", "3", "--out", str(out), cwd=cwd)
        assert result.returncode == 0, result.stderr
        assert _stored_names(out) == [key], spelling


def test_two_spellings_of_one_file_are_refused_as_one_workload_named_twice(tmp_path):
    repo = _git_repo(tmp_path)
    result = run_lab("run", "--workload", f"./m.py:f,m.py:f,{repo}/models/m.py:f",
                     "--backend", "torch-eager", "--out", str(tmp_path / "out"),
                     cwd=repo / "models")
    assert result.returncode == 2
    assert result.stderr.strip() == "lab: error: --workload names 'models/m.py:f' twice"
    assert not (tmp_path / "out").exists()


def test_keys_relative_to_the_git_root_and_the_declared_name(tmp_path, monkeypatch):
    repo = _git_repo(tmp_path)
    monkeypatch.chdir(repo / "models")
    spellings = ["m.py:f", "./m.py:f", "../models/m.py:f", f"{repo}/models/m.py:f"]
    assert {identity.workload_key(s) for s in spellings} == {"models/m.py:f"}
    monkeypatch.chdir(tmp_path)
    assert identity.workload_key(f"{repo}/models//m.py:f") == "models/m.py:f"
    assert identity.workload_key("mlp") == "mlp"
    (repo / "models" / "named.py").write_text('LAB_NAME = "tiny-linear"\n' + MODEL)
    assert identity.workload_key(f"{repo}/models/named.py:f") == "tiny-linear:f"
    # a name stored by a version before keys, with the path as typed: the same key
    stored = f"{repo}/models/m.py:f[torch-eager|infer|cpu|float32|]"
    assert identity.canonical(stored) == "models/m.py:f[torch-eager|infer|cpu|fp32|]"
    outside = tmp_path / "loose.py"  # in no git repository: from the current folder
    outside.write_text(MODEL)
    assert identity.workload_key(str(outside) + ":f") == "loose.py:f"


def test_a_bad_declared_name_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "m.py").write_text('LAB_NAME = "a|b"\n' + MODEL)
    result = run_lab("run", "--workload", f"{tmp_path}/m.py:f", "--backend", "torch-eager",
                     "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("lab: error: m.py: LAB_NAME must be a string of letters")
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_same_kind_of_machine_despite_memory_reported_a_tenth_apart():
    xeon = {"cpu_model": "Intel(R) Xeon(R) Processor", "cpu_count": 2, "memory_gib": 23.5,
            "machine": "x86_64", "gpus": []}
    assert identity.hardware_differences(xeon, {**xeon, "memory_gib": 23.6}) == []
    assert identity.hardware_differences(xeon, {**xeon, "memory_gib": 64.0}) == \
        ["memory_gib: 23.5 vs 64.0"]
    assert identity.hardware_differences(xeon, {**xeon, "cpu_count": 16}) == \
        ["cpu_count: 2 vs 16"]


def _history_runs(tmp_path: Path) -> Path:
    """Four copies of the first Xeon run (float32 names) and the later fp32 run, the last two
    of them with 1 thread: one machine's folder as `lab history` reads it."""
    machine = tmp_path / "runs" / "intel-r-xeon-r-processor-2c"
    sources = [FIRST_WAVE_XEON, STORED / "intel-r-xeon-r-processor-2c" /
               "20261128-083527-cpu-1558", FIRST_WAVE_XEON, FIRST_WAVE_XEON]
    for i, source in enumerate(sources):
        doc = json.loads((source / "results.json").read_text())
        doc["datetime"] = f"2026-12-0{i + 1}T00:00:00"
        for bench in doc["benchmarks"]:
            bench["extra_info"]["threads"] = 1 if i >= 2 else 2
        run = machine / f"run{i}"
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps(doc))
    return tmp_path / "runs"


def test_history_joins_old_and_new_names_and_splits_where_threads_changed(tmp_path):
    out = _history_runs(tmp_path)
    name = "mlp[torch-eager|infer|cpu|fp32|batch=32]"
    result = run_lab("history", "--machine", "intel-r-xeon-r-processor-2c", "--out", str(out),
                     "--benchmark", name.replace("fp32", "float32"), "--json")
    assert result.returncode == 0, result.stderr
    found = {b["name"]: b for b in json.loads(result.stdout)["benchmarks"]}
    assert set(found) == {f"{name} {{threads=2}}", f"{name} {{threads=1}}"}
    assert found[f"{name} {{threads=2}}"]["runs"] == 2  # float32 and fp32 names: one series
    assert found[f"{name} {{threads=1}}"]["setting_changes"] == [
        {"run_id": "run2", "what": "threads 2 -> 1"}]
    text = run_lab("history", "--machine", "intel-r-xeon-r-processor-2c", "--out", str(out),
                   "--benchmark", name)
    assert f"{name}: setting changed at run run2: threads 2 -> 1" in text.stdout
    assert text.stdout.count("setting changed") == 1


def test_the_report_history_plot_draws_one_line_per_thread_count(tmp_path):
    """The HTML report's history plot splits its lines as `lab history` does."""
    from lab.reports.html import figures
    from lab.reports.html.runs import Run
    from lab.store import reader as results

    runs = [Run(results.load(path), path.parent, results.cells(results.load(path)))
            for path in sorted(_history_runs(tmp_path).glob("*/*/results.json"))]
    series = figures.history_series(runs)
    name = "mlp[torch-eager|infer|cpu|fp32|batch=32]"
    ids = [run.run_id for run in runs]  # the stored run ids, in run order
    assert [run for run, _ in series[f"{name} {{threads=2}}"]] == ids[:2]
    assert [run for run, _ in series[f"{name} {{threads=1}}"]] == ids[2:]
    assert name not in series
