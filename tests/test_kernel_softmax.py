"""Softmax kernel against its reference, on the CPU under the Triton interpreter."""

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

from lab.kernels import softmax as K

LONG_ROW = 5000  # longer than one block under the interpreter: the streamed two-pass path
assert LONG_ROW > K.MAX_ONE_BLOCK_COLS


@pytest.mark.parametrize("shape, dtype", cases(
    ((1823, 781), (torch.float32,)),
    ((37, 781), (torch.float16, torch.bfloat16)),
    ((1, 1), DTYPES),
    ((3, 7, 33), DTYPES),
    ((2, LONG_ROW), DTYPES),
))
def test_forward_backward(shape, dtype):
    gen = fresh_generator()
    check_against_reference(K.softmax, K.reference, [randn(shape, dtype, gen)], dtype, gen,
                            grad_args=(0,), names=("x",))


@pytest.mark.parametrize("n_cols", [781, LONG_ROW])
@pytest.mark.parametrize("scale", [1e4, 1e-6], ids=["large", "small"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_extreme_values(dtype, scale, n_cols):
    # large: exp would overflow without subtracting the row max; small: all but uniform rows
    gen = fresh_generator()
    x = randn((3, n_cols), dtype, gen, scale=scale)
    check_against_reference(K.softmax, K.reference, [x], dtype, gen, grad_args=(0,))


def test_empty():
    gen = fresh_generator()
    out = check_against_reference(K.softmax, K.reference, [torch.empty(0, 781, device=DEVICE)],
                                  torch.float32, gen, grad_args=(0,))
    assert out.shape == (0, 781)


def test_inside_torch_compile():
    gen = fresh_generator()
    check_compiled_matches_eager(lambda x: K.softmax(x * 2.0) + 1.0,
                                 [randn((5, 33), torch.float32, gen)], grad_args=(0,))


def test_rejects_bad_input():
    with pytest.raises(TypeError, match="x has dtype int64"):
        K.softmax(torch.ones(4, 4, dtype=torch.int64, device=DEVICE))
    with pytest.raises(ValueError, match="x must be contiguous"):
        K.softmax(torch.randn(8, 4, device=DEVICE).t())
    with pytest.raises(ValueError, match="x must have at least 1"):
        K.softmax(torch.tensor(1.0, device=DEVICE))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        K.softmax([1.0, 2.0])


def test_cost_model():
    assert K.bytes_moved((4, 8), torch.bfloat16) == 2 * 4 * 8 * 2
    assert K.flops((4, 8), backward=True) == 4 * 4 * 8
