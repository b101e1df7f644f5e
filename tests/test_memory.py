"""Peak memory shown and judged: the rule that says when eager / compiled step memory is a
ratio at all, the table's and the report's memory columns, and metric = "memory" claims."""

from __future__ import annotations

import pytest
from verdict_helpers import cell, document

from lab.cell.memory import MEMORY_RATIO_FLOOR_MIB, unresolved_memory_ratio
from lab.judge import claims, verdict
from lab.reports import markdown as report
from lab.reports import terminal as table

HW = "Test CPU, 2 cores (CPU)"
PROBE = "process RSS (VmRSS / VmHWM)"
CUDA_PROBE = "torch.cuda max_memory_allocated"


def _memory(step: float, eager: float | None = None, resettable: bool = True) -> dict:
    mem = {"probe": PROBE, "resettable": resettable, "step_peak_above_resident_mib": step,
           "first_call_peak_above_start_mib": 70.0, "peak_above_import_mib": 240.0}
    if eager is not None:
        mem["baseline_step_peak_above_resident_mib"] = eager
        why = unresolved_memory_ratio(eager, step, resettable)
        mem["ratio_eager_over_candidate"] = None if why else round(eager / step, 4)
        if why:
            mem["ratio_unresolved"] = why
    return mem


@pytest.mark.parametrize("eager, candidate, resettable, words", [
    (5.5, 3.1, True, None),
    (0.06, 0.04, True, "eager and candidate step peak under"),  # the MLP's pages: noise
    (5.5, 0.004, True, "working memory stays from the first call"),  # an arena runtime
    (0.5, 3.0, True, "eager step peak under"),
    (5.5, 3.1, False, "cannot reset its peak"),
    (None, 3.1, True, "not measured"),
])
def test_a_ratio_needs_both_step_peaks_above_the_floor_and_a_resettable_probe(
        eager, candidate, resettable, words):
    why = unresolved_memory_ratio(eager, candidate, resettable)
    assert (why is None) if words is None else (words in why)


def test_the_floor_is_the_boundary():
    assert unresolved_memory_ratio(MEMORY_RATIO_FLOOR_MIB, MEMORY_RATIO_FLOOR_MIB) is None
    assert unresolved_memory_ratio(MEMORY_RATIO_FLOOR_MIB * 0.99, 5.0) is not None


def test_the_cells_memory_phase_stores_the_ratio_by_that_rule():
    """The cell's own function, on a probe whose numbers the test sets."""
    from lab.cell import measure, memory
    from lab.cell.main import _measure_memory

    class FakeProbe(memory._Probe):
        name, resettable = "fake", True
        grows = {"baseline": 6 << 20, "candidate": 3 << 20}

        def __init__(self):
            self.current, self.top = 100 << 20, 100 << 20

        def reset(self):
            self.top = self.current

        def in_use(self):
            return self.current

        def peak(self):
            return self.top

    probe = FakeProbe()

    def step_of(name):
        def step():
            probe.top = max(probe.top, probe.current + FakeProbe.grows[name])
        return step

    sides = [measure.Side("baseline", step_of("baseline")),
             measure.Side("candidate", step_of("candidate"))]
    out = _measure_memory(probe, 50 << 20, memory.Phase(100 << 20, 170 << 20), sides)
    assert out["step_peak_above_resident_mib"] == 3.0
    assert out["baseline_step_peak_above_resident_mib"] == 6.0
    assert out["ratio_eager_over_candidate"] == 2.0 and "ratio_unresolved" not in out
    FakeProbe.grows = {"baseline": 6 << 20, "candidate": 4 << 10}  # an arena: 4 KiB per step
    out = _measure_memory(probe, 50 << 20, memory.Phase(100 << 20, 170 << 20), sides)
    assert out["ratio_eager_over_candidate"] is None
    assert "first call" in out["ratio_unresolved"]


# ---------------------------------------------------------------- shown


def test_table_shows_the_ratio_only_where_there_is_one():
    judged = {"baseline_backend": "torch-eager", "memory": _memory(3.1, 5.5)}
    noise = {"baseline_backend": "torch-eager", "memory": _memory(0.04, 0.06)}
    assert table._memory(judged) == "5.5 / 3.1 (1.77x)"
    assert table._memory(noise) == "0.1 / 0.0"
    assert table._memory({"memory": _memory(6.4)}) == "6.4"
    assert table._memory({}) == "-"


def test_report_memory_table_lists_the_first_call_and_why_no_ratio():
    doc = document([cell("transformer", "torch-compile", "infer", [1e-3] * 5,
                         memory=_memory(3.1, 5.5)),
                    cell("transformer", "onnxruntime", "infer", [1e-3] * 5,
                         memory=_memory(0.004, 5.5))])
    lines = report.memory_table(doc).splitlines()
    assert len(lines) == 4 and "first call MiB" in lines[0]
    assert "| 1.77x |" in lines[2] and "| 70.0 |" in lines[2] and PROBE in lines[2]
    assert "none: " in lines[3] and "first call" in lines[3]
    assert report.memory_table(document([cell("mlp", "torch-eager", "infer", [1.0])])) == ""


