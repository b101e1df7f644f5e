"""lab.core.stats: ratios, intervals, run-to-run comparisons, change points."""

import dataclasses
import math

import numpy as np
import pytest

from lab.core import stats
from lab.judge.gate import GATE_CONFIDENCE, gate_decision


def test_ratio_of_medians_finds_a_known_speedup():
    rng = np.random.default_rng(1)
    eager = 2e-3 * np.exp(rng.normal(0, 0.03, 40))
    compiled = 1e-3 * np.exp(rng.normal(0, 0.03, 40))
    r = stats.ratio_of_medians(eager, compiled)
    assert r.ci95[0] < 2.0 < r.ci95[1] and 1.9 < r.ratio < 2.1
    assert r.p_value < 1e-6 and 1 < r.min_detectable_ratio < 1.1


def test_process_ratio_interval_covers_truth_and_excludes_one_for_a_slowdown():
    rng = np.random.default_rng(2)
    base = 1e-3 * np.exp(rng.normal(0, 0.03, 6))
    slow = 1.3e-3 * np.exp(rng.normal(0, 0.03, 6))
    pr = stats.process_ratio(base, slow, floor_sd_log=0.03)
    assert pr.ci[0] < 1.3 < pr.ci[1] and pr.ci[0] > 1
    assert pr.p_value < 1e-3 and pr.rank_p_value < 0.01
    assert pr.n_baseline == pr.n_candidate == 6


def test_one_process_per_side_is_judged_by_the_floor_alone():
    pr = stats.process_ratio([1e-3], [1e-3], floor_sd_log=0.1, floor_dof=4)
    half = math.log(pr.ci[1])
    from scipy.stats import t

    assert half == pytest.approx(t.ppf(0.975, 4) * 0.1 * math.sqrt(2))
    assert pr.rank_p_value is None
    with pytest.raises(ValueError):
        stats.process_ratio([1e-3], [1e-3], floor_dof=0)


def test_floor_keeps_few_quiet_processes_from_looking_certain():
    # three identical-looking processes per side say nothing about other days' processes
    pr = stats.process_ratio([1.0, 1.0, 1.0], [1.08, 1.08, 1.08], floor_sd_log=0.1)
    assert pr.ci[0] < 1.0


@pytest.mark.parametrize("processes", [3, 5])
def test_gate_false_alarm_rate_on_simulated_aa_pairs_is_below_target(processes):
    # processes whose log medians spread exactly as much as the floor says: the gate's
    # one-sided false-alarm rate (target 1%) must hold: the t interval is exact here
    rng = np.random.default_rng(3)
    sd = stats.RUN_TO_RUN_SD_LOG
    alarms = sum(
        gate_decision(stats.process_ratio(np.exp(rng.normal(0, sd, processes)),
                                          np.exp(rng.normal(0, sd, processes)),
                                          confidence=GATE_CONFIDENCE), 0.05)
        == "regressed" for _ in range(500))
    assert alarms / 500 <= 0.02


def test_gate_decision_rules():
    base = stats.process_ratio([1.0] * 3, [1.0] * 3)  # 3 and 3: the t interval decides

    def few(ratio, lo, hi):
        return dataclasses.replace(base, ratio=ratio, ci=(lo, hi))

    assert gate_decision(few(1.10, 1.02, 1.18), 0.05) == "regressed"
    assert gate_decision(few(1.03, 1.01, 1.05), 0.05) == "unchanged"  # real, under threshold
    assert gate_decision(few(1.04, 1.01, 1.08), 0.05) == "inconclusive"
    assert gate_decision(few(0.85, 0.80, 0.90), 0.05) == "improved"
    assert gate_decision(few(1.10, 0.95, 1.25), 0.05) == "inconclusive"
    # 5 and 5: the rank test and the Hodges-Lehmann shift decide
    many = stats.process_ratio([1.00, 1.01, 0.99, 1.02, 0.98], [1.10, 1.11, 1.09, 1.12, 1.08])
    assert many.rank_min_p < 0.01 and many.rank_p_slower < 0.01
    assert many.shift_ratio == pytest.approx(1.10, rel=0.01)
    assert gate_decision(many, 0.05) == "regressed"
    assert gate_decision(many, 0.15) != "regressed"  # significant, but under the threshold
    one_mixed = stats.process_ratio([1.00, 1.01, 0.99, 1.02, 1.30], [1.10, 1.11, 1.09, 1.12, 1.08])
    assert gate_decision(one_mixed, 0.05) != "regressed"  # not separated: p >= 0.01


def test_rank_regime_keeps_false_alarms_under_heavy_tails():
    # log medians with Cauchy tails (a few processes hit by neighbours, some by a lot): the
    # t interval's normal model fails here, the rank test's exchangeability does not
    rng = np.random.default_rng(5)
    alarms = sum(
        gate_decision(stats.process_ratio(np.exp(0.05 * np.clip(rng.standard_cauchy(5), -200, 200)),
                                          np.exp(0.05 * np.clip(rng.standard_cauchy(5), -200, 200)),
                                          confidence=GATE_CONFIDENCE), 0.05) == "regressed"
        for _ in range(500))
    assert alarms / 500 <= 0.015


def test_combine_log_intervals_multiplies_and_widens():
    point, (lo, hi) = stats.combine_log_intervals((2.0, (1.8, 2.2)), (0.5, (0.45, 0.55)))
    assert point == pytest.approx(1.0) and lo < 1 < hi
    _, (lo2, hi2) = stats.combine_log_intervals((2.0, (1.8, 2.2)), (0.5, (0.45, 0.55)),
                                                extra_sd_log=0.1)
    assert lo2 < lo and hi2 > hi
    with pytest.raises(ValueError):
        stats.combine_log_intervals((0.0, (1.0, 1.0)))


def test_change_points_finds_a_level_shift_and_nothing_in_noise():
    rng = np.random.default_rng(4)
    flat = np.exp(rng.normal(0, 0.02, 24))
    assert stats.change_points(flat, permutations=199) == []
    shifted = np.concatenate([flat[:12], 1.2 * flat[12:]])
    assert stats.change_points(shifted, permutations=199) == [12]
    assert stats.change_points(shifted, permutations=199, min_shift=0.5) == []


def test_break_even_steps():
    assert stats.break_even_steps(10.0, 2e-3, 1e-3) == pytest.approx(10_000)
    assert stats.break_even_steps(10.0, 1e-3, 2e-3) is None
