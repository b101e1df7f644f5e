"""The language-model workloads inside the lab's cells: the generate mode planned only where it
exists, timed and judged token by token; AdamW alike in torch and JAX; a shape cycle's
recompiles and compile seconds counted through real cell processes; --full-size; and the LLM
training claim judged on GPT-2 and the Llama-style model."""

from __future__ import annotations

import numpy as np
import pytest
from numerics import assert_close_scaled, bound

from lab.cell import launch as runner
from lab.cell.spec import CellResult, CellSpec
from lab.core.errors import UsageError
from lab.core.status import Status
from lab.running import loop as session
from lab.workloads import get

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

TINY = {"batch": 2, "seq": 16, "prompt": 5, "new_tokens": 6, "vocab": 512, "layers": 1}


def tiny(name: str, **changes) -> dict:
    shape = get(name).default_shape("cpu")
    return {**shape, **{k: v for k, v in TINY.items() if k in shape}, **changes}


def spec(workload: str, backend: str, mode: str, shape: dict, option=None) -> CellSpec:
    return CellSpec(workload=workload, backend=backend, option=option, mode=mode, shape=shape,
                    precision="fp32", device="cpu", threads=session.default_threads(),
                    repeats=3, warmup_seconds=0.2, budget_s=200.0)


# ---------------------------------------------------------------- planning


def _plan(**kwargs):
    cells, _ = session.plan(session.Selection(device="cpu", **kwargs))
    return {(c.spec.workload, c.choice.label, c.spec.mode): c.skip_reason for c in cells}


def test_generate_is_planned_only_for_the_language_models_and_decoding_backends():
    planned = _plan(workloads=["gpt2", "mlp"], backends=["torch-compile", "jax-jit", "tf-xla",
                                                         "torch-triton"],
                    modes=["generate", "train"])
    assert planned[("gpt2", "torch-compile", "generate")] is None
    assert planned[("gpt2", "jax-jit", "generate")] is None
    assert planned[("gpt2", "torch-compile", "train")] is None
    assert planned[("mlp", "torch-compile", "generate")] == \
        "workload mlp has no generate mode (generate: gpt2, llama)"
    assert planned[("gpt2", "torch-triton", "generate")] == \
        "backend torch-triton has no generate mode"
    assert planned[("gpt2", "tf-xla", "generate")] == "workload gpt2 has no tf version"
    assert planned[("mlp", "torch-triton", "train")] is None
    with pytest.raises(UsageError, match="unknown mode 'decode'; valid: infer, train, generate"):
        _plan(workloads=["gpt2"], modes=["decode"])


def test_full_size_uses_the_real_configs_on_the_cpu():
    cells, device = session.plan(session.Selection(workloads=["llama"], device="cpu",
                                                   full_size=True, shape={"batch": 1}))
    assert device == "cpu"
    assert cells[0].spec.shape == {**get("llama").default_shape("cuda"), "batch": 1}
    small, _ = session.plan(session.Selection(workloads=["llama"], device="cpu"))
    assert small[0].spec.shape == get("llama").default_shape("cpu")


def test_generate_throughput_counts_the_produced_tokens():
    from lab.cell.spec import CellOutcome
    from lab.running.writer import lab_fields

    shape = tiny("gpt2")
    result = CellResult(samples_s=[0.5] * 5, baseline_samples_s=[1.0] * 5, first_call_s=3.0,
                        diagnostics={"first_token_s": 0.01}, inner_steps=1)
    fields = lab_fields(CellOutcome(spec("gpt2", "torch-compile", "generate", shape), "x",
                                    result, 10.0), get("gpt2"))
    assert fields["throughput"] == fields["tokens_per_s"] == 2 * 6 / 0.5
    assert fields["first_token_s"] == 0.01
    train = lab_fields(CellOutcome(spec("gpt2", "torch-compile", "train", shape), "x", result,
                                   10.0), get("gpt2"))
    assert train["throughput"] == 2 * 16 / 0.5 and "tokens_per_s" not in train


# ---------------------------------------------------------------- AdamW


