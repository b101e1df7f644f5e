"""`lab profile` and `lab run --profile`: traces beside results, hot-kernel tables, Nsight stubs.

The end-to-end fixtures run real cells in real subprocesses with tiny shapes; the hot-table
arithmetic is checked on hand-made traces whose answers are known.
"""

import gzip
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from lab import hotkernels, profile, store

TINY = ("--shape", "d_model=32", "--seq", "16", "--batch", "2")


def run_lab(*args: str, timeout: float = 600):
    """The `lab` command as the console script runs it: `lab.cli.main` imported, not run as
    __main__ (under `python -m lab.cli`, lab.cli.UsageError raised by the delegated command
    modules is another class than the __main__ one that main() catches)."""
    return subprocess.run([sys.executable, "-c", "import sys; from lab.cli import main; "
                           "sys.exit(main(sys.argv[1:]))", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout, env=dict(os.environ))


def _compare(path: Path):
    """`pytest-benchmark compare FILE` (its console script's entry point)."""
    return subprocess.run([sys.executable, "-c", "import sys; from pytest_benchmark.cli import "
                           "main; sys.argv[0] = 'pytest-benchmark'; sys.exit(main())",
                           "compare", str(path)], capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- hot table on made-up traces

def _x(name, ts, dur, tid=1, cat="cpu_op", **args):
    event = {"ph": "X", "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": tid, "cat": cat}
    if args:
        event["args"] = args
    return event


def _two_steps():
    """Two 100 us steps; in each, linear (60 us) wraps addmm (50 us), then relu (20 us).
    Step 2's addmm is slower (70 us): medians, not means, decide the table."""
    events = [_x("warm-up op outside any step", 0, 500)]
    for t0, mm in ((1000, 50), (2000, 70)):
        events += [_x("lab::sample", t0, 100 + (mm - 50), cat="user_annotation"),
                   _x("aten::linear", t0 + 5, mm + 10), _x("aten::addmm", t0 + 10, mm),
                   _x("aten::relu", t0 + mm + 20, 20)]
    return events


def test_self_time_counts_nested_ops_once_and_uses_medians():
    table = hotkernels.hot_table(_two_steps())
    rows = {r["name"]: r for r in table["rows"]}
    assert table["steps"] == 2
    assert table["step_us"] == pytest.approx(110.0)  # median of 100 and 120
    assert rows["aten::addmm"]["self_us_per_step"] == pytest.approx(60.0)  # median(50, 70)
    assert rows["aten::linear"]["self_us_per_step"] == pytest.approx(10.0)  # 60-50, 80-70
    assert rows["aten::addmm"]["mean_us"] == pytest.approx(60.0)
    assert rows["aten::relu"]["share_of_step"] == pytest.approx(20 / 110)
    assert rows["aten::linear"]["count_per_step"] == 1
    assert "warm-up op outside any step" not in rows and "lab::sample" not in rows
    assert [r["name"] for r in table["rows"]][0] == "aten::addmm"


def test_cpu_kernel_count_is_outermost_ops():
    table = hotkernels.hot_table(_two_steps())
    assert table["kernels_per_step"] == 2  # linear and relu; addmm runs inside linear
    kinds = {r["name"]: r["kind"] for r in table["rows"]}
    assert kinds == {"aten::linear": "kernel", "aten::relu": "kernel", "aten::addmm": "other"}


def test_device_kernels_win_over_host_ops():
    events = _two_steps() + [_x("volta_sgemm", 1020, 30, tid=7, cat="kernel"),
                             _x("volta_sgemm", 2020, 30, tid=7, cat="kernel")]
    table = hotkernels.hot_table(events)
    assert table["kernels_per_step"] == 1 and "device" in table["kernel_unit"]


def test_xla_ops_are_counted_and_end_markers_dropped():
    events = [_x("lab::sample", 0, 100, cat=None),
              _x("fusion.1", 10, 30, tid=2, cat=None, hlo_op="fusion.1"),
              _x("end: fusion.1", 40, 0.1, tid=2, cat=None),
              _x("dot.2", 50, 30, tid=2, cat=None, hlo_op="dot.2")]
    table = hotkernels.hot_table(events)
    assert table["kernels_per_step"] == 2 and "XLA" in table["kernel_unit"]
    assert {r["name"] for r in table["rows"]} == {"fusion.1", "dot.2"}


def test_trace_without_lab_ranges_is_an_error(tmp_path):
    path = tmp_path / "trace.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": [_x("aten::mm", 0, 5)]}, f)
    with pytest.raises(hotkernels.TraceError, match="no lab::sample ranges"):
        hotkernels.table_from_trace(path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(hotkernels.TraceError, match="not a readable Chrome trace"):
        hotkernels.load_events(tmp_path / "bad.json")


def test_hot_table_files_round_trip(tmp_path):
    table = hotkernels.hot_table(_two_steps())
    paths = hotkernels.write(table, tmp_path)
    assert json.loads(paths["json"].read_text()) == table
    lines = paths["csv"].read_text().splitlines()
    assert lines[0].startswith("name,kind,count_per_step") and len(lines) == 1 + len(table["rows"])


def test_nsight_wrappers_report_why_they_did_not_run(tmp_path, monkeypatch):
    from lab.cell import CellSpec

    spec = CellSpec(workload="mlp", backend="torch-eager", option=None, mode="infer",
                    shape={"batch": 2}, dtype="float32", device="cpu", threads=1, repeats=1)
    assert profile.run_ncu(spec, tmp_path, tmp_path, 10) == {"status": "skipped: needs CUDA"}
    spec.device = "cuda"
    monkeypatch.setattr(profile.shutil, "which", lambda _: None)
    assert profile.run_ncu(spec, tmp_path, tmp_path, 10) == {"status": "skipped: ncu not installed"}
    assert profile.run_nsys(spec, tmp_path, tmp_path, 10)["status"] == "skipped: nsys not installed"


def test_ncu_command_filters_on_the_measured_range():
    command = profile._nsight_command("ncu", "ncu", Path("r"))
    assert command[command.index("--nvtx-include") + 1] == "lab@sample/"
    assert command[command.index("--clock-control") + 1] == "none" and "--nvtx" in command


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("argv, message", [
    (("--workload", "nope"), "unknown workload"),
    (("--workload", "transformer", "--backend", "torch-bogus"), "unknown backend"),
    (("--workload", "transformer", "--shape", "d_model"), "--shape expects key=value"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path):
    result = run_lab("profile", *argv, "--device", "cpu", "--out", str(tmp_path))
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- lab profile, end to end

@pytest.fixture(scope="module")
def transformer_profile(tmp_path_factory):
    out = tmp_path_factory.mktemp("profiles")
    result = run_lab("profile", "--workload", "transformer", "--backend",
                     "torch-eager,torch-compile", "--device", "cpu", *TINY, "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    (path,) = out.glob("*/*/results.json")
    doc = store.load_results(path)
    cells = {u["extra_info"]["backend"]: u["extra_info"] for u in doc["lab"]["unmeasured"]}
    return path.parent, doc, cells, result.stdout


@pytest.mark.slow
def test_profile_links_traces_and_tables_from_extra_info(transformer_profile):
    run_dir, doc, cells, _ = transformer_profile
    assert doc["benchmarks"] == [] and doc["lab"]["kind"] == "profile"  # no timings from traces
    assert set(cells) == {"torch-eager", "torch-compile"}
    compiled = cells["torch-compile"]["profile"]
    assert compiled["status"] == "ok" and compiled["steps"] == profile.PROFILED_STEPS
    assert set(compiled["sides"]) == {"torch-eager", "torch-compile"}
    for cell in cells.values():
        for side in cell["profile"]["sides"].values():
            for key in ("trace", "hot_csv", "hot_json"):
                assert (run_dir / side[key]).is_file(), side[key]
        assert cell["profile"]["ncu"] == {"status": "skipped: needs CUDA"}
        assert cell["profile"]["nsys"] == {"status": "skipped: needs CUDA"}


@pytest.mark.slow
def test_holistic_trace_analysis_loads_traces_with_the_measured_ranges(transformer_profile):
    if importlib.util.find_spec("hta") is None:
        pytest.skip("holistictraceanalysis not installed")
    from hta import trace_analysis as hta

    run_dir, _, cells, _ = transformer_profile
    for side in cells["torch-compile"]["profile"]["sides"].values():
        analysis = hta.TraceAnalysis(trace_dir=str((run_dir / side["trace"]).parent))
        frame = analysis.t.get_trace(0)
        symbols = analysis.t.symbol_table.get_sym_table()
        names = [symbols[i] for i in frame["name"]]
        assert names.count("lab::sample") == profile.PROFILED_STEPS
        assert any(n.startswith("aten::") for n in names)


@pytest.mark.slow
def test_fusion_shows_in_kernel_counts_and_generated_code(transformer_profile):
    run_dir, _, cells, stdout = transformer_profile
    sides = cells["torch-compile"]["profile"]["sides"]
    eager, compiled = sides["torch-eager"], sides["torch-compile"]
    assert 0 < compiled["kernels_per_step"] < eager["kernels_per_step"]
    hot = json.loads((run_dir / compiled["hot_json"]).read_text())
    assert any("cpp_fused" in r["name"] and r["kind"] == "kernel" for r in hot["rows"])
    code = [run_dir / p for p in cells["torch-compile"]["profile"]["generated_code"]]
    assert code and all("def call(" in p.read_text() for p in code)
    assert cells["torch-compile"]["profile"]["generated_kernels"] >= 1
    assert "kernels per step" in stdout and "hottest by self time" in stdout


@pytest.mark.slow
def test_pytest_benchmark_compare_reads_profile_results(transformer_profile):
    run_dir = transformer_profile[0]
    result = _compare(run_dir / "results.json")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr


# ---------------------------------------------------------------- lab run --profile

@pytest.mark.slow
def test_run_profile_adds_links_without_touching_samples(tmp_path):
    result = run_lab("run", "--workload", "mlp", "--backend", "torch-eager", "--device", "cpu",
                     "--batch", "8", "--repeats", "4", "--profile", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    (path,) = tmp_path.glob("*/*/results.json")
    doc = store.load_results(path)
    (bench,) = doc["benchmarks"]
    assert len(bench["stats"]["data"]) == 4  # the timed pass's samples, nothing added
    link = bench["extra_info"]["profile"]
    assert link["status"] == "ok"
    assert (path.parent / link["sides"]["torch-eager"]["trace"]).is_file()
    compare = _compare(path)
    assert compare.returncode == 0 and "mlp[torch-eager" in compare.stdout, compare.stderr


# ---------------------------------------------------------------- JAX and TensorFlow traces

@pytest.mark.slow
def test_jax_and_tf_traces_are_chrome_trace_json(tmp_path):
    missing = [p for p in ("jax", "tensorflow") if importlib.util.find_spec(p) is None]
    if missing:  # find_spec, not importorskip: the frameworks stay out of this process
        pytest.skip(f"{' and '.join(missing)} not installed")
    result = run_lab("profile", "--workload", "mlp", "--backend", "jax-jit,tf-xla",
                     "--device", "cpu", "--batch", "8", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    (path,) = tmp_path.glob("*/*/results.json")
    cells = {u["extra_info"]["backend"]: u["extra_info"]["profile"]
             for u in store.load_results(path)["lab"]["unmeasured"]}
    for backend, eager in (("jax-jit", "jax-eager"), ("tf-xla", "tf-eager")):
        entry = cells[backend]
        assert entry["status"] == "ok", entry
        for side in (eager, backend):
            trace = path.parent / entry["sides"][side]["trace"]
            with gzip.open(trace, "rt") as f:
                events = json.load(f)["traceEvents"]
            steps = [e for e in events if e.get("ph") == "X" and e["name"] == "lab::sample"]
            assert len(steps) == profile.PROFILED_STEPS
        assert entry["sides"][backend]["kernels_per_step"] >= 1
        assert any(p.endswith("after_optimizations.txt") for p in entry["generated_code"])
