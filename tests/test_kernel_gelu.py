"""Fused bias + GELU kernel (forward; input and bias gradients) against its reference, on
the CPU under the Triton interpreter."""

import pytest
import torch
from kernel_helpers import (
    DEVICE,
    DTYPES,
    cases,
    check_against_reference,
    check_compiled_matches_eager,
    dtype_id,
    fresh_generator,
    randn,
)

from lab.kernels import gelu as K

NAMES = ("x", "bias", "approximate")


def _args(shape, dtype, gen, approximate="tanh", scale=1.0):
    return [randn(shape, dtype, gen, scale=scale), randn((shape[-1],), dtype, gen), approximate]


@pytest.mark.parametrize("approximate", K.APPROXIMATIONS)
@pytest.mark.parametrize("shape, dtype", cases(
    ((1823, 781), (torch.float32,)),
    ((37, 781), (torch.float16, torch.bfloat16)),
    ((1, 1), DTYPES),
    ((3, 7, 1500), DTYPES),  # wider than one 1024-column block
))
def test_forward_backward(shape, dtype, approximate):
    gen = fresh_generator()
    check_against_reference(K.bias_gelu, K.reference, _args(shape, dtype, gen, approximate),
                            dtype, gen, grad_args=(0, 1), names=NAMES)


@pytest.mark.parametrize("approximate", K.APPROXIMATIONS)
@pytest.mark.parametrize("scale", [1e4, 1e-6], ids=["large", "small"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_extreme_values(dtype, scale, approximate):
    # large: the tanh form's sigmoid must not overflow (gelu(-1e4) = -0, gelu(1e4) = 1e4)
    gen = fresh_generator()
    x, bias, _ = _args((9, 781), dtype, gen)
    x = randn((9, 781), dtype, gen, scale=scale)
    check_against_reference(K.bias_gelu, K.reference, [x, bias * scale, approximate], dtype, gen,
                            grad_args=(0, 1), names=NAMES)


def test_empty():
    gen = fresh_generator()
    out = check_against_reference(K.bias_gelu, K.reference, _args((0, 64), torch.float32, gen),
                                  torch.float32, gen, grad_args=(0, 1), names=NAMES)
    assert out.shape == (0, 64)


def test_inside_torch_compile():
    gen = fresh_generator()
    x, bias, approximate = _args((5, 33), torch.float32, gen)
    check_compiled_matches_eager(lambda x, b: K.bias_gelu(x * 2.0, b, approximate) + 1.0,
                                 [x, bias], grad_args=(0, 1))


def test_rejects_bad_input():
    x = torch.randn(4, 8, device=DEVICE)
    with pytest.raises(ValueError, match="bias has 7 elements"):
        K.bias_gelu(x, torch.randn(7, device=DEVICE))
    with pytest.raises(ValueError, match="approximate='erf'"):
        K.bias_gelu(x, torch.randn(8, device=DEVICE), "erf")
    with pytest.raises(TypeError, match="bias has dtype"):
        K.bias_gelu(x, torch.randn(8, dtype=torch.float64, device=DEVICE))
    with pytest.raises(ValueError, match="x must be contiguous"):
        K.bias_gelu(torch.randn(8, 4, device=DEVICE).t(), torch.randn(8, device=DEVICE))