def test_adamw_is_the_same_update_in_torch_and_jax():
    jax = pytest.importorskip("jax")
    from lab.compile import jax as jax_backend
    from lab.compile import torch as torch_backend

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 3)).astype(np.float32)
    grads = [rng.normal(size=(4, 3)).astype(np.float32) for _ in range(3)]
    param = torch.nn.Parameter(torch.tensor(weight))
    opt = torch_backend._optimizer(torch, [param], "adamw")
    init, update = jax_backend.optimizer("adamw")
    params = {"w": jax.numpy.asarray(weight)}
    state = init(params)
    for g in grads:
        param.grad = torch.tensor(g)
        opt.step()
        params, state = update(params, {"w": jax.numpy.asarray(g)}, state)
    # elementwise, no sums: each step rounds the parameter twice (the decay, the update); the
    # update's own roundings are relative to the learning rate (1e-4), far below the
    # parameters' scale: one more
    steps = 2 * len(grads) + 1
    assert_close_scaled(params["w"], param, dtype="float32", reduction_len=steps,
                        what="parameters after 3 AdamW steps")
    # the decay matters: Adam (no decay) ends elsewhere, by more than the rounding allowed above
    # (the decay moves a parameter by 3 x lr x 0.01 = 3e-6 of itself)
    adam_init, adam_update = jax_backend.optimizer("adam")
    plain, adam_state = {"w": jax.numpy.asarray(weight)}, adam_init({"w": weight})
    for g in grads:
        plain, adam_state = adam_update(plain, {"w": jax.numpy.asarray(g)}, adam_state)
    moved = np.abs(np.asarray(plain["w"]) - np.asarray(params["w"])).max()
    assert moved > bound(params["w"], dtype="float32", reduction_len=steps)


def test_an_unknown_optimizer_is_an_error_in_both_frameworks():
    from lab.compile import torch as torch_backend

    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        torch_backend._optimizer(torch, [torch.nn.Parameter(torch.zeros(1))], "lion")
    pytest.importorskip("jax")
    from lab.compile import jax as jax_backend

    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        jax_backend.optimizer("lion")


def test_language_models_train_with_adamw():
    task = get("llama").build("torch", tiny("llama"), "train", "cpu", "float32", 0)
    assert task.optimizer == "adamw"


# ---------------------------------------------------------------- generate accuracy


def test_near_ties_are_where_the_top_two_logits_meet():
    from lab.compile.generation import near_ties

    logits = np.array([[[1.0, 0.99995, -3.0], [2.0, 0.0, 1.0]]])  # (batch 1, 2 positions, 3)
    np.testing.assert_array_equal(near_ties(logits, 1e-4, 1e-4), [[True, False]])


def _generate_sides(offset_token0: float):
    """Eager and a 'compiled' side whose forward adds `offset_token0` to token 0's logit."""
    from lab.cell import accuracy
    from lab.compile.generation import GenerateSide

    task = get("llama").build("torch", tiny("llama"), "generate", "cpu", "float32", 0)

    def shifted(ids, cache):
        logits = task.model(ids, cache)
        return logits + torch.nn.functional.one_hot(torch.tensor(0), logits.shape[-1]) \
            * offset_token0

    eager = GenerateSide(task, task.model, task.model, (1e-4, 1e-4))
    candidate = GenerateSide(task, shifted, task.model, (1e-4, 1e-4))
    candidate.step()  # the timed tokens the diagnostics compare
    verdict = accuracy.check(candidate.outputs(), eager.outputs(), "fp32",
                             stated=candidate.accuracy_tolerance)
    return verdict, candidate.diagnostics()


def test_generate_accuracy_passes_a_forward_that_only_rounds_differently():
    verdict, diagnostics = _generate_sides(1e-7)
    assert verdict["passed"], verdict
    assert "teacher-forced" in verdict["tolerance_why"]
    assert diagnostics["tokens"]["positions"] == 6


def test_generate_accuracy_fails_a_forward_that_changes_the_tokens():
    verdict, diagnostics = _generate_sides(100.0)  # token 0 wins everywhere
    assert not verdict["passed"]
    assert diagnostics["tokens"]["tokens_equal"] is False
    assert diagnostics["tokens"]["first_divergence"] == 0
    assert "first differ at position 0" in verdict["tolerance_why"]


# ---------------------------------------------------------------- real cell processes


