"""Machine-readable outputs: `--json` of check, gate and history (the schema `lab report
--claims/--gate` reads back), `--markdown` appending, `lab report --html/--csv`, the histogram
of `pytest-benchmark compare`, and the user's commit beside the lab's."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_lab

from lab.cli import main
from lab.store import folders as store
from lab.store import identity

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "profiles/amd-epyc-2c"
CPU_RUN = RUNS / "20261124-212813-cpu"
CHECK_RUN = RUNS / "20261124-214437-check-cpu"  # shares the compiled cells with CPU_RUN
SEED = ROOT / "claims/seed.toml"


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_check_json_has_a_verdict_per_claim_and_progress_stays_off_stdout(capsys):
    code, out, _ = _run(capsys, "check", SEED, "--run", CHECK_RUN, "--stored-only", "--json")
    assert code == 0
    doc = json.loads(out)  # stdout is the document alone
    claim_ids = [line.split('"')[1] for line in SEED.read_text().splitlines()
                 if line.replace(" ", "").startswith("id=")]
    assert [c["id"] for c in doc["claims"]] == claim_ids
    for claim in doc["claims"]:
        assert claim["verdict"] in ("supported", "refuted", "inconclusive")
        for cell in claim["cells"]:
            assert cell["verdict"] in ("supported", "refuted", "inconclusive")
            if cell["ratio"] is not None:
                lo, hi = cell["ci95"]
                assert lo <= cell["ratio"] <= hi
    # the same verdicts as the human output
    code, text, _ = _run(capsys, "check", SEED, "--run", CHECK_RUN, "--stored-only")
    for claim in doc["claims"]:
        assert f"{claim['verdict'].upper():13s}{claim['id']}:" in text


def test_gate_json_has_a_verdict_per_benchmark_and_the_exit_code_of_the_gate(capsys):
    code, out, _ = _run(capsys, "gate", CHECK_RUN, CPU_RUN, "--json")
    doc = json.loads(out)
    names = {identity.canonical(b["name"]) for r in (CHECK_RUN, CPU_RUN)
             for b in json.loads((r / "results.json").read_text())["benchmarks"]}
    assert {v["name"] for v in doc["verdicts"]} >= names
    assert code == (1 if doc["failed"] else 0)
    compared = [v for v in doc["verdicts"] if v["ratio"] is not None]
    assert compared, "the two runs share compiled cells"
    for v in compared:
        assert v["ci"][0] <= v["ratio"] <= v["ci"][1] and sum(v["processes"]) >= 2
    _, text, _ = _run(capsys, "gate", CHECK_RUN, CPU_RUN)
    for v in compared:
        assert f"| {v['verdict']} | {v['ratio']:.3f}x |" in text


def test_gate_markdown_appends_so_earlier_steps_are_kept(tmp_path, capsys):
    summary = tmp_path / "summary.md"
    summary.write_text("## an earlier step\n")
    for _ in range(2):
        _run(capsys, "gate", CHECK_RUN, CPU_RUN, "--markdown", summary)
    text = summary.read_text()
    assert text.startswith("## an earlier step\n")
    assert text.count("## lab gate:") == 2


def test_history_json_has_an_object_per_benchmark(capsys):
    code, out, _ = _run(capsys, "history", "--machine", "amd-epyc-2c", "--out", ROOT / "profiles",
                        "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["runs"] == sorted(p.name for p in RUNS.iterdir() if p.is_dir())
    assert doc["benchmarks"] and all(
        b["verdict"] == ("too_few_runs" if b["runs"] < doc["min_runs"] else b["verdict"])
        for b in doc["benchmarks"])


def test_report_reads_back_what_check_and_gate_print(tmp_path, capsys):
    """One schema: the --json documents go into the page's claim and gate tables."""
    _, claims, _ = _run(capsys, "check", SEED, "--run", CHECK_RUN, "--stored-only", "--json")
    _, gate, _ = _run(capsys, "gate", CHECK_RUN, CPU_RUN, "--json")
    (tmp_path / "check.json").write_text(claims)
    (tmp_path / "gate.json").write_text(gate)
    page = tmp_path / "r.html"
    code, _, err = _run(capsys, "report", CPU_RUN, "--html", page, "--claims",
                        tmp_path / "check.json", "--gate", tmp_path / "gate.json")
    assert code == 0 and str(page) in err
    text = page.read_text()
    for claim in json.loads(claims)["claims"]:
        assert f"<td>{claim['id']}</td>" in text
    for v in json.loads(gate)["verdicts"]:
        assert f'<td class="name">{v["name"]}</td><td class="verdict verdict-{v["verdict"]}"' \
            in text


