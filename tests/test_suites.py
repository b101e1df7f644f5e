"""Model suites: the HF registry builds and runs in eager at tiny size, the suite summary
(pass rate, geomean speedup with its interval over models, compile time, memory compression,
graph breaks) is computed from stored cells as PyTorch's dashboard defines it, suite claims
are judged on it, and a handful of models run end to end through the command line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lab.core import stats
from lab.judge import claims, scorecard, suite_claims, verdict
from lab.workloads import suites
from lab.workloads.suites import hf

ROOT = Path(__file__).resolve().parent.parent
# one model of each kind of input and head: what the default run builds (CI time); the whole
# registry runs with -m slow
SAMPLE = ["bert", "gpt2", "t5", "resnet", "whisper", "clip"]


def test_the_hf_suite_has_30_architectures_of_every_kind():
    names = suites.names("hf")
    assert len(names) >= 30 and len(set(names)) == len(names)
    groups = {e.group for e in hf.ENTRIES}
    assert groups == {"encoder", "decoder", "encoder-decoder", "vision", "speech", "multimodal"}
    assert all(suites.suite_of(n) == "hf" and suites.get(n).name == n for n in names)
    assert {e.name for e in hf.ENTRIES} >= set(SAMPLE)


def _eager_forward(name: str):
    import torch

    entry = hf.BY_NAME[f"hf/{name}"]
    workload = hf.workload(entry)
    shape = {**workload.default_shape("cpu"), "tiny": 1}
    task = workload.build("torch", shape, "train", "cpu", "float32", 0)
    config = task.model.model.config.to_dict()
    out = task.model(*task.inputs)
    # a step that sets the config (the classification loss's problem_type) fails a compiled
    # model's guard on its next call: one recompile per model, beyond the first call's compile
    assert task.model.model.config.to_dict() == config, name
    # a training step with every dropout and masking probability zeroed is a function of its
    # inputs: the cell refuses a model whose two eager steps differ (eager_nondeterministic).
    # Same machine, same threads: only a reordered fp32 sum may differ, ~1e-6 of the scale;
    # a dropout of 0.1 moves logits by a tenth of theirs
    again = task.model(*task.inputs)
    for a, b in zip(out, again, strict=True):
        scale = 1.0 + a.detach().abs().max().item()
        assert (a - b).detach().abs().max().item() <= 1e-4 * scale, name
    loss = task.loss_fn(out, None)
    assert all(isinstance(t, torch.Tensor) for t in out) and len(out) >= 2, name
    # the model's own loss from random labels: cross-entropy near log(classes) (CTC and
    # CLIP's contrastive loss are positive); finite, and it gives gradients
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0, (name, loss)
    loss.backward()
    grads = [p.grad for p in task.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads), name
    return entry, task, out


@pytest.mark.parametrize("name", SAMPLE)
def test_a_suite_model_builds_tiny_and_runs_an_eager_step(name):
    entry, task, out = _eager_forward(name)
    if entry.task in ("masked-lm", "causal-lm", "seq2seq-lm"):
        vocab = hf.text_config(task.model.model.config).vocab_size
        assert out[1].shape[-1] == vocab  # the logits follow the loss


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.parametrize("name", [e.name for e in hf.ENTRIES if e.name not in SAMPLE])
def test_every_other_suite_model_builds_tiny_and_runs_an_eager_step(name):
    _eager_forward(name)


def test_suite_inputs_are_the_same_for_the_same_seed_and_differ_across_seeds():
    import torch

    entry = hf.BY_NAME["hf/bert"]
    config = hf.make_config(entry, tiny=True)
    shape = {"batch": 2, "seq": 16, "tiny": 1}
    a = hf.make_inputs(entry, config, shape, torch.Generator().manual_seed(0))
    b = hf.make_inputs(entry, config, shape, torch.Generator().manual_seed(0))
    c = hf.make_inputs(entry, config, shape, torch.Generator().manual_seed(1))
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert not torch.equal(a["input_ids"], c["input_ids"])
    assert int(a["input_ids"].max()) < config.vocab_size


def test_size_and_suite_flags_select_models(capsys):
    from lab.commands.suites import suite_selection

    class Args:
        workload, suite, size = ["mlp"], ["hf"], "tiny"

    chosen, shape = suite_selection(Args)
    assert chosen[0] == "mlp" and chosen[1:] == suites.names("hf") and shape == {"tiny": 1}
    Args.suite, Args.size = None, "tiny"
    with pytest.raises(Exception, match="no suite model is selected"):
        suite_selection(Args)
    Args.workload, Args.suite = None, ["timm"]
    with pytest.raises(Exception, match="unknown suite 'timm'"):
        suite_selection(Args)


# ---------------------------------------------------------------- the summary


def _cell(model: str, backend: str, status: str = "ok", speedup: float | None = None,
          compile_s: float | None = None, memory: float | None = None, breaks: int = 0,
          mode: str = "infer", tiny: int = 1) -> dict:
    cell = {"workload": f"hf/{model}", "backend": backend, "mode": mode, "device": "cpu",
            "precision": "fp32", "status": status, "shape": {"batch": 2, "tiny": tiny},
            "baseline_backend": "torch-eager" if backend == "torch-compile" else None}
    if backend == "torch-compile":
        cell.update(speedup=speedup, compile_s_cold=compile_s,
                    memory={"ratio_eager_over_candidate": memory},
                    diagnostics={"graph_breaks": breaks, "recompiles": 0})
    return cell


def test_the_summary_is_the_dashboards_four_numbers_per_suite_and_backend():
    cells = [{**_cell("a", "torch-compile", speedup=2.0, compile_s=10.0, memory=1.5, breaks=2),
              "machine_busy": True},
             _cell("b", "torch-compile", speedup=0.5, compile_s=30.0, memory=None),
             _cell("c", "torch-compile", speedup=1.0, compile_s=20.0, memory=1.0),
             _cell("d", "torch-compile", status="compile_error"),
             _cell("e", "torch-compile", status="fail_accuracy", speedup=None),
             *[_cell(m, "torch-eager") for m in "abcde"],
             {"workload": "mlp", "backend": "torch-compile", "status": "ok"}]  # no suite
    rows = {r["backend"]: r for r in scorecard.summarize(cells)}
    assert set(rows) == {"torch-compile", "torch-eager"}
    row = rows["torch-compile"]
    assert (row["ok"], row["models"], row["pass_rate"]) == (3, 5, 0.6)
    assert row["statuses"] == {"compile_error": 1, "fail_accuracy": 1, "ok": 3}
    assert row["failed_models"] == {"hf/d": "compile_error", "hf/e": "fail_accuracy"}
    # geomean of 2, 0.5 and 1 is 1: over the passing models only
    assert math.isclose(row["speedup_geomean"], 1.0, rel_tol=1e-12)
    lo, hi = row["speedup_geomean_ci95"]
    assert 0.5 <= lo < 1.0 < hi <= 2.0
    assert math.isclose(row["faster_share"], 2 / 3)
    assert (row["compile_s_mean"], row["compile_s_max"]) == (20.0, 30.0)
    assert math.isclose(row["memory_compression_geomean"], math.sqrt(1.5))
    assert row["memory_compression_models"] == 2
    assert row["models_with_graph_breaks"] == 1 and row["busy_models"] == 1
    assert rows["torch-eager"]["pass_rate"] == 1.0 and "speedup_geomean" not in \
        rows["torch-eager"]
    text = scorecard.markdown(list(rows.values()))
    assert "3/5 (60%)" in text and "1.00x [" in text
    assert "1 compile_error, 1 fail_accuracy, (1 timed on a busy machine)" in text


def test_the_geomean_interval_is_over_models():
    rng = np.random.default_rng(0)
    few = list(np.exp(rng.normal(0.2, 0.3, size=8)))
    many = list(np.exp(rng.normal(0.2, 0.3, size=200)))
    g_few, (lo_few, hi_few) = stats.geomean_ci(few)
    g_many, (lo_many, hi_many) = stats.geomean_ci(many)
    assert lo_few <= g_few <= hi_few and lo_many <= g_many <= hi_many
    assert hi_many / lo_many < hi_few / lo_few  # more models, a narrower interval
    assert lo_many < math.exp(0.2) < hi_many  # and it covers the true geomean
    assert stats.geomean_ci([]) == (None, None)
    assert stats.geomean_ci([1.3]) == (1.3, (1.3, 1.3))


# ---------------------------------------------------------------- suite claims


CLAIMS = """
[[claim]]
id = "rate"
quote = "works on 93% of models"
metric = "pass_rate"
backend = "torch-compile"
suite = "hf"
size = "tiny"
expect = "at_least"
value = 0.93