def test_jax_generate_cell_reports_tokens_per_second_and_time_to_first_token():
    pytest.importorskip("jax")
    result, _ = runner.run_cell_process(spec("llama", "jax-jit", "generate", tiny("llama")),
                                        timeout_s=300)
    assert result.status == Status.OK, (result.reason, result.log_tail)
    diagnostics = result.diagnostics
    assert diagnostics["tokens"]["tokens_equal"] is True
    assert diagnostics["executables"] == 2  # the prefill's shape and the one-token step's
    assert 0 < diagnostics["first_token_s"] < np.median(result.samples_s)
    assert result.accuracy["rtol"] == result.accuracy["atol"] == 0.0


@pytest.mark.long  # six XLA compiles of a Llama step: minutes on 2 cores
def test_jax_cycle_cell_counts_one_trace_per_length():
    pytest.importorskip("jax")
    result, _ = runner.run_cell_process(
        spec("llama-varlen", "jax-jit", "train", tiny("llama-varlen", seq=32)), timeout_s=300)
    assert result.status == Status.OK, (result.reason, result.log_tail)
    cycle = result.diagnostics["cycle"]
    assert cycle["lengths"] == [13, 21, 29, 17, 25, 9] == cycle["padded"]
    assert cycle["graphs"] == 6 and cycle["recompiles"] == 5
    assert len(cycle["compile_s_per_batch"]) == 6 and cycle["compile_s_total"] > 0


@pytest.mark.long  # two Inductor compiles of a Llama: minutes on 2 cores
@pytest.mark.slow
def test_torch_compile_static_with_buckets_compiles_one_graph_per_bucket():
    """torch-compile:static on a cycle padded to multiples of 16: two lengths, two graphs,
    one recompile, all in the cell's first call; the compile seconds split by batch."""
    shape = tiny("llama-varlen", seq=32, bucket=16)
    result, _ = runner.run_cell_process(
        spec("llama-varlen", "torch-compile", "infer", shape, option="static"), timeout_s=500)
    assert result.status == Status.OK, (result.reason, result.log_tail)
    diagnostics = result.diagnostics
    assert diagnostics["dynamic"] is False
    assert diagnostics["cycle"]["padded"] == [16, 32, 32, 32, 32, 16]
    assert diagnostics["cycle"]["graphs"] == 2 and diagnostics["cycle"]["recompiles"] == 1
    assert diagnostics["recompiles"] == 0  # none after the first call: the cycle holds them
    per_batch = diagnostics["cycle"]["compile_s_per_batch"]
    # the batches that brought a new length (the first, the first of length 32) compiled
    assert per_batch[0] > 1.0 and per_batch[1] > 1.0


# ---------------------------------------------------------------- the LLM claim


def test_llm_training_claim_is_judged_on_gpt2_and_llama(tmp_path):
    from verdict_helpers import speedup_cell, write_run

    from lab.judge.checks import judge_claims

    entries = [speedup_cell("gpt2", "torch-compile", "train", 1.4, seed=1),
               speedup_cell("llama", "torch-compile", "train", 1.0, seed=3),
               speedup_cell("transformer", "torch-compile", "train", 1.4, seed=5)]
    run = write_run(tmp_path / "run", entries)
    check = judge_claims("claims/seed.toml", run=str(run), stored_only=True)
    claim = next(r for r in check.results if r.claim.id == "compile-llm-training-30-50")
    by_label = {c.label: c for c in claim.cells}
    assert set(by_label) == {"gpt2 train", "llama train", "transformer train"}
    assert by_label["gpt2 train"].verdict == "supported"
    assert by_label["llama train"].verdict == "refuted"
    assert claim.verdict == "refuted" and claim.hardware == "Test CPU, 2 cores (CPU)"
    gpt_fast = next(r for r in check.results if r.claim.id == "gpt-fast-decode-4x")
    assert gpt_fast.verdict == "inconclusive" and gpt_fast.reason.startswith("needs GPU")


def test_the_status_names_a_shape_cycles_graphs_and_recompiles():
    from lab.reports.terminal import _status

    row = {"status": "ok", "diagnostics": {"cycle": {"graphs": 2, "recompiles": 1}}}
    assert _status(row) == "ok (2 graphs, 1 recompiles over the cycle)"
    assert _status({"status": "ok", "diagnostics": {"cycle": {"lengths": [3]}}}) == "ok"
