"""The seed's "Distributed Training" row as claims (metric "scaling", lab.judge.scaling): judged
on stored data-parallel cells (synthetic runs whose two passes' samples the test sets), and
refused with the file's line where malformed."""

from __future__ import annotations

import pytest
from conftest import ROOT
from verdict_helpers import (
    cell,
    check_one,
    claim_of,
    run_lab_main,
    samples,
    write_run,
)

from lab.judge import claims, verdict

SEED = ROOT / "claims" / "seed.toml"
DISTRIBUTED = ("distributed-training-pytorch", "distributed-training-tensorflow",
               "distributed-training-alike")


def ranked(workload: str, backend: str, efficiency: float, busy: bool = False, seed: int = 0,
           ranks: int = 2, cores=((0,), (1,)), step_s: float = 0.1) -> dict:
    """A data-parallel cell of `lab run --ranks N`: the 1-rank pass's samples and the N-rank
    pass's, whose medians give `efficiency` (t1 / (N tN))."""
    base, strategy = backend.split("+")[0], backend.split("+")[1].split("@")[0]
    framework = {"torch": "torch", "tf": "tf", "jax": "jax"}[base.split("-")[0]]
    return cell(workload, backend, "train", samples(step_s / (ranks * efficiency), seed=seed),
                framework=framework, ranks=ranks, strategy=strategy, threads=1,
                rank_cores=[list(c) for c in cores], machine_busy=busy,
                single_rank_samples_s=samples(step_s, seed=seed + 1),
                scaling_efficiency=efficiency)


SCALING = dict(metric="scaling", backend="torch-eager", ranks=2, workload="transformer",
               mode="train", expect="at_least", value=0.7)


@pytest.mark.parametrize("efficiency, busy, cores, want, words", [
    (0.9, False, ((0,), (1,)), "supported", "interval from their samples"),
    (0.3, False, ((0,), (1,)), "refuted", "interval from their samples"),
    (0.7, False, ((0,), (1,)), "inconclusive", "interval from their samples"),
    # the 1-rank and 2-rank passes ran one after the other while other work came and went
    (0.9, True, ((0,), (1,)), "inconclusive", "machine busy"),
    # two ranks on one core take turns: no parallelism was measured
    (0.9, False, ((0,), (0,)), "inconclusive", "shared cores"),
])
def test_a_scaling_claim_is_judged_on_the_cells_two_passes(efficiency, busy, cores, want,
                                                            words):
    result = check_one(claim_of(**SCALING), [ranked("transformer", "torch-eager+ddp@2", efficiency,
                                               busy=busy, cores=cores)])
    assert result.verdict == want, result
    (c,) = result.cells
    assert words in c.reason
    if "shared cores" not in words:
        assert c.ratio == pytest.approx(efficiency, rel=0.03)
    if not busy and c.ci95:
        assert c.ci95[0] <= c.ratio <= c.ci95[1]
        assert "step 100.0 ms at 1 rank" in c.detail or "ms at 1 rank" in c.detail
    # what the verdict rests on: cells, ranks, frameworks, machine
    assert "1 data-parallel cell at 2 ranks (torch; ddp) on Test CPU" in result.reason


def test_a_strategy_picks_the_cells_and_a_single_process_cell_is_not_read():
    fsdp = claim_of(**SCALING, strategy="fsdp")
    entries = [ranked("transformer", "torch-eager+ddp@2", 0.9),
               ranked("transformer", "torch-eager+fsdp@2", 0.3, seed=4),
               cell("transformer", "torch-eager", "train", samples(0.1))]
    assert check_one(fsdp, entries).verdict == "refuted"
    assert check_one(claim_of(**SCALING), entries).verdict == "supported"  # ddp: the default
    alone = check_one(claim_of(**SCALING), entries[2:])
    assert alone.verdict == "inconclusive" and "torch-eager+ddp@2: not measured" in alone.reason
    assert "lab run --mode train --ranks 2" in alone.reason


def test_two_frameworks_efficiencies_compare_through_the_run_to_run_spread():
    alike = claim_of(**{**SCALING, "backend": "tf-graph", "versus": "torch-eager",
                      "expect": "about", "value": 1.0, "tolerance": 0.25})
    far = check_one(alike, [ranked("transformer", "tf-graph+mirrored@2", 0.95),
                         ranked("transformer", "torch-eager+ddp@2", 0.2, seed=2)])
    (c,) = far.cells
    assert far.verdict == "refuted" and c.ratio == pytest.approx(0.95 / 0.2, rel=0.05)
    # a difference the run-to-run spread could make is not decided either way
    near = check_one(alike, [ranked("transformer", "tf-graph+mirrored@2", 0.85),
                          ranked("transformer", "torch-eager+ddp@2", 0.8, seed=2)])
    (c,) = near.cells
    assert near.verdict == "inconclusive" and c.ci95[1] / c.ci95[0] > 2
    assert "tf, torch" in near.reason and "mirrored, ddp" not in near.reason


