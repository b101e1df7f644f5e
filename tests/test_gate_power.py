"""The gate's process-count guidance (lab.judge.power): checked against the gate itself on
simulated processes, and shown in `lab gate`'s output."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lab.judge import gate as regression
from lab.judge import power


def _gate_power(n: int, change: float, threshold: float, sd: float, draws: int,
                seed: int) -> float:
    """The share of simulated runs (n lognormal process medians a side, the candidate
    `change` slower) that the gate's own statistic and rule call regressed."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(draws):
        base = np.exp(rng.normal(0.0, sd, n))
        cand = np.exp(rng.normal(math.log1p(change), sd, n))
        pr = regression.gate_statistic(base, cand)
        hits += regression.gate_decision(pr, threshold) == "regressed"
    return hits / draws


@pytest.mark.parametrize("sd, change", [(0.05, 0.10), (0.36, 0.5)])
def test_the_planned_processes_reach_the_wanted_power_in_the_gate_itself(sd, change):
    """At the planned N the gate's own rule catches the change about 95% of the time, at half
    of it clearly less (~70% by the same model): an N off by a factor of two in either
    direction fails here. 150 draws: a rate's binomial sd is ~1.8% at 95%, so 0.88 is four
    sd away."""
    base = [math.exp(x) for x in (-sd, 0.0, sd)]
    p = power.plan(base, base, change=change, threshold=0.05)
    assert p.measured and p.sd_log == pytest.approx(sd)
    n = p.needed
    assert n is not None and n >= 4
    assert _gate_power(n, change, 0.05, sd, draws=150, seed=1) >= 0.88
    assert _gate_power(n // 2, change, 0.05, sd, draws=150, seed=2) < 0.88


def test_noisier_runs_need_more_processes_and_one_process_falls_back_to_the_floor():
    quiet = power.plan([1.0, 1.01, 0.99], [1.0, 1.02], 0.10, 0.05)
    noisy = power.plan([1.0, 1.3, 0.8], [1.0, 1.4], 0.10, 0.05)
    assert quiet.needed < noisy.needed
    single = power.plan([1.0], [1.1], 0.10, 0.05)
    assert not single.measured and single.sd_log == pytest.approx(0.36)
    assert "calibrated floor" in single.text("mlp")
    assert "these runs have 1 and 1" in single.text("mlp")


def test_a_change_within_the_threshold_cannot_be_planned_for():
    p = power.plan([1.0, 1.1], [1.0, 1.1], change=0.05, threshold=0.05)
    assert p.needed is None and "--detect" in p.text("mlp")


def test_the_gate_table_says_how_many_processes_the_wanted_change_needs():
    cell = {"name": "mlp", "status": "ok", "samples_s": [1e-3] * 5,
            "process_medians_s": [1e-3, 1.2e-3, 0.9e-3], "processes": 3}
    doc = {"benchmarks": [{"name": "mlp", "extra_info": cell, "stats": {"data": [1e-3] * 5}}],
           "lab": {"complete": True}}
    rows = regression.compare_runs(doc, doc, 0.05, detect=0.10)
    (row,) = rows
    assert row.processes_needed == row.plan.needed and row.processes_needed > 3
    text = regression.gate_markdown(rows, 0.05, "a", "b")
    assert f"to see a 10% change at 95% power this benchmark needs ~{row.processes_needed} " \
           f"processes per side" in text and "these runs have 3 and 3" in text