# ---------------------------------------------------------------- judged


def _claim(**fields):
    text = "\n".join(["[[claim]]", 'id = "m"', 'quote = "q"', 'metric = "memory"'] +
                     [f"{k} = {v!r}".replace("'", '"') for k, v in fields.items()])
    (claim,) = claims.parse(text)
    return claim


def _check(claim, entries):
    (result,) = verdict.check([claim], verdict.index(document(entries), "cpu"), "cpu", HW)
    return result


SIMILAR = dict(backend="torch-compile", workload="transformer", expect="about", value=1.0,
               tolerance=0.5)


@pytest.mark.parametrize("eager, compiled, want", [
    (5.5, 5.0, "supported"),  # 1.1x: inside [0.667, 1.5]
    (5.5, 3.1, "refuted"),  # 1.77x: compiled needs far less
    (2.0, 4.0, "refuted"),  # 0.5x: compiled needs twice as much
])
def test_memory_claims_are_judged_on_the_point_ratio_with_the_probe_named(eager, compiled, want):
    # CUDA's allocator peak: a byte count the same program reproduces, so the point decides
    cuda = {**_memory(compiled, eager), "probe": CUDA_PROBE}
    result = _check(_claim(**SIMILAR), [cell("transformer", "torch-compile", "infer", [1e-3] * 5,
                                             memory=cuda)])
    assert result.verdict == want
    (c,) = result.cells
    assert c.ratio == pytest.approx(eager / compiled) and c.ci95 == (c.ratio, c.ratio)
    assert "point value" in c.detail and CUDA_PROBE in c.detail


@pytest.mark.parametrize("eager, compiled", [(5.5, 5.0), (5.5, 3.1), (2.0, 4.0)])
def test_one_rss_reading_per_side_neither_supports_nor_refutes(eager, compiled):
    """The resident set moves between runs (a claim refuted at 1.56 on one run was supported on
    another): one reading per side has no interval, so the ratio is shown and decides nothing."""
    result = _check(_claim(**SIMILAR), [cell("transformer", "torch-compile", "infer", [1e-3] * 5,
                                             memory=_memory(compiled, eager))])
    assert result.verdict == "inconclusive"
    (c,) = result.cells
    assert c.ratio == pytest.approx(eager / compiled) and c.ci95 is None
    assert "no interval" in c.reason and PROBE in c.detail
    assert f"{eager / compiled:.3f}x (point value) -> inconclusive" in \
        verdict.format_results([result])


def test_memory_below_the_floor_or_absent_is_inconclusive_with_the_reason():
    noise = _check(_claim(**SIMILAR), [cell("transformer", "torch-compile", "infer", [1e-3] * 5,
                                            memory=_memory(0.04, 0.06))])
    assert noise.verdict == "inconclusive" and "allocator noise" in noise.reason
    old = _check(_claim(**SIMILAR), [cell("transformer", "torch-compile", "infer", [1e-3] * 5)])
    assert "no memory recorded" in old.reason
    missing = _check(_claim(**SIMILAR), [])
    assert "not measured" in missing.reason


def test_memory_versus_another_backend_compares_the_two_cells_step_peaks():
    claim = _claim(backend="tf-xla", versus="torch-compile", workload="transformer",
                   expect="about", value=1.0, tolerance=0.5)

    def on_cuda(mem, probe):
        return {**mem, "probe": probe}

    entries = [cell("transformer", "tf-xla", "infer", [1e-3] * 5, framework="tf",
                    memory=on_cuda(_memory(4.0, 1.0), "tf get_memory_info")),
               cell("transformer", "torch-compile", "infer", [1e-3] * 5, framework="torch",
                    memory=on_cuda(_memory(5.0, 6.0), "torch.cuda max_memory_allocated"))]
    (c,) = _check(claim, entries).cells
    assert c.ratio == pytest.approx(5.0 / 4.0) and c.verdict == "supported"
    assert "torch-compile 5.0 MiB / tf-xla 4.0 MiB" in c.detail


def test_two_frameworks_on_the_cpus_rss_probe_give_no_memory_ratio():
    """TensorFlow's allocator keeps freed memory, torch's hands it back: the process's resident
    set sees that, not the step's working set (tf-xla's transformer step measured 1.0 MiB
    against torch.compile's 10.6 on the 2-core CPU)."""
    claim = _claim(backend="tf-xla", versus="torch-compile", workload="transformer",
                   expect="about", value=1.0, tolerance=0.5)
    entries = [cell("transformer", "tf-xla", "infer", [1e-3] * 5, framework="tf",
                    memory=_memory(1.0, 1.2)),
               cell("transformer", "torch-compile", "infer", [1e-3] * 5, framework="torch",
                    memory=_memory(10.6, 12.6))]
    result = _check(claim, entries)
    assert result.verdict == "inconclusive" and "are two frameworks" in result.reason


def test_memory_without_versus_needs_a_backend_with_an_eager_side():
    with pytest.raises(claims.ClaimError, match="give 'versus'"):
        _claim(backend="torch-eager", workload="mlp", expect="about", value=1.0)
