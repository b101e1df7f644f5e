"""`lab diff A B` and the gate's "What changed" section (lab.judge.diff), through the command line.

The two stored runs in tests/fixtures/diff/ were made with the same command on one user model
declaring `LAB_NAME = "tiny-net"`, its file holding model_base.py, then model_cand.py (one
LayerNorm added):

    lab profile --workload model.py:make --backend torch-compile --device cpu

(paths in the stored argv shortened; the Chrome traces left out, the hot tables kept).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import ROOT, run_lab

FIXTURES = ROOT / "tests" / "fixtures" / "diff"
BASE, CAND = FIXTURES / "base", FIXTURES / "cand"
KEY = "tiny-net:make[torch-compile|infer|cpu|fp32|]"
STORED_RUN = ROOT / "profiles" / "intel-r-xeon-r-processor-2c" / "20261128-083527-cpu-1558"
MOVED = "mlp[torch-eager|infer|cpu|fp32|batch=32]"


def test_diff_names_the_ops_and_kernels_an_added_layer_brings():
    result = run_lab("diff", str(BASE), str(CAND), "--json")
    assert result.returncode == 0, result.stderr
    (bench,) = json.loads(result.stdout)["benchmarks"]
    assert bench["name"] == KEY and bench["no_profile"] == []
    sides = {s["backend"]: s for s in bench["sides"]}
    eager = {r["name"]: r for r in sides["torch-eager"]["rows"]}
    for op in ("aten::layer_norm", "aten::native_layer_norm"):
        assert eager[op]["change"] == "appeared" and eager[op]["candidate_us"] > 0
        assert eager[op]["baseline_calls"] == 0 and eager[op]["candidate_calls"] == 1
    compiled = {r["name"]: r for r in sides["torch-compile"]["rows"]}
    assert compiled["graph_0_cpp_fused_native_layer_norm_relu_0"]["change"] == "appeared"
    assert compiled["graph_0_cpp_fused_relu_0"]["change"] == "vanished"
    # the graph's hash in its name is not a change: the call is one row on both sides
    assert compiled["## Call CompiledFxGraph <hash> ##"]["change"] in ("slower", "faster")
    # the largest change of the eager step is the added norm, and the rows account for it
    eager = sides["torch-eager"]
    step_delta = eager["candidate_step_us"] - eager["baseline_step_us"]
    assert sides["torch-eager"]["rows"][0]["name"] == "aten::native_layer_norm"
    assert 0 < sides["torch-eager"]["explained_us"] <= step_delta
    assert "+cpp_fused_native_layer_norm_relu_0 = async_compile" in bench["code_diff"]
    assert "/tmp/" not in bench["code_diff"]  # the compile cache's folder is not a change


def test_diff_markdown_shows_the_same_rows():
    result = run_lab("diff", str(BASE), str(CAND))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("## lab diff") and f"### `{KEY}`" in out
    assert "| appeared | host | `aten::native_layer_norm` | 0 -> 1 |" in out
    assert "| vanished | host | `graph_0_cpp_fused_relu_0` | 1 -> 0 |" in out
    assert "```diff" in out and "step time: - -> - (timed steps in both runs needed" in out


def test_diff_of_runs_that_share_no_benchmark_is_one_line_and_exit_2():
    result = run_lab("diff", str(BASE), str(STORED_RUN))
    assert result.returncode == 2
    assert result.stderr == "lab: error: the runs share no benchmark: nothing to diff\n"
    missing = run_lab("diff", str(BASE), "no-such-run")
    assert missing.returncode == 2 and missing.stderr.startswith("lab: error: no run at")


def _with_medians(source: Path, target: Path, scale: dict[str, float]) -> Path:
    """A copy of a stored run whose cells hold five process medians each, those of the
    benchmarks in `scale` multiplied: a run that regressed by a known factor."""
    shutil.copytree(source, target)
    doc = json.loads((target / "results.json").read_text())
    for bench in doc["benchmarks"]:
        info, factor = bench["extra_info"], scale.get(bench["name"], 1.0)
        base = info["median_s"]
        info["process_medians_s"] = [factor * base * (1 + 0.01 * i) for i in range(5)]
        info["processes"] = 5
        bench["stats"]["data"] = [factor * x for x in bench["stats"]["data"]]
        info["compile_s_cold"] = (info.get("compile_s_cold") or 0) * factor or None
    (target / "results.json").write_text(json.dumps(doc))
    return target


def test_the_gate_says_what_changed_in_a_benchmark_that_regressed(tmp_path):
    base = _with_medians(STORED_RUN, tmp_path / "base", {})
    cand = _with_medians(STORED_RUN, tmp_path / "cand", {MOVED: 1.5})
    summary = tmp_path / "summary.md"
    result = run_lab("gate", str(base), str(cand), "--markdown", str(summary))
    assert result.returncode == 1, result.stderr
    text = result.stdout
    assert "## What changed (lab diff)" in text
    section = text.split("## What changed (lab diff)")[1]
    assert f"### `{MOVED}`" in section and section.count("### `") == 1  # only what moved
    assert "(1.500x)" in section
    assert "no profile in the baseline and candidate" in section
    assert summary.read_text() == text
    as_json = json.loads(run_lab("gate", str(base), str(cand), "--json").stdout)
    assert [b["name"] for b in as_json["diff"]["benchmarks"]] == [MOVED]
    assert as_json["diff"]["benchmarks"][0]["ratio"] == pytest.approx(1.5, rel=1e-9)


def test_a_gate_where_nothing_moved_has_no_diff_section(tmp_path):
    base = _with_medians(STORED_RUN, tmp_path / "base", {})
    cand = _with_medians(STORED_RUN, tmp_path / "cand", {})
    result = run_lab("gate", str(base), str(cand), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["diff"] is None


MODEL = """import torch
import torch.nn as nn

LAB_NAME = "live-net"


def make():
    layers = [nn.Linear(32, 32), nn.ReLU()]{extra}
    return nn.Sequential(*layers, nn.Linear(32, 4)), torch.randn(8, 32)
"""


@pytest.mark.slow
def test_diff_of_two_profiles_made_now(tmp_path):
    """The same, made here: one eager profile per version of the model file."""
    runs = []
    for n, extra in enumerate(["", "\n    layers.append(nn.LayerNorm(32))"]):
        (tmp_path / "model.py").write_text(MODEL.format(extra=extra))
        out = tmp_path / f"runs{n}"
        result = run_lab("profile", "--workload", "model.py:make", "--backend", "torch-eager",
                         "--device", "cpu", "--out", str(out), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        (run,) = out.glob("*/*")
        runs.append(run)
    result = run_lab("diff", str(runs[0]), str(runs[1]), "--json")
    assert result.returncode == 0, result.stderr
    (bench,) = json.loads(result.stdout)["benchmarks"]
    (side,) = bench["sides"]
    rows = {r["name"]: r for r in side["rows"]}
    assert rows["aten::native_layer_norm"]["change"] == "appeared"
    assert rows["aten::native_layer_norm"]["candidate_us"] > 0
