"""The seed's Inference Latency and Memory Efficiency rows as claims: stated in
claims/seed.toml, judged by `lab check` on --latency cells and on the cells' memory."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import ROOT
from verdict_helpers import cell, document, run_lab_main, write_run

from lab.core import stats
from lab.judge import claims, verdict

HW = "Test CPU, 2 cores (CPU)"
SEED = ROOT / "claims" / "seed.toml"


def _claim(**fields):
    text = "\n".join(["[[claim]]", 'id = "l"', 'quote = "q"'] +
                     [f"{k} = {v!r}".replace("'", '"') for k, v in fields.items()
                      if k != "shape"] + ([f"shape = {{batch = {fields['shape']['batch']}}}"]
                                          if "shape" in fields else []))
    (claim,) = claims.parse(text)
    return claim


def _check(claim, entries):
    (result,) = verdict.check([claim], verdict.index(document(entries), "cpu"), "cpu", HW)
    return result


def _calls(p50_s: float, seed: int, n: int = 200) -> list[float]:
    return list(p50_s * np.random.default_rng(seed).lognormal(0, 0.1, n))


def latency_cell(workload: str, backend: str, p50_s: float, eager_p50_s: float | None,
                 seed: int = 0, batch: int = 1, latency: bool = True, **extra) -> dict:
    """A --latency cell (per-call samples) with its in-process eager side, as recorded."""
    calls = _calls(p50_s, seed)
    fields = {"latency": latency, "shape": {"batch": batch}, "precision": "fp32", **extra}
    if latency:
        fields["latency_ms"] = stats.latency_percentiles(calls, scale=1e3)
    if eager_p50_s is not None:
        base = _calls(eager_p50_s, seed + 1)
        ratio = stats.ratio_of_medians(base, calls)
        fields.update(baseline_samples_s=base, speedup=ratio.ratio, speedup_ci95=ratio.ci95,
                      compile_s_cold=1.5, compile_s_warm=1.4, break_even_steps_cold=None,
                      break_even_steps_warm=None)
    return cell(workload, backend, "infer", calls, **fields)


TORCHSCRIPT = dict(metric="latency", backend="torchscript", workload="mlp", expect="at_least",
                   value=1.0, shape={"batch": 1})


# ---------------------------------------------------------------- the seed's rows


def test_the_seed_states_its_latency_and_memory_rows_as_checks():
    parsed = {c.id: c for c in claims.load(SEED)}
    latency = [c for c in parsed.values() if c.metric == "latency"]
    assert {c.backend for c in latency} >= {"torchscript", "tensorrt", "tf-graph"}
    for c in latency:
        assert "Inference Latency" in c.quote and c.shape == {"batch": 1}
        assert c.modes == ("infer",) and c.precision == "fp32"  # runtimes skip amp-*
    assert parsed["inference-latency-tensorrt"].device == "cuda"
    memory = [c for c in parsed.values() if c.metric == "memory"]
    assert len(memory) == 2 and all("Memory Efficiency" in c.quote for c in memory)
    assert all((c.low, c.high) == (pytest.approx(1 / 1.5), pytest.approx(1.5)) for c in memory)


# ---------------------------------------------------------------- latency verdicts


@pytest.mark.parametrize("p50, eager, want", [
    (0.1e-3, 0.2e-3, "supported"),  # the runtime answers in half eager's time
    (0.3e-3, 0.2e-3, "refuted"),  # slower per call than eager
    (0.2e-3, 0.2e-3, "inconclusive"),  # the interval straddles 1.0
])
def test_latency_claims_judge_the_p50_ratio_of_per_call_samples(p50, eager, want):
    result = _check(_claim(**TORCHSCRIPT), [latency_cell("mlp", "torchscript", p50, eager)])
    assert result.verdict == want
    (c,) = result.cells
    assert c.ratio == pytest.approx(eager / p50, rel=0.05) and c.ci95[0] <= c.ratio <= c.ci95[1]
    assert "compile 1.5 s cold" in c.compile_note  # the conversion's cost beside the ratio


def test_cells_timed_without_latency_or_at_another_batch_decide_nothing():
    averaged = _check(_claim(**TORCHSCRIPT),
                      [latency_cell("mlp", "torchscript", 1e-4, 2e-4, latency=False)])
    assert averaged.verdict == "inconclusive" and "without --latency" in averaged.reason
    batched = _check(_claim(**TORCHSCRIPT),
                     [latency_cell("mlp", "torchscript", 1e-4, 2e-4, batch=32)])
    assert "measured at batch=32; the claim is about batch=1" in batched.reason


def test_latency_versus_another_backend_is_across_processes_and_says_so():
    claim = _claim(**{**TORCHSCRIPT, "backend": "tf-graph", "versus": "torchscript"})
    entries = [latency_cell("mlp", "tf-graph", 0.05e-3, None, seed=1),
               latency_cell("mlp", "torchscript", 0.5e-3, None, seed=2)]
    (c,) = _check(claim, entries).cells
    # torchscript's p50 / tf-graph's: 10x, decided even with the run-to-run floor
    assert c.ratio == pytest.approx(10, rel=0.1) and c.verdict == "supported"
    assert "across processes" in c.reason
    close = [latency_cell("mlp", "tf-graph", 0.45e-3, None, seed=1),
             latency_cell("mlp", "torchscript", 0.5e-3, None, seed=2)]
    assert _check(claim, close).verdict == "inconclusive"  # 1.1x cannot clear that floor


def test_latency_without_versus_needs_a_backend_with_an_eager_side():
    with pytest.raises(claims.ClaimError, match="give 'versus'"):
        _claim(**{**TORCHSCRIPT, "backend": "torch-eager"})


# ---------------------------------------------------------------- cells lab check runs


def test_missing_latency_cells_are_run_per_call_and_others_as_usual():
    claim = _claim(**TORCHSCRIPT)
    todo, skipped = verdict.missing_cells([claim], {}, "cpu")
    assert todo == [(("mlp", "torchscript", "infer", "fp32"), "mlp", "torchscript", "infer",
                     "fp32", {"batch": 1}, True)] and not skipped
    speed = _claim(metric="speedup", backend="torch-compile", workload="mlp", expect="at_least",
                   value=1.0)
    todo, _ = verdict.missing_cells([speed], {}, "cpu")
    assert todo[0][-1] is False


def test_lab_check_on_a_stored_run_judges_memory_and_latency_naming_the_machine(tmp_path):
    mem = {"probe": "process RSS (VmRSS / VmHWM)", "resettable": True,
           "step_peak_above_resident_mib": 3.1, "baseline_step_peak_above_resident_mib": 5.5}
    entries = [
        latency_cell("mlp", "torchscript", 0.1e-3, 0.2e-3, seed=3),
        latency_cell("transformer", "torchscript", 2.0e-3, 2.1e-3, seed=5),
        cell("transformer", "torch-compile", "infer", [1e-3] * 10, memory=mem,
             precision="fp32"),
    ]
    path = write_run(tmp_path, entries)
    result = run_lab_main("check", str(SEED), "--run", str(path), "--stored-only", timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "inference-latency-torchscript" in out and "memory-similar-with-optimization" in out
    # 5.5 / 3.1 = 1.77x from one RSS reading per side: shown, not decided (no interval)
    assert "INCONCLUSIVE memory-similar-with-optimization" in out
    assert "transformer infer: 1.774x (point value) -> inconclusive" in out
    # torchscript's p50 latency ratio on the MLP, about 2x
    assert re.search(r"mlp infer: (1\.9[5-9]|2\.0[0-4])\dx .* -> supported", out)
    assert f"measured on {HW}" in out
    assert "not measured: the lab does not record memory" not in out


# ---------------------------------------------------------------- lab list: what runs here


@pytest.mark.long  # a process per framework, each importing it
def test_lab_list_asks_every_backend_for_its_own_support_one_process_per_framework():
    from lab import compile as backends
    from lab.commands import show

    found = show._supports(["cpu"])
    assert set(found) == set(backends.BACKENDS)
    assert found["torch-eager"]["cpu"] == "yes"
    assert found["tensorrt"]["cpu"].startswith("no: needs CUDA")  # the backend's own reason
    info = backends.BACKENDS["onnxruntime"]
    assert show._runs_here(info, found["onnxruntime"]).startswith("cpu: ")


def test_lab_list_names_missing_packages_before_asking(monkeypatch):
    from lab import compile as backends
    from lab.commands import show

    monkeypatch.setattr(backends, "missing_packages", lambda info: ["onnxruntime"])
    assert show._runs_here(backends.BACKENDS["onnxruntime"], {"cpu": "yes"}) == \
        "no: onnxruntime not installed"


def test_a_verdict_from_cells_timed_on_a_busy_machine_says_so():
    result = _check(_claim(**TORCHSCRIPT),
                    [latency_cell("mlp", "torchscript", 0.1e-3, 0.2e-3, machine_busy=True)])
    (c,) = result.cells
    assert c.verdict == "supported" and "machine busy while torchscript ran" in c.reason
