"""--latency: infer cells timed one call per sample, reported as p50/p90/p99 per call with
bootstrap intervals, planned, recorded, tabled and reported."""

from __future__ import annotations

import numpy as np
import pytest
from verdict_helpers import cell, document

from lab.cell import measure
from lab.cell.spec import CellSpec
from lab.core import stats
from lab.core.errors import UsageError
from lab.reports import markdown as report
from lab.reports import terminal as table
from lab.running import loop as session

# ---------------------------------------------------------------- statistics


def test_percentiles_match_numpy_and_their_intervals_hold_them():
    rng = np.random.default_rng(3)
    calls = np.exp(rng.normal(np.log(2e-3), 0.3, 400))  # seconds per call, right-skewed
    found = stats.latency_percentiles(calls, scale=1e3)
    assert found["n"] == 400
    for q in (50, 90, 99):
        value, lo, hi = found[f"p{q}"]
        assert value == pytest.approx(np.percentile(calls, q) * 1e3)
        assert lo <= value <= hi
    # a right-skewed tail: the percentiles climb, and the tail's interval is the widest
    p50, p90, p99 = (found[k] for k in ("p50", "p90", "p99"))
    assert p50[0] < p90[0] < p99[0]
    assert (p99[2] - p99[1]) > (p50[2] - p50[1])


def test_the_median_interval_is_the_p50_interval():
    calls = np.random.default_rng(0).lognormal(0, 0.2, 101)
    assert stats.percentile_ci(calls, 50) == stats.median_ci(calls)


def test_tail_intervals_cover_the_true_percentile_at_about_the_stated_rate():
    """200 draws of 200 calls from a known distribution: the p90 interval should hold the
    true p90 about 95% of the time (a percentile bootstrap runs a little short at the tail)."""
    from scipy import stats as sps

    truth = sps.lognorm(s=0.4).ppf(0.90)
    rng = np.random.default_rng(11)
    held = sum(lo <= truth <= hi for lo, hi in
               (stats.percentile_ci(rng.lognormal(0, 0.4, 200), 90, seed=i) for i in range(200)))
    assert 0.85 <= held / 200 <= 0.99


def test_constant_or_tiny_samples_give_a_point_not_an_error():
    assert stats.latency_percentiles([1e-3] * 20)["p99"] == [1e-3, 1e-3, 1e-3]
    assert stats.percentile_ci([1.0, 2.0], 90) == (pytest.approx(1.9), pytest.approx(1.9))
    with pytest.raises(ValueError):
        stats.percentile_ci([1.0, 2.0, 3.0], 101)


# ---------------------------------------------------------------- sampling one call at a time


def test_one_call_per_sample_times_each_call_not_their_mean():
    """Every 10th call sleeps 5 ms: per-call samples see the slow calls in their tail, a
    sample averaging 10 calls smears them into every sample."""
    calls = {"n": 0}

    def step():
        calls["n"] += 1
        if calls["n"] % 10 == 0:
            import time

            time.sleep(5e-3)

    side = measure.Side("candidate", step)
    measure.sample_interleaved(measure.HostTimer(), [side], 100, inner=1)
    per_call = np.array(side.samples_s)
    assert len(per_call) == 100 and calls["n"] == 100
    assert np.percentile(per_call, 50) < 1e-3 and np.percentile(per_call, 95) > 4e-3


def test_cuda_events_with_one_call_per_sample_give_each_calls_device_time():
    """On CUDA a latency sample is one event pair around one call, read once per round: the
    slow call shows as itself, not as a third of a mean (fake events with a device clock)."""
    from test_measure import _FakeEvent, _FakeTorch, _step

    _FakeEvent.clock, _FakeEvent.log = 0.0, []
    timer = measure.CudaEventTimer(_FakeTorch(), cold_l2=False)
    side = measure.Side("candidate", _step([0.001, 0.001, 0.009]))
    measure.sample_interleaved(timer, [side], 6, inner=1)
    assert side.samples_s == pytest.approx([0.001, 0.001, 0.009] * 2)
    assert _FakeEvent.log[:3] == ["record", "step", "record"]


# ---------------------------------------------------------------- planning


def _plan(**kw):
    cells, _ = session.plan(session.Selection(workloads=["mlp"], backends=["torch-eager"],
                                              device="cpu", threads=1, **kw))
    return [c.spec for c in cells]


