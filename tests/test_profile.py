"""`lab profile` and `lab run --profile`: traces beside results, HTA on them, the Nsight commands.

The end-to-end fixtures run real cells in real subprocesses with tiny shapes; the hot table
itself is tested in test_hotkernels.py.
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

from lab.cell import trace as tracing  # noqa: F401
from lab.profiling import hotkernels  # noqa: F401
from lab.profiling import trace_pass as profile  # noqa: F401
from lab.store import folders as store  # noqa: F401
from lab.store import reader as results  # noqa: F401

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


# ---------------------------------------------------------------- torch traces for HTA

H200_TRACE = (Path(ROOT) / "profiles" / "nvidia-h200-x1" / "20261128-052754-cuda-profile" /
              "traces" / "transformer-torch-compile-infer-cuda-float32-batch=8-d_model=1024-"
                         "heads=16-seq=1024" / "torch-compile" / "trace.json")


@pytest.fixture(scope="module")
def cpu_torch_trace(tmp_path_factory):
    """A trace captured in this process the way a cell captures it: a run folder's
    `traces/<cell>/<backend>/trace.json`, seven measured steps of a small torch step."""
    import torch

    from lab.cell import measure
    from lab.cell.nvtx import Ranges

    layer, x = torch.nn.Linear(32, 32), torch.randn(4, 32)
    side = measure.Side("candidate", lambda: torch.relu(layer(x)))
    cell_dir = tmp_path_factory.mktemp("run") / profile.TRACES / "cell"
    captured = tracing.capture("torch", "cpu", [("torch-eager", side)],
                               Ranges("test", annotate="torch"), str(cell_dir))
    return cell_dir / captured["traces"]["torch-eager"]


def _needs_hta():
    if importlib.util.find_spec("hta") is None:
        pytest.skip("holistictraceanalysis not installed (pip install holistictraceanalysis)")


def test_torch_trace_marks_each_measured_step_as_a_profiler_step(cpu_torch_trace):
    doc = json.loads(cpu_torch_trace.read_text())
    assert doc["traceName"] == "traces/cell/torch-eager/trace.json"  # no machine folders
    xs = [e for e in doc["traceEvents"] if e.get("ph") == "X"]
    steps = sorted((e for e in xs if e["name"].startswith("ProfilerStep#")),
                   key=lambda e: e["ts"])
    samples = sorted((e for e in xs if e["name"] == "lab::sample"), key=lambda e: e["ts"])
    assert len(steps) == len(samples) == tracing.PROFILED_STEPS  # the warm-up step is left out
    for step, sample in zip(steps, samples, strict=True):  # one measured step per ProfilerStep
        assert step["ts"] <= sample["ts"] and \
            sample["ts"] + sample["dur"] <= step["ts"] + step["dur"] + 1e-3
    assert hotkernels.table_from_trace(cpu_torch_trace)["steps"] == tracing.PROFILED_STEPS


def test_holistic_trace_analysis_finds_the_steps_of_a_cpu_trace(cpu_torch_trace, caplog):
    _needs_hta()
    from hta.trace_analysis import TraceAnalysis

    analysis = TraceAnalysis(trace_dir=str(cpu_torch_trace.parent),
                             include_last_profiler_step=True)
    assert "ProfilerStep not found" not in caplog.text
    assert analysis.get_profiler_steps() == list(range(1, tracing.PROFILED_STEPS + 1))
    frame = analysis.t.get_trace(0)
    symbols = analysis.t.symbol_table.get_sym_table()
    sample_steps = [it for name, it in zip(frame["name"], frame["iteration"], strict=True)
                    if symbols[name] == "lab::sample"]
    assert sorted(sample_steps) == list(range(1, tracing.PROFILED_STEPS + 1))


def test_holistic_trace_analysis_breakdowns_on_the_h200_trace(tmp_path, caplog):
    """HTA's temporal and idle-time breakdowns are of GPU kernels (on a CPU-only trace HTA
    itself fails: it has no kernels to merge), so they are checked on the stored CUDA trace."""
    _needs_hta()
    import shutil

    from hta.trace_analysis import TraceAnalysis

    shutil.copy(H200_TRACE, tmp_path / "trace.json")  # HTA reads every trace in the folder
    analysis = TraceAnalysis(trace_dir=str(tmp_path))
    assert "ProfilerStep not found" in caplog.text  # captured before the lab marked steps
    temporal = analysis.get_temporal_breakdown(visualize=False).iloc[0]
    assert temporal["kernel_time(us)"] > 0
    assert temporal["compute_time_pctg"] > 80  # float32 GEMMs and attention, back to back
    idle, _ = analysis.get_idle_time_breakdown(visualize=False)
    assert set(idle["idle_category"]) >= {"host_wait", "kernel_wait"}


def test_nsight_wrappers_report_why_they_did_not_run(tmp_path, monkeypatch):
    from lab.cell.spec import CellSpec

    spec = CellSpec(workload="mlp", backend="torch-eager", option=None, mode="infer",
                    shape={"batch": 2}, precision="fp32", device="cpu", threads=1, repeats=1)
    assert profile.run_ncu(spec, tmp_path, tmp_path, 10) == {"status": "skipped: needs CUDA"}
    spec.device = "cuda"
    monkeypatch.setattr(profile.shutil, "which", lambda _: None)
    assert profile.run_ncu(spec, tmp_path, tmp_path, 10) == {"status": "skipped: ncu not installed"}
    assert profile.run_nsys(spec, tmp_path, tmp_path, 10)["status"] == "skipped: nsys not installed"


def test_ncu_command_profiles_one_measured_step_with_chosen_sections():
    command = profile._nsight_command("ncu", "ncu", Path("r"), kernels_per_step=12)
    assert command[command.index("--nvtx-include") + 1] == "lab@sample/"
    assert command[command.index("--clock-control") + 1] == "none" and "--nvtx" in command
    # the second measured step's 12 kernels, counted among those inside `sample` ranges
    assert command[command.index("--launch-skip") + 1] == "12"
    assert command[command.index("--launch-count") + 1] == "12"
    sections = [command[i + 1] for i, arg in enumerate(command) if arg == "--section"]
    assert sections == list(profile.NCU_SECTIONS) and "--set" not in command


def test_ncu_window_without_a_kernel_count_is_bounded():
    assert profile.ncu_window(None) == (0, profile.NCU_KERNELS_UNKNOWN)
    assert profile.ncu_window(0) == (0, profile.NCU_KERNELS_UNKNOWN)
    assert profile.ncu_window(14) == (14, 14)


def test_ncu_launch_window_comes_from_the_candidates_device_kernels():
    device_unit = hotkernels.KERNEL_UNITS["device"]
    entry = {"sides": {"torch-eager": {"kernels_per_step": 14, "kernel_unit": device_unit},
                       "torch-compile": {"kernels_per_step": 11.5, "kernel_unit": device_unit}}}
    assert profile._candidate_kernels(entry, "torch-compile") == 12  # cover the longer steps
    cpu = {"sides": {"torch-compile": {"kernels_per_step": 11,
                                       "kernel_unit": hotkernels.KERNEL_UNITS["torch-cpu"]}}}
    assert profile._candidate_kernels(cpu, "torch-compile") is None  # not device kernels
    assert profile._candidate_kernels({"sides": {}}, "torch-compile") is None


def test_ncu_export_is_the_raw_page_as_csv_under_a_timeout(tmp_path, monkeypatch):
    assert profile.ncu_export_command("ncu", Path("r.ncu-rep")) == [
        "ncu", "--import", "r.ncu-rep", "--csv", "--page", "raw", "--print-units", "base"]
    seen = {}

    def slow(command, **kwargs):
        seen.update(kwargs)
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    monkeypatch.setattr(profile.subprocess, "run", slow)
    out = profile._export_ncu_csv("ncu", tmp_path / "r.ncu-rep", tmp_path / "r.csv", tmp_path)
    assert seen["timeout"] == profile.NCU_EXPORT_TIMEOUT_S
    assert out == {"csv_error": f"export ran past {profile.NCU_EXPORT_TIMEOUT_S:.0f} s"}


def test_run_relative_trace_names():
    assert tracing.run_relative(Path("/a/traces/b/profiles/m/r/traces/cell/torch-eager/t.json")) \
        == "traces/cell/torch-eager/t.json"
    assert tracing.run_relative(Path("/elsewhere/t.json")) == "t.json"


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
    doc = results.load(path)
    cells = {u["extra_info"]["backend"]: u["extra_info"] for u in doc["lab"]["unmeasured"]}
    return path.parent, doc, cells, result.stdout


@pytest.mark.slow
def test_profile_links_traces_and_tables_from_extra_info(transformer_profile):
    run_dir, doc, cells, _ = transformer_profile
    assert doc["benchmarks"] == [] and doc["lab"]["kind"] == "profile"  # no timings from traces
    assert set(cells) == {"torch-eager", "torch-compile"}
    compiled = cells["torch-compile"]["profile"]
    assert compiled["status"] == "ok" and compiled["steps"] == tracing.PROFILED_STEPS
    assert set(compiled["sides"]) == {"torch-eager", "torch-compile"}
    for cell in cells.values():
        for side in cell["profile"]["sides"].values():
            for key in ("trace", "hot_csv", "hot_json"):
                assert (run_dir / side[key]).is_file(), side[key]
        assert cell["profile"]["ncu"] == {"status": "skipped: needs CUDA"}
        assert cell["profile"]["nsys"] == {"status": "skipped: needs CUDA"}


@pytest.mark.slow
def test_holistic_trace_analysis_loads_traces_with_the_measured_ranges(transformer_profile):
    _needs_hta()
    from hta import trace_analysis as hta

    run_dir, _, cells, _ = transformer_profile
    for side in cells["torch-compile"]["profile"]["sides"].values():
        analysis = hta.TraceAnalysis(trace_dir=str((run_dir / side["trace"]).parent),
                                     include_last_profiler_step=True)
        frame = analysis.t.get_trace(0)
        symbols = analysis.t.symbol_table.get_sym_table()
        names = [symbols[i] for i in frame["name"]]
        assert names.count("lab::sample") == tracing.PROFILED_STEPS
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
    assert "kernels per step" in stdout and "host events, % of the step's host wall time" in stdout


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
    doc = results.load(path)
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
             for u in results.load(path)["lab"]["unmeasured"]}
    for backend, eager in (("jax-jit", "jax-eager"), ("tf-xla", "tf-eager")):
        entry = cells[backend]
        assert entry["status"] == "ok", entry
        for side in (eager, backend):
            trace = path.parent / entry["sides"][side]["trace"]
            with gzip.open(trace, "rt") as f:
                events = json.load(f)["traceEvents"]
            steps = [e for e in events if e.get("ph") == "X" and e["name"] == "lab::sample"]
            assert len(steps) == tracing.PROFILED_STEPS
        assert entry["sides"][backend]["kernels_per_step"] >= 1
        assert any(p.endswith("after_optimizations.txt") for p in entry["generated_code"])


def test_generated_code_is_kept_under_short_hashed_names_with_an_index(tmp_path):
    """Inductor's own file names (50-odd characters) under a cell's folder made paths of over
    200 characters; the kept copy is named by its content's hash, and index.json names the
    original."""
    cache, cell = tmp_path / "cache", tmp_path / "cell"
    long_name = "c" + "x" * 51 + ".py"
    (cache / "ab").mkdir(parents=True)
    code = "triton_poi_fused_0 = async_compile.triton('k')\ndef call(args):\n    pass\n"
    (cache / "ab" / long_name).write_text(code)
    (cache / "ab" / "helper.py").write_text("x = 1\n")  # no call(): not the output code
    kept = profile._keep_inductor_code(str(cache), cell)
    assert [p.name for p in kept] == [kept[0].stem + ".py"] and len(kept[0].stem) == 12
    assert kept[0].read_text() == code
    assert json.loads((cell / "inductor" / "index.json").read_text()) == {
        kept[0].name: long_name}


def test_stored_generated_code_has_short_names_listed_in_its_index():
    for folder in sorted((Path(ROOT) / "profiles").rglob("inductor")):
        index = json.loads((folder / "index.json").read_text())
        assert sorted(p.name for p in folder.glob("*.py")) == sorted(index), folder
        assert all(len(Path(name).stem) == 12 for name in index), folder
