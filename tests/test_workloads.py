import pytest
import torch
from numerics import assert_close_scaled

from lab import workloads
from lab.workloads import mlp, transformer


def test_simple_net_is_the_seeds_784_128_10_mlp():
    task = workloads.get("mlp").build("torch", {"batch": 32}, "infer", "cpu", "float32", 0)
    names = [(n, tuple(p.shape)) for n, p in task.model.named_parameters()]
    assert names == [("fc1.weight", (128, 784)), ("fc1.bias", (128,)),
                     ("fc2.weight", (10, 128)), ("fc2.bias", (10,))]
    assert type(task.model).__name__ == "SimpleNet"
    assert task.model(*task.inputs).shape == (32, 10)
    x = task.inputs[0]
    expected = task.model.fc2(torch.relu(task.model.fc1(x)))
    assert_close_scaled(task.model(x), expected, dtype="float32", reduction_len=784 + 128,
                        what="SimpleNet vs fc2(relu(fc1(x)))")


def test_mlp_flops_count_matmuls():
    assert mlp.flops({"batch": 32}, "infer") == 2 * 32 * (784 * 128 + 128 * 10)
    assert mlp.flops({"batch": 32}, "train") == 3 * mlp.flops({"batch": 32}, "infer")


def test_transformer_block_matches_a_plain_pre_ln_block():
    shape = {"batch": 2, "seq": 5, "d_model": 8, "heads": 2}
    task = workloads.get("transformer").build("torch", shape, "infer", "cpu", "float32", 0)
    m, (x,) = task.model, task.inputs
    out = m(x)
    # the same block written out with nn modules and explicit causal attention
    b, t, c = x.shape
    q, k, v = m.qkv(m.ln1(x)).split(c, dim=-1)
    q, k, v = (z.view(b, t, 2, c // 2).transpose(1, 2) for z in (q, k, v))
    scores = (q @ k.transpose(-1, -2)) / (c // 2) ** 0.5
    scores = scores.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, c)
    h = x + m.proj(y)
    expected = h + m.down(torch.nn.functional.gelu(m.up(m.ln2(h)), approximate="tanh"))
    # reduction chain (tests/numerics.py): norms, qkv, proj, up over c, scores over c / heads,
    # softmax and weighted sum over t, down over 4c
    assert_close_scaled(out, expected, dtype="float32", reduction_len=9 * c + c // 2 + 2 * t,
                        what="block vs the written-out block")


def test_transformer_flops_grow_with_sequence_squared_in_attention():
    small = {"batch": 1, "seq": 64, "d_model": 64, "heads": 4}
    big = dict(small, seq=128)
    attention = lambda s: 4 * s["batch"] * s["seq"] ** 2 * s["d_model"]  # noqa: E731
    linear = lambda s: transformer.flops(s, "infer") - attention(s)  # noqa: E731
    assert linear(big) == 2 * linear(small)


def test_shape_overrides_are_checked():
    w = workloads.get("transformer")
    assert w.shape_for("cpu", {"seq": 7})["seq"] == 7
    with pytest.raises(ValueError, match="no shape parameter 'depth'"):
        w.shape_for("cpu", {"depth": 2})


def test_bad_head_count_is_a_clear_error():
    with pytest.raises(ValueError, match="not divisible"):
        workloads.get("transformer").build("torch", {"batch": 1, "seq": 4, "d_model": 10,
                                                     "heads": 3}, "infer", "cpu", "float32", 0)