def test_report_of_a_profiles_folder_writes_an_index(tmp_path, capsys):
    code, _, _ = _run(capsys, "report", ROOT / "profiles", "--html", tmp_path / "site")
    assert code == 0
    index = (tmp_path / "site" / "index.html").read_text()
    for run in RUNS.iterdir():
        assert run.name in index


def test_report_csv_to_stdout_has_a_row_per_cell(capsys):
    code, out, _ = _run(capsys, "report", CPU_RUN, "--csv", "-")
    doc = json.loads((CPU_RUN / "results.json").read_text())
    rows = list(csv.DictReader(io.StringIO(out)))
    # names read back in today's form (lab.store.identity): the stored run says float32
    assert code == 0 and [r["name"] for r in rows] == [identity.canonical(n)
                                                       for n in doc["lab"]["order"]]


@pytest.mark.parametrize("argv, message", [
    (["report", CPU_RUN, "--claims", "x.json"], "go with --html"),
    (["report", CPU_RUN, CHECK_RUN, "--csv", "-"], "one run"),
    (["report", CPU_RUN, "--html", "{tmp}/r.html", "--gate", "{tmp}/nope.json"], "cannot be read"),
    (["report", "{tmp}", "--html", "{tmp}/site"], "no stored runs under"),
    (["report", "{tmp}/missing", "--html", "{tmp}/r.html"], "no run at"),
])
def test_bad_report_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    code, out, err = _run(capsys, *[str(a).replace("{tmp}", str(tmp_path)) for a in argv])
    assert code == 2 and message in err and err.count("\n") == 1 and out == ""


def test_report_gate_file_of_another_schema_is_refused(tmp_path, capsys):
    (tmp_path / "g.json").write_text(json.dumps([{"name": "x"}]))
    code, _, err = _run(capsys, "report", CPU_RUN, "--html", tmp_path / "r.html", "--gate",
                        tmp_path / "g.json")
    assert code == 2 and "no 'verdicts' list" in err
    assert not (tmp_path / "r.html").exists()