def test_latency_applies_to_infer_cells_with_its_own_default_repeats():
    infer, train = _plan(modes=["infer", "train"], latency=True)
    assert (infer.latency, infer.repeats) == (True, session.DEFAULT_LATENCY_REPEATS)
    assert (train.latency, train.repeats) == (False, session.DEFAULT_REPEATS)
    (plain,) = _plan()
    assert (plain.latency, plain.repeats) == (False, session.DEFAULT_REPEATS)
    (asked,) = _plan(latency=True, repeats=7)
    assert asked.repeats == 7


def test_latency_without_an_infer_mode_is_refused_with_one_line():
    with pytest.raises(UsageError, match="--latency times infer cells"):
        _plan(modes=["train"], latency=True)


def test_the_flag_reaches_the_spec_and_survives_its_json_round_trip():
    from lab.cli import build_parser
    from lab.commands.run import selection

    args = build_parser().parse_args(["run", "--workload", "mlp", "--backend", "torch-eager",
                                      "--device", "cpu", "--latency", "--batch", "1"])
    cells, _ = session.plan(selection(args))
    spec = cells[0].spec
    assert spec.latency and spec.shape["batch"] == 1
    assert CellSpec.from_json(spec.to_json()).latency is True
    old = spec.to_json().replace(', "latency": true', "")  # a spec written before the field
    assert CellSpec.from_json(old).latency is False


# ---------------------------------------------------------------- recording and showing


def _latency_cell(backend: str, p50_ms: float, baseline_p50_ms: float | None = None):
    rng = np.random.default_rng(int(p50_ms * 100))
    calls = list(p50_ms / 1e3 * rng.lognormal(0, 0.1, 200))
    extra = {"latency": True, "latency_ms": stats.latency_percentiles(calls, scale=1e3),
             "median_s": float(np.median(calls)), "shape": {"batch": 1}}
    if baseline_p50_ms is not None:
        base = list(baseline_p50_ms / 1e3 * rng.lognormal(0, 0.1, 200))
        ratio = stats.ratio_of_medians(base, calls)
        extra.update(baseline_backend="torch-eager", baseline_samples_s=base,
                     baseline_median_s=float(np.median(base)),
                     baseline_latency_ms=stats.latency_percentiles(base, scale=1e3),
                     speedup=ratio.ratio, speedup_ci95=ratio.ci95)
    return cell("mlp", backend, "infer", calls, **extra)


def test_the_recorder_stores_both_sides_percentiles_for_latency_cells_only():
    from lab.cell.spec import CellOutcome, CellResult
    from lab.running.writer import lab_fields

    spec = CellSpec(workload="mlp", backend="torchscript", option="trace", mode="infer",
                    shape={"batch": 1}, precision="fp32", device="cpu", threads=1, repeats=200,
                    latency=True)
    rng = np.random.default_rng(0)
    result = CellResult(samples_s=list(1e-4 * rng.lognormal(0, 0.1, 200)),
                        baseline_samples_s=list(2e-4 * rng.lognormal(0, 0.1, 200)),
                        inner_steps=1, first_call_s=0.5)
    fields = lab_fields(CellOutcome(spec, "torchscript", result, 1.0), None)
    assert fields["latency"] is True
    assert fields["latency_ms"]["p50"][0] == pytest.approx(0.1, rel=0.05)
    assert fields["baseline_latency_ms"]["p50"][0] == pytest.approx(0.2, rel=0.05)
    assert fields["speedup"] == pytest.approx(2.0, rel=0.05)  # the ratio of the p50s
    plain = lab_fields(CellOutcome(spec.replace(latency=False), "torchscript", result, 1.0), None)
    assert plain["latency"] is False and "latency_ms" not in plain


def test_table_and_report_show_percentiles_only_where_cells_have_them():
    from rich.console import Console

    doc = document([_latency_cell("torch-eager", 0.2),
                    _latency_cell("torchscript", 0.1, baseline_p50_ms=0.2)])
    console = Console(width=300, record=True)
    table.render(doc, console)
    text = console.export_text()
    assert "p90 / p99 ms" in text and "eager p90 / p99 ms" in text
    assert "one call per sample" in text
    lines = report.latency_table(doc).splitlines()
    assert len(lines) == 4 and "p99 ms [95% CI]" in lines[0]
    assert lines[3].startswith("| torchscript | infer | batch=1 | 200 |")
    assert "2.0" in lines[3].split("|")[-2]  # the p50 speedup over eager, ~2x

    plain = document([cell("mlp", "torch-eager", "infer", [1e-3] * 10)])
    console = Console(width=300, record=True)
    table.render(plain, console)
    assert "p90 / p99" not in console.export_text()
    assert report.latency_table(plain) == ""
