"""A cell's time budget: a slow but valid cell ends with fewer samples, said so, never
`timeout`; and every cell stores where its wall time went."""

from __future__ import annotations

import json

from conftest import run_lab

from lab.cell import main as cell
from lab.cell import measure
from lab.cell.spec import CellSpec


def _spec(**kw) -> CellSpec:
    base = dict(workload="mlp", backend="torch-eager", option=None, mode="infer",
                shape={"batch": 2}, precision="fp32", device="cpu", threads=1, repeats=500,
                warmup_steps=1, warmup_seconds=0.0)
    return CellSpec(**{**base, **kw})


def test_a_spent_budget_keeps_the_minimum_samples_and_says_it_cut_them():
    result = cell.run(_spec(budget_s=0.0))  # the budget ran out before sampling began
    assert result.status == "ok"
    assert len(result.samples_s) == measure.MIN_ROUNDS
    assert result.sampling == {"rounds_planned": 500, "rounds": measure.MIN_ROUNDS,
                               "cut_by_budget": True, "budget_s": 0.0}


def test_without_a_budget_every_planned_sample_is_taken():
    result = cell.run(_spec(repeats=8))
    assert len(result.samples_s) == 8 and result.sampling["cut_by_budget"] is False


def test_the_table_says_when_the_budget_cut_samples_and_the_run_stores_the_breakdown(tmp_path):
    # --timeout 8 gives a 6 s budget: 100000 rounds of a 2 ms sample cannot fit in it
    out = run_lab("run", "--workload", "mlp", "--backend", "torch-eager", "--device", "cpu",
                  "--batch", "2", "--repeats", "100000", "--timeout", "8", "--out",
                  str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "samples: budget" in out.stdout
    (path,) = tmp_path.glob("*/*/results.json")
    (bench,) = json.loads(path.read_text())["benchmarks"]
    info = bench["extra_info"]
    assert info["sampling"]["cut_by_budget"] and info["sampling"]["rounds"] < 100000
    parts = info["wall_s_breakdown"]
    assert {"total", "process_start_and_exit", "import", "setup", "first_call", "warmup",
            "sampling"} <= set(parts)
    assert sum(v for k, v in parts.items() if k != "total") <= parts["total"] + 0.5