def test_pytest_benchmark_compare_writes_its_histogram(tmp_path):
    exe = Path(sys.executable).with_name("pytest-benchmark")
    assert exe.exists(), "pytest-benchmark's console script is installed with the lab"
    done = subprocess.run([str(exe), "compare", str(CPU_RUN / "results.json"), "--histogram",
                           str(tmp_path / "h")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    svgs = sorted(tmp_path.glob("h*.svg"))
    assert svgs and all(p.read_text().lstrip().startswith(("<?xml", "<svg")) for p in svgs)


# ---------------------------------------------------------------- the user's commit

def _git(cwd: Path, *args) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture
def user_repo(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "their-project"
    (repo / "models").mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "trunk")
    _git(repo, "config", "user.email", "dev@example.com")
    _git(repo, "config", "user.name", "dev")
    (repo / "models" / "net.py").write_text("def make():\n    pass\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "model")
    store.workload_commit.cache_clear()
    yield repo
    store.workload_commit.cache_clear()


def test_a_user_workload_records_the_commit_of_its_own_repository(user_repo):
    source = f"{user_repo / 'models/net.py'}:make"
    commit = store.workload_commit(source)
    assert commit == {"id": _git(user_repo, "rev-parse", "HEAD"), "dirty": False,
                      "branch": "trunk", "project": "their-project", "file": "models/net.py"}
    info = store.commit_info([source, "mlp"])
    assert info["user_commits"] == {source: commit}  # the built-in mlp has none
    lab_head = _git(ROOT, "rev-parse", "HEAD")
    assert info["id"] == lab_head != commit["id"]  # the lab's commit stays beside it


def test_an_edited_user_file_is_dirty_and_a_file_outside_git_is_unversioned(user_repo,
                                                                            tmp_path):
    (user_repo / "models" / "net.py").write_text("def make():\n    return 1\n")
    assert store.workload_commit(f"{user_repo / 'models/net.py'}:make")["dirty"] is True
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "m.py").write_text("")
    assert store.workload_commit(f"{loose / 'm.py'}:f") == {"id": "unversioned", "dirty": None,
                                                           "file": "m.py"}
    assert store.workload_commit("transformer") is None
    assert "user_commits" not in store.commit_info()


def test_lab_run_stores_the_user_workloads_commit_in_its_cell_and_the_run(user_repo, tmp_path):
    (user_repo / "models" / "net.py").write_text(
        "import torch\n\ndef make():\n    return torch.nn.Linear(4, 4), torch.randn(2, 4)\n")
    _git(user_repo, "commit", "-qam", "a real model")
    source = f"{user_repo / 'models/net.py'}:make"
    out = run_lab("run", "--workload", source, "--backend", "torch-eager", "--device", "cpu",
                  "--repeats", "3", "--out", str(tmp_path / "runs"))
    assert out.returncode == 0, out.stdout + out.stderr
    (path,) = (tmp_path / "runs").glob("*/*/results.json")
    doc = json.loads(path.read_text())
    head = _git(user_repo, "rev-parse", "HEAD")
    (bench,) = doc["benchmarks"]
    assert bench["extra_info"]["workload_commit"]["id"] == head
    assert doc["commit_info"]["user_commits"][source]["id"] == head
    assert doc["commit_info"]["id"] == _git(ROOT, "rev-parse", "HEAD")


# -------------------------------------------------------- one table model (lab.reports.rows)

def _flagged_run(tmp_path) -> Path:
    """One run whose cells set every flag a table can show: noisy, busy, cut by the budget, a
    shape cycle's graphs, a precision, memory, latency tails, a break-even with its interval,
    one whose speedup interval spans 1x, and a failed cell with its reason."""
    from verdict_helpers import cell, write_run

    tails = {"n": 40, "p50": [1.0, 0.9, 1.1], "p90": [1.25, 1.2, 1.3],
             "p99": [1.75, 1.7, 1.8]}
    eager_tails = {"n": 40, "p50": [2.0, 1.9, 2.1], "p90": [2.25, 2.2, 2.3],
                   "p99": [2.75, 2.7, 2.8]}
    flagged = cell(
        "transformer", "torch-compile", "infer", [1e-3] * 9, precision="amp-bf16",
        framework="torch", baseline_backend="torch-eager", median_s=1e-3,
        baseline_median_s=2e-3, speedup=2.0, speedup_ci95=[1.25, 5.0], compile_s_cold=10.0,
        compile_s_warm=2.5, break_even_steps_cold=10_000.0, throughput=4321.0,
        throughput_ci95=[4000.0, 4500.0], throughput_unit="tokens/s", noisy=True,
        machine_busy=True, other_load_cores=1.5,
        sampling={"cut_by_budget": True, "rounds": 9, "rounds_planned": 30},
        diagnostics={"cycle": {"graphs": 3, "recompiles": 2}},
        memory={"step_peak_above_resident_mib": 6.6,
                "baseline_step_peak_above_resident_mib": 11.4,
                "ratio_eager_over_candidate": 1.73, "first_call_peak_above_start_mib": 61.9,
                "probe": "test probe"},
        latency=True, latency_ms=tails, baseline_latency_ms=eager_tails)
    spans = cell("mlp", "torch-compile", "infer", [1e-3] * 9, framework="torch",
                 baseline_backend="torch-eager", median_s=1e-3, baseline_median_s=1.1e-3,
                 speedup=1.1, speedup_ci95=[0.9, 1.3], compile_s_cold=5.0, compile_s_warm=1.0,
                 break_even_steps_cold=50_000.0)
    failed = cell("mlp", "jax-jit", "infer", None, status="fail_accuracy", framework="jax")
    folder = tmp_path / "run"
    folder.mkdir()
    write_run(folder, [flagged, spans, failed])
    return folder


# what each output must show of the flagged run, as the words every table uses
FLAGS = "ok (noisy, busy, 9 of 30 samples: budget, 3 graphs, 2 recompiles over the cycle)"
SHOWN = {"status": FLAGS, "precision": "amp-bf16", "memory": "11.4 / 6.6",
         "compile": "10.0 / 2.5", "break-even": "10,000 [6,250, 25,000]",
         "undetermined": "undetermined", "failed": "fail_accuracy: test",
         "speedup": "2.00x [1.25, 5.00]"}


def test_every_output_shows_every_field_of_the_table_model(tmp_path):
    """The terminal, markdown, HTML and CSV outputs render one row model: what one shows of a
    cell (all the status flags, memory, tails, the break-even's interval) none loses."""
    run = _flagged_run(tmp_path)
    terminal = run_lab("show", str(run), env={"COLUMNS": "400"})
    assert terminal.returncode == 0, terminal.stderr
    markdown = run_lab("report", str(run))
    assert markdown.returncode == 0, markdown.stderr
    page = tmp_path / "r.html"
    assert run_lab("report", str(run), "--html", str(page)).returncode == 0
    html_text = page.read_text()
    for name, text in (("terminal", terminal.stdout), ("markdown", markdown.stdout),
                       ("html", html_text)):
        for field, words in SHOWN.items():
            if name == "markdown" and field == "memory":
                words = "| 6.6 | 11.4 | 1.73x | 61.9 |"  # the report's memory table
            assert words in text, f"{name} lacks the {field}: {words!r}"
    # the latency tails: p90 / p99 of the backend and of its eager
    for text in (terminal.stdout, html_text):
        assert "1.25 / 1.75" in text and "2.25 / 2.75" in text
    assert "1.2 [1.2, 1.3]" in markdown.stdout or "1.25" in markdown.stdout

    out = run_lab("report", str(run), "--csv", "-")
    rows = {r["backend"] + "|" + r["workload"]: r for r in csv.DictReader(io.StringIO(out.stdout))}
    row = rows["torch-compile|transformer"]
    assert row["status_flags"] == FLAGS[4:-1].replace(", 3 graphs", "; 3 graphs").replace(
        "noisy, busy, 9", "noisy; busy; 9")
    assert (row["noisy"], row["machine_busy"], row["other_load_cores"]) == ("true", "true", "1.5")
    assert row["precision"] == "amp-bf16" and row["step_peak_mib"] == "6.6"
    assert (row["p90_ms"], row["baseline_p99_ms"]) == ("1.25", "2.75")
    assert (float(row["break_even_cold_ci95_lo"]), float(row["break_even_cold_ci95_hi"])) == \
        pytest.approx((6250.0, 25000.0))
    assert (row["cycle_graphs"], row["cycle_recompiles"]) == ("3", "2")
    spans = rows["torch-compile|mlp"]
    assert spans["break_even_cold_ci95_hi"] == "inf"
    assert rows["jax-jit|mlp"]["status"] == "fail_accuracy"


# ---------------------------------------------------------------- the hot table's kinds

def _op(name: str, ts: float, dur: float) -> dict:
    return {"ph": "X", "cat": "cpu_op", "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": 1}


def test_an_op_has_one_kind_in_eager_and_compiled_hot_tables():
    """Eager runs `aten::addmm` inside `aten::linear`, a compiled graph calls it alone: it is a
    kernel in both tables, and only the outermost op of a nest is counted per step."""
    from lab.profiling import hotkernels

    step = {"ph": "X", "cat": "user_annotation", "name": "lab::sample", "pid": 1, "tid": 1}
    eager, compiled = [], []
    for i in range(3):
        t = 1000.0 * i
        eager += [{**step, "ts": t, "dur": 100.0}, _op("aten::linear", t + 1, 50.0),
                  _op("aten::addmm", t + 2, 40.0)]
        compiled += [{**step, "ts": t, "dur": 100.0}, _op("aten::addmm", t + 2, 40.0),
                     _op("cpp_fused_gelu_0", t + 50, 10.0)]
    kinds = {}
    for label, events in (("eager", eager), ("compiled", compiled)):
        table = hotkernels.hot_table(events)
        kinds[label] = {r["name"]: r["kind"] for r in table["rows"]}
        assert table["kernels_per_step"] == (1 if label == "eager" else 2)
    assert kinds["eager"]["aten::addmm"] == kinds["compiled"]["aten::addmm"] == "kernel"


# ---------------------------------------------------------------- a `lab profile` run

PROFILE_RUN = ROOT / "profiles/nvidia-h200-x1/20261128-052754-cuda-profile"


def test_show_and_report_of_a_profile_run_show_its_traces_not_a_table_of_dashes():
    shown = run_lab("show", str(PROFILE_RUN), env={"COLUMNS": "250"})
    assert shown.returncode == 0, shown.stderr
    assert "profile run 20261128-052754-cuda-profile" in shown.stdout
    for side in ("torch-compile", "torch-eager"):
        assert f"{side}: hottest by self time" in shown.stdout
        assert f"{side}/trace.json" in shown.stdout
    assert "cudaDeviceSynchronize" in shown.stdout and "eager ms" not in shown.stdout
    report = run_lab("report", str(PROFILE_RUN))
    assert report.returncode == 0, report.stderr
    assert "ok: " not in report.stdout and "| `cudaDeviceSynchronize` |" in report.stdout
    assert report.stdout.count("hottest by self time") == 2
