"""lab check: claim verdicts over stored runs (synthetic runs whose samples the test sets)."""

import pytest
from conftest import ROOT
from verdict_helpers import (
    HW,
    cell,
    check_one,
    claim_of,
    run_lab_main,
    samples,
    speedup_cell,
    write_run,
)

SPEEDUP = dict(metric="speedup", backend="torch-compile", workload="mlp", mode="infer")


@pytest.mark.parametrize("measured, expect, value, want", [
    (2.0, "at_least", 1.5, "supported"),
    (1.0, "at_least", 1.5, "refuted"),
    (1.5, "at_least", 1.5, "inconclusive"),
    (0.8, "up_to", 2.0, "refuted"),
    (3.0, "up_to", 2.0, "supported"),  # beating "up to 2x" refutes nothing
    (1.0, "about", 1.0, "supported"),
])
def test_speedup_claims_follow_the_rules(measured, expect, value, want):
    claim = claim_of(**SPEEDUP, expect=expect, value=value)
    result = check_one(claim, [speedup_cell("mlp", "torch-compile", "infer", measured)])
    assert result.verdict == want
    (c,) = result.cells
    assert c.ci95[0] <= c.ratio <= c.ci95[1] and abs(c.ratio - measured) / measured < 0.05
    assert "compile 20.0 s cold / 4.0 s warm" in c.compile_note


def test_failed_or_missing_cells_never_give_a_speedup_verdict():
    claim = claim_of(**{**SPEEDUP, "mode": ["infer", "train"]}, expect="at_least", value=1.5)
    bad = speedup_cell("mlp", "torch-compile", "infer", 3.0)
    bad["extra_info"]["status"] = "fail_accuracy"
    result = check_one(claim, [bad])
    assert result.verdict == "inconclusive"
    assert [c.ratio for c in result.cells] == [None, None]
    assert "fail_accuracy" in result.cells[0].reason and "not measured" in result.cells[1].reason


def test_up_to_takes_the_best_case_and_all_needs_every_cell():
    cells = [speedup_cell("mlp", "torch-compile", "infer", 0.8),
             speedup_cell("mlp", "torch-compile", "train", 1.9, seed=5)]
    best = check_one(claim_of(**{**SPEEDUP, "mode": ["infer", "train"]}, expect="up_to", value=2.0),
                  cells)
    assert best.verdict == "supported" and "mlp train" in best.reason
    every = check_one(claim_of(**{**SPEEDUP, "mode": ["infer", "train"]}, expect="at_least",
                          value=1.5), cells)
    assert every.verdict == "refuted"


def test_cross_process_ratios_are_widened():
    claim = claim_of(metric="throughput", backend="tf-graph", versus="torch-eager", workload="mlp",
                   mode="train", expect="about", value=1.0, tolerance=0.1)
    entries = [cell("mlp", "tf-graph", "train", samples(1e-3, seed=1)),
               cell("mlp", "torch-eager", "train", samples(1e-3, seed=2))]
    result = check_one(claim, entries)
    (c,) = result.cells
    # one process per side: the interval is the run-to-run floor's, far wider than the
    # within-process spread of 2%, so "about 1 within 10%" cannot be shown
    assert c.ci95[1] / c.ci95[0] > 1.3 and result.verdict == "inconclusive"
    assert "across processes" in c.reason
    speed = claim_of(metric="speedup", backend="tf-xla", versus="torch-compile", workload="mlp",
                   expect="about", value=1.0, tolerance=0.25)
    paired = check_one(speed, [speedup_cell("mlp", "tf-xla", "infer", 1.5),
                            speedup_cell("mlp", "torch-compile", "infer", 1.5, seed=3)])
    (c,) = paired.cells
    assert c.ratio == pytest.approx(1.0, rel=0.05) and c.ci95[0] < 0.9


def test_gpu_and_memory_claims_say_why_they_are_inconclusive():
    gpu = claim_of(metric="throughput", backend="tf-graph", versus="torch-eager",
                 workload="resnet50", mode="train", expect="about", value=1.0, device="cuda")
    assert check_one(gpu, []).reason.startswith("needs GPU")
    memory = claim_of(metric="memory", backend="tf-graph", versus="torch-eager", workload="mlp",
                    expect="about", value=1.0)
    assert "not measured" in check_one(memory, []).reason


def test_lab_check_on_a_stored_run_prints_every_seedclaim_of(tmp_path):
    path = write_run(tmp_path, [speedup_cell("mlp", "torch-compile", "infer", 0.7),
                                speedup_cell("transformer", "torch-compile", "train", 1.4)])
    result = run_lab_main("check", str(ROOT / "claims" / "seed.toml"), "--run", str(path),
                          "--stored-only")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "SUPPORTED    compile-llm-training-30-50" in out
    assert "INCONCLUSIVE resnet50-training-parity" in out and "needs GPU" in out
    assert "REFUTED      compile-up-to-2x" in out and HW in out
    needs_gpu = next(line for line in out.splitlines() if "needs GPU:" in line)
    assert "resnet50-training-parity" in needs_gpu and "gpt-fast-decode-4x" in needs_gpu
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text(path.read_text()[:100])
    bad = run_lab_main("check", str(ROOT / "claims" / "seed.toml"), "--run", str(corrupt))
    assert bad.returncode == 2 and "truncated" in bad.stderr and bad.stderr.count("\n") == 1
