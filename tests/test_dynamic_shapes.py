"""Shapes that change between steps and a data-dependent branch: the counts a backend reports
(graphs per compile setting, JAX executables, where the graph broke) checked directly with
Dynamo's CompileCounter, which traces without running Inductor."""

from __future__ import annotations

import pytest
from numerics import assert_close_scaled, decoder_chain

from lab.workloads import get
from lab.workloads.llm import recompiles, varlen

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def small(name: str, **changes) -> dict:
    shape = get(name).default_shape("cpu")
    shape.update({"batch": 2, "seq": 32, "vocab": 512, "layers": 1, **changes})
    return shape


def test_cycle_lengths_and_buckets():
    assert varlen.cycle_lengths(128) == (61, 93, 125, 77, 109, 45)
    assert [varlen.padded_length(n, 32) for n in (61, 93, 125, 77, 109, 45)] == \
        [64, 96, 128, 96, 128, 64]
    assert varlen.padded_length(61, 0) == 61
    shape = get("llama-varlen").default_shape("cpu")
    assert get("llama-varlen").items_per_step(shape) == shape["batch"] * 510


def test_padding_leaves_the_loss_of_the_real_tokens_unchanged():
    shape = small("llama-varlen")
    plain = get("llama-varlen").build("torch", shape, "train", "cpu", "float32", 0)
    padded = get("llama-varlen").build("torch", {**shape, "bucket": 16}, "train", "cpu",
                                       "float32", 0)
    assert plain.padded == plain.lengths and set(padded.padded) == {16, 32}
    task = plain.task
    for (a, ta), (b, tb) in zip(plain.batches, padded.batches, strict=True):
        assert b[0].shape[1] % 16 == 0 and (tb[:, a[0].shape[1]:] == varlen.IGNORE).all()
        with torch.no_grad():
            loss_a = task.loss_fn(task.model(*a), ta)
            loss_b = task.loss_fn(task.model(*b), tb)
        # padding changes the shapes the sums run over, hence their order: rounding only
        assert_close_scaled(loss_b, loss_a, dtype="float32",
                            reduction_len=decoder_chain(shape, "loss"), what="padded loss")


def _graphs_over_cycle(cycle, dynamic) -> int:
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(cycle.task.model, backend=counter, dynamic=dynamic)
    with torch.no_grad():
        for _ in range(2):  # a second pass over the cycle compiles nothing new
            for inputs, _target in cycle.batches:
                compiled(*inputs)
    return counter.frame_count


@pytest.mark.parametrize("dynamic,bucket,graphs", [
    (None, 0, 2),  # default: static for the first length, one dynamic graph from the second
    (True, 0, 1),  # dynamic from the start
    (False, 0, 6),  # static: one graph per distinct length
    (False, 16, 2),  # static with padding: one graph per bucket length (16, 32)
])
def test_graphs_per_compile_setting(dynamic, bucket, graphs):
    cycle = get("llama-varlen").build("torch", small("llama-varlen", bucket=bucket), "infer",
                                      "cpu", "float32", 0)
    assert _graphs_over_cycle(cycle, dynamic) == graphs


@pytest.mark.parametrize("bucket,executables", [(0, 6), (16, 2)])
def test_jax_traces_one_executable_per_padded_length(bucket, executables):
    jax = pytest.importorskip("jax")
    cycle = get("llama-varlen").build("jax", small("llama-varlen", bucket=bucket), "train",
                                      "cpu", "float32", 0)
    task = cycle.task
    loss = jax.jit(lambda p, ids, t: task.loss_fn(task.apply(p, ids), t))
    for _ in range(2):
        for (ids,), target in cycle.batches:
            loss(task.params, ids, target)
    assert recompiles.jax_executables(loss) == executables


def test_jax_masked_loss_matches_torch_on_padded_batches():
    jax = pytest.importorskip("jax")
    shape = small("llama-varlen", bucket=16)
    ref = get("llama-varlen").build("torch", shape, "train", "cpu", "float32", 0)
    cycle = get("llama-varlen").build("jax", shape, "train", "cpu", "float32", 0)
    (ids,), target = cycle.batches[1]
    got = cycle.task.loss_fn(jax.jit(cycle.task.apply)(cycle.task.params, ids), target)
    (t_ids,), t_target = ref.batches[1]
    with torch.no_grad():
        want = ref.task.loss_fn(ref.task.model(t_ids), t_target)
    assert_close_scaled(got, want, dtype="float32", reduction_len=decoder_chain(shape, "loss"),
                        what="masked loss, JAX vs torch")


def test_graph_break_is_found_at_the_branch():
    task = get("llama-graph-break").build("torch", small("llama-graph-break"), "infer", "cpu",
                                          "float32", 0)
    breaks = recompiles.explain_graph_breaks(task.model, *task.inputs)
    assert len(breaks) == 1
    assert "graph_break.py" in breaks[0]["where"]
    source = open(breaks[0]["where"].rsplit(":", 1)[0]).read().splitlines()
    assert "isfinite" in source[int(breaks[0]["where"].rsplit(":", 1)[1]) - 1]


def test_dynamo_summary_reads_the_break_from_the_counters():
    from torch._dynamo.utils import counters

    task = get("llama-graph-break").build("torch", small("llama-graph-break"), "infer", "cpu",
                                          "float32", 0)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(task.model, backend="eager")
    with torch.no_grad():
        assert_close_scaled(compiled(*task.inputs), task.model(*task.inputs), dtype="float32",
                            reduction_len=decoder_chain(small("llama-graph-break")),
                            what="logits through the graph break")
    summary = recompiles.dynamo_summary(counters)
    assert summary["graph_breaks"] == 1
    assert summary["graph_break_reasons"] == ["Data-dependent branching"]
    assert len(summary["resumed_at"]) == 1 and summary["resumed_at"][0].startswith("forward:")
    # the model is one graph; the frame resumed after the check only returns, so no second
    assert summary["graphs"] == 1


def test_compile_seconds_over_a_cycle():
    ticks = iter(range(100))
    seconds = recompiles.time_cycle(lambda i: i, 3, sync=lambda x: x,
                                    clock=lambda: float(next(ticks)))
    assert seconds == [1.0, 1.0, 1.0]
    summary = recompiles.compile_seconds([5.0, 0.5, 3.0], [1.0, 1.0, 1.0])
    assert summary == {"compile_s_per_batch": [4.0, 0.0, 2.0], "compile_s_total": 6.0}
