"""Matmul kernel with its fused epilogue (bias, activation), forward and backward, against
its reference, on the CPU under the Triton interpreter."""

import pytest
import torch
from kernel_helpers import (
    DTYPES,
    cases,
    check_against_reference,
    check_compiled_matches_eager,
    dtype_id,
    fresh_generator,
    randn,
)

from lab.kernels import matmul as K

NAMES = ("a", "b", "bias", "activation")


def _args(mkn, dtype, gen, bias=True, activation=None, scale=1.0):
    m, k, n = mkn
    return [randn((m, k), dtype, gen, scale=scale), randn((k, n), dtype, gen),
            randn((n,), dtype, gen) if bias else None, activation]


@pytest.mark.parametrize("activation", K.ACTIVATIONS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_epilogues(dtype, activation):
    # With an activation the backward stores dz = dc * act'(z) in the dtype before the two
    # gradient matmuls, as eager PyTorch does; fp16/bf16 gradients are held to eager's error.
    gen = fresh_generator()
    check_against_reference(K.matmul, K.reference, _args((67, 45, 33), dtype, gen,
                                                         activation=activation),
                            dtype, gen, grad_args=(0, 1, 2), names=NAMES,
                            grads_like_eager=activation is not None)


@pytest.mark.parametrize("mkn, dtype", cases(
    ((1, 1, 1), DTYPES),
    ((1, 64, 17), DTYPES),  # a single row
    ((130, 100, 70), (torch.float32,)),  # several tiles and K steps, all with ragged edges
))
def test_shapes_without_bias(mkn, dtype):
    gen = fresh_generator()
    check_against_reference(K.matmul, K.reference, _args(mkn, dtype, gen, bias=False), dtype,
                            gen, grad_args=(0, 1), names=NAMES)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_strided_operands(dtype):
    # b as the transposed view of an (n, k) weight and a as a column slice: read in place
    gen = fresh_generator()
    a = randn((67, 90), dtype, gen)[:, ::2]
    b = randn((33, 45), dtype, gen).t()
    assert not a.is_contiguous() and not b.is_contiguous()
    check_against_reference(K.matmul, K.reference, [a, b, randn((33,), dtype, gen), "relu"],
                            dtype, gen, grad_args=(0, 1, 2), names=NAMES)


@pytest.mark.parametrize("scale", [1e6, 1e-6], ids=["large", "small"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
def test_extreme_values(dtype, scale):
    # a scaled by s and b by 1 / s: operands far from 1, products near 1, so the output is
    # compared at its usual scale (fp16 is left out: 1e6 is beyond its range)
    gen = fresh_generator()
    a, b, bias, _ = _args((67, 45, 33), dtype, gen)
    args = [(a.float() * scale).to(dtype), (b.float() / scale).to(dtype), bias, "gelu"]
    check_against_reference(K.matmul, K.reference, args, dtype, gen, names=NAMES)


@pytest.mark.parametrize("mkn", [(0, 8, 5), (4, 0, 5), (4, 8, 0)], ids=str)
def test_empty(mkn):
    # K = 0 is not empty output: a @ b is zeros, and the epilogue still adds the bias
    gen = fresh_generator()
    check_against_reference(K.matmul, K.reference,
                            _args(mkn, torch.float32, gen, activation="gelu_tanh"),
                            torch.float32, gen, grad_args=(0, 1, 2), names=NAMES)


def test_inside_torch_compile():
    gen = fresh_generator()
    a, b, bias, _ = _args((37, 45, 33), torch.float32, gen)
    check_compiled_matches_eager(lambda a, b, c: K.matmul(a * 2.0, b, c, "gelu") + 1.0,
                                 [a, b, bias], grad_args=(0, 1, 2))


def test_rejects_bad_input():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with pytest.raises(ValueError, match="a's columns must equal b's rows"):
        K.matmul(a, torch.randn(7, 3))
    with pytest.raises(ValueError, match="bias has 4 elements"):
        K.matmul(a, b, torch.randn(4))
    with pytest.raises(TypeError, match="b has dtype"):
        K.matmul(a, b.half())
    with pytest.raises(ValueError, match="activation='tanh'"):
        K.matmul(a, b, None, "tanh")
    with pytest.raises(ValueError, match="a must have 2 dimensions"):
        K.matmul(torch.randn(2, 4, 8), b)


def test_cost_model():
    assert K.flops((4096, 4096, 4096)) == 2 * 4096**3
    assert K.bytes_moved((2, 3, 4), torch.bfloat16) == (2 * 4 + 4 * 3 + 2 * 3 + 3) * 2