def test_the_seeds_row_is_judged_on_a_stored_run(tmp_path):
    from lab.judge.checks import judge_claims

    write_run(tmp_path, [ranked("transformer", "torch-eager+ddp@2", 0.9),
                         ranked("gpt2", "torch-eager+ddp@2", 0.85, seed=2),
                         ranked("transformer", "tf-graph+mirrored@2", 0.2, seed=4)])
    check = judge_claims(str(SEED), run=str(tmp_path), stored_only=True)
    got = {r.claim.id: r for r in check.results if r.claim.id in DISTRIBUTED}
    assert {k: r.verdict for k, r in got.items()} == {
        "distributed-training-pytorch": "supported",
        "distributed-training-tensorflow": "refuted",
        # 0.2 / 0.9: under a quarter, beyond what the run-to-run spread of two cells makes
        "distributed-training-alike": "refuted"}
    assert "2 data-parallel cells at 2 ranks (torch; ddp)" in got[DISTRIBUTED[0]].reason
    text = verdict.format_results(list(got.values()))
    assert "scaling efficiency at 2 ranks of torch-eager+ddp@2, >= 0.7;" in text


def test_the_cells_a_scaling_claim_lacks_are_the_data_parallel_ones():
    from lab.judge.scaling import parse_label

    todo, skipped = verdict.missing_cells([claim_of(**{**SCALING, "workload": ["transformer",
                                                                         "gpt2"]})], {}, "cpu")
    assert [t[2] for t in todo] == ["torch-eager+ddp@2"] * 2 and not skipped
    assert parse_label("torch-compile:max-autotune+fsdp-ca@4") == (
        "torch-compile:max-autotune", "fsdp-ca", 4)
    assert parse_label("torch-eager") is None
    tf = claim_of(**{**SCALING, "backend": "tf-xla", "workload": "gpt2"})
    todo, skipped = verdict.missing_cells([tf], {}, "cpu")
    assert not todo and "no tf version" in skipped[("gpt2", "tf-xla+mirrored@2", "train",
                                                    "fp32")]["reason"]


@pytest.mark.parametrize("edit, key, words", [
    (lambda t: {k: v for k, v in t.items() if k != "ranks"}, "metric", "needs ranks"),
    (lambda t: {**t, "ranks": 1}, "ranks", "at least 2"),
    (lambda t: {**t, "metric": "speedup", "backend": "torch-compile"}, "ranks",
     "ranks goes with metric"),
    (lambda t: {**t, "strategy": "zero"}, "strategy", "unknown strategy 'zero'"),
    (lambda t: {**t, "strategy": "mirrored"}, "strategy", "none of the claim's backends"),
    (lambda t: {**t, "backend": "tf-eager"}, "backend", "no data-parallel version"),
    (lambda t: {**t, "mode": "infer"}, "mode", "mode = \"train\""),
])
def test_malformed_scaling_claims_name_the_line(edit, key, words):
    fields = edit(dict(SCALING))
    lines = ["[[claim]]", 'id = "t"', 'quote = "q"'] + \
        [f"{k} = {v!r}".replace("'", '"') for k, v in fields.items()]
    with pytest.raises(claims.ClaimError) as err:
        claims.parse("\n".join(lines), "mine.toml")
    line = next(i + 1 for i, text in enumerate(lines) if text.startswith(f"{key} ="))
    assert str(err.value).startswith(f"mine.toml:{line}: claim t: ") and words in str(err.value)


def test_lab_check_exits_2_on_a_malformed_scalingclaim_of(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("\n".join(["[[claim]]", 'id = "dp"', 'quote = "scales"',
                              'metric = "scaling"', 'backend = "torch-eager"', "ranks = 0",
                              'workload = "transformer"', 'mode = "train"',
                              'expect = "at_least"', "value = 0.7", ""]))
    result = run_lab_main("check", str(bad), "--out", str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (f"lab: error: {bad}:6: claim dp: ranks must be an "
                                     f"integer of at least 2, got 0")
    assert [p.name for p in tmp_path.iterdir()] == ["bad.toml"]  # nothing written


def test_lab_check_plans_a_missing_data_parallel_cell_as_lab_run_ranks_does(monkeypatch):
    import os

    from lab.judge import checks
    from lab.running import loop

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("2 ranks need 2 cores of their own")

    class Planned(Exception):
        pass

    def run_cells(cells, **_):
        raise Planned([c.choice.label for c in cells], [c.spec.extra for c in cells])

    monkeypatch.setattr(loop, "run_cells", run_cells)
    todo, _ = verdict.missing_cells([claim_of(**{**SCALING, "backend": "tf-graph"})], {}, "cpu")
    with pytest.raises(Planned) as planned:
        checks._run_for_claims(todo, "cpu", "unused", progress=lambda _: None)
    labels, extras = planned.value.args
    assert labels == [todo[0][2]] == ["tf-graph+mirrored@2"]
    assert extras[0]["ranks"] == 2 and extras[0]["strategy"] == "mirrored"


def test_ranks_compare_two_backends_data_parallel_cells():
    # "does torch.compile still pay under DDP": the two DDP cells' throughputs
    pays = claim_of(metric="throughput", backend="torch-compile", versus="torch-eager", ranks=2,
                  workload="transformer", mode="train", expect="at_least", value=1.0)
    entries = [ranked("transformer", "torch-compile+ddp@2", 0.8, step_s=0.02),
               ranked("transformer", "torch-eager+ddp@2", 0.8, seed=2, step_s=0.2),
               cell("transformer", "torch-compile", "train", samples(0.5))]  # not read
    result = check_one(pays, entries)
    (c,) = result.cells
    assert c.ratio == pytest.approx(10, rel=0.05) and result.verdict == "supported"
    assert "across processes" in c.reason
    assert "throughput of torch-compile+ddp@2 over torch-eager+ddp@2" in \
        verdict.format_results([result])