[[claim]]
id = "geo"
quote = "faster on average"
metric = "speedup"
aggregate = "geomean"
backend = "torch-compile"
suite = "hf"
expect = "at_least"
value = 1.2

[[claim]]
id = "share"
quote = "up to 2x in many scenarios"
metric = "speedup"
aggregate = "share"
at = 1.5
backend = "torch-compile"
suite = "hf"
expect = "at_least"
value = 0.25
"""


def _stored(speedups: dict[str, float | None]) -> dict:
    """The suite's cells at both sizes, as one run holding both gives them to the claims
    (lab.judge.suite_claims.index): each claim is judged on its own size's."""
    cells = []
    for name in suites.names("hf"):
        model = name.split("/", 1)[1]
        s = speedups.get(model)
        cells += [_cell(model, "torch-compile", status="ok" if s else "compile_error",
                        speedup=s, tiny=tiny) for tiny in (0, 1)]
    return suite_claims.index(cells, "cpu")


def test_suite_claims_are_judged_over_the_models():
    parsed = claims.parse(CLAIMS, "suites.toml")
    assert [c.suite_kind for c in parsed] == ["pass_rate", "geomean", "share"]
    assert parsed[0].shape == {"tiny": 1} and len(parsed[0].workloads) >= 30
    names = [n.split("/", 1)[1] for n in suites.names("hf")]
    # every model passes at 1.6x: a 100% pass rate (its interval's low end is what 33 models
    # can show), a geomean of 1.6, every model at or above 1.5x
    results = verdict.check(parsed, {}, "cpu", "test CPU", _stored({m: 1.6 for m in names}))
    by_id = {r.claim.id: r for r in results}
    assert by_id["geo"].verdict == "supported"
    assert math.isclose(by_id["geo"].cells[0].ratio, 1.6)
    assert by_id["share"].verdict == "supported"
    assert by_id["rate"].cells[0].ratio == 1.0
    assert "33 of 33 models ok" in by_id["rate"].cells[0].reason
    # half the models fail to compile and the rest are no faster: every claim refuted
    half = {m: (1.0 if i % 2 else None) for i, m in enumerate(names)}
    results = verdict.check(parsed, {}, "cpu", "test CPU", _stored(half))
    assert [r.verdict for r in results] == ["refuted", "refuted", "refuted"]
    text = verdict.format_results(results)
    assert "suite hf (33 models)" in text and "not ok: " in text and "test CPU" in text


