"""SwiGLU kernel (forward; gate and up gradients) against its reference, on the CPU under the
Triton interpreter."""

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

from lab.kernels import swiglu as K

NAMES = ("gate", "up")


@pytest.mark.parametrize("shape, dtype", cases(
    ((1823, 781), (torch.float32,)),
    ((37, 781), (torch.float16, torch.bfloat16)),
    ((1, 1), DTYPES),
    ((3, 7, 1500), DTYPES),  # more elements than one program's block under the interpreter
))
def test_forward_backward(shape, dtype):
    gen = fresh_generator()
    args = [randn(shape, dtype, gen), randn(shape, dtype, gen)]
    check_against_reference(K.swiglu, K.reference, args, dtype, gen, grad_args=(0, 1),
                            names=NAMES)


@pytest.mark.parametrize("scale", [1e3, 1e-6], ids=["large", "small"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_extreme_values(dtype, scale):
    # large: sigmoid(-1e3) must be 0, not an overflowing exp(1e3) (and silu(4e3) * up stays
    # inside fp16's range); small: silu(x) ~ x / 2
    gen = fresh_generator()
    args = [randn((9, 781), dtype, gen, scale=scale), randn((9, 781), dtype, gen)]
    check_against_reference(K.swiglu, K.reference, args, dtype, gen, grad_args=(0, 1),
                            names=NAMES)


def test_empty():
    gen = fresh_generator()
    empty = [torch.empty(0, 8, device=DEVICE), torch.empty(0, 8, device=DEVICE)]
    out = check_against_reference(K.swiglu, K.reference, empty,
                                  torch.float32, gen, grad_args=(0, 1), names=NAMES)
    assert out.shape == (0, 8)


def test_inside_torch_compile():
    gen = fresh_generator()
    args = [randn((5, 33), torch.float32, gen), randn((5, 33), torch.float32, gen)]
    check_compiled_matches_eager(lambda g, u: K.swiglu(g * 2.0, u) + 1.0, args, grad_args=(0, 1))


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="up has shape"):
        K.swiglu(torch.randn(4, 8, device=DEVICE), torch.randn(4, 9, device=DEVICE))
    with pytest.raises(TypeError, match="up has dtype"):
        K.swiglu(torch.randn(4, 8, device=DEVICE), torch.randn(4, 8, device=DEVICE).half())
    with pytest.raises(ValueError, match="gate must be contiguous"):
        K.swiglu(torch.randn(8, 4, device=DEVICE).t(), torch.randn(4, 8, device=DEVICE))