def test_suite_claim_mistakes_are_one_line_with_their_line():
    bad = CLAIMS.replace('aggregate = "share"\nat = 1.5', 'aggregate = "share"')
    with pytest.raises(claims.ClaimError, match=r"suites.toml:\d+: claim share: aggregate "
                                                r"share needs at"):
        claims.parse(bad, "suites.toml")
    with pytest.raises(claims.ClaimError, match="fraction of models"):
        claims.parse(CLAIMS.replace("value = 0.93", "value = 93"), "suites.toml")
    with pytest.raises(claims.ClaimError, match="unknown suite"):
        claims.parse(CLAIMS.replace('suite = "hf"\nsize', 'suite = "timm"\nsize'),
                     "suites.toml")


def test_the_shipped_suite_claims_parse():
    parsed = claims.load(ROOT / "claims" / "suites.toml")
    assert {c.suite for c in parsed} == {"hf"} and all(c.source for c in parsed)


# ---------------------------------------------------------------- end to end


def _lab(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=os.environ)


def _run_and_read(tmp_path: Path, models: str, backends: str) -> tuple[dict, str, str]:
    """`lab run` of tiny suite models, then the summary as `lab show --json` and `lab report`
    give it: (backend -> summary row, run's stdout, report's markdown)."""
    out = tmp_path / "out"
    done = _lab("run", "--workload", models, "--size", "tiny", "--backend", backends,
                "--mode", "infer", "--repeats", "3", "--device", "cpu", "--out", str(out),
                timeout=1800)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    [path] = list(out.glob("*/*/results.json"))
    shown = _lab("show", str(path.parent), "--json", timeout=120)
    assert shown.returncode == 0, shown.stderr
    rows = {r["backend"]: r for r in json.loads(shown.stdout)["suites"]}
    report = _lab("report", str(path.parent), timeout=120)
    assert report.returncode == 0, report.stderr
    return rows, done.stdout, report.stdout


@pytest.mark.slow
def test_tiny_suite_models_run_end_to_end_and_end_with_their_summary(tmp_path):
    rows, stdout, report = _run_and_read(tmp_path, "hf/bert,hf/resnet,hf/whisper",
                                         "torch-eager")
    assert "suite summary" in stdout and "hf (tiny, cpu, fp32)" in stdout
    row = rows["torch-eager"]
    assert row["models"] == 3 and sum(row["statuses"].values()) == 3  # each ok or its status
    assert "### suite summary" in report and "/3 (" in report


@pytest.mark.long
@pytest.mark.slow
def test_a_compiled_tiny_suite_model_has_its_speedup_in_the_summary(tmp_path):
    """One compiled model (a compile takes minutes on a busy 2-core machine)."""
    rows, stdout, _ = _run_and_read(tmp_path, "hf/bert", "torch-compile")
    row = rows["torch-compile"]
    assert row["models"] == 1
    if row["ok"]:
        assert row["speedup_geomean"] > 0 and row["compile_s_mean"] > 0
        assert row["speedup_geomean_ci95"][0] == row["speedup_geomean_ci95"][1]  # one model
    else:
        assert row["failed_models"]["hf/bert"] in stdout  # its status, stated


@pytest.mark.long
@pytest.mark.slow
def test_list_suites_shows_every_model_with_its_size():
    done = _lab("list", "--suites", timeout=300)
    assert done.returncode == 0, done.stderr
    for name in suites.names("hf"):
        assert name in done.stdout
    assert "124.4M" in done.stdout  # GPT-2's 124M at its real size
