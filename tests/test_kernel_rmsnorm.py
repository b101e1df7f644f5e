"""RMSNorm kernel (forward; input and weight gradients) against its reference, on the CPU under
the Triton interpreter."""

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

from lab.kernels import rmsnorm as K

NAMES = ("x", "weight", "eps")


def _args(shape, dtype, gen, scale=1.0):
    return [randn(shape, dtype, gen, scale=scale), randn((shape[-1],), dtype, gen), 1e-6]


@pytest.mark.parametrize("shape, dtype", cases(
    ((1823, 781), (torch.float32,)),
    ((37, 781), (torch.float16, torch.bfloat16)),
    ((1, 1), DTYPES),
    ((3, 7, 129), DTYPES),
    ((5, 3000), DTYPES),
    ((3, 5000), DTYPES),  # streamed: longer than the interpreter's 4096-column register limit
))
def test_forward_backward(shape, dtype):
    gen = fresh_generator()
    check_against_reference(K.rmsnorm, K.reference, _args(shape, dtype, gen), dtype, gen,
                            grad_args=(0, 1), names=NAMES)


@pytest.mark.parametrize("scale", [1e4, 1e-6], ids=["large", "small"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_extreme_values(dtype, scale):
    gen = fresh_generator()
    check_against_reference(K.rmsnorm, K.reference, _args((9, 781), dtype, gen, scale=scale),
                            dtype, gen, grad_args=(0, 1), names=NAMES)


@pytest.mark.parametrize("n_rows", [70, 113])
def test_streamed_backward_with_uneven_and_empty_row_blocks(n_rows):
    # 4500 columns: streamed, 16 x 1024 column tiles under the interpreter over 4 programs per
    # column block; 70 rows leave one program without a tile, 113 end in a partial tile
    gen = fresh_generator()
    check_against_reference(K.rmsnorm, K.reference, _args((n_rows, 4500), torch.float32, gen),
                            torch.float32, gen, grad_args=(0, 1), names=NAMES)


def test_backward_with_an_empty_row_block():
    # 70 rows of 781 are 5 tiles over 4 programs under the interpreter: the last program's
    # block is empty, and RMSNorm writes no bias partials at all
    gen = fresh_generator()
    check_against_reference(K.rmsnorm, K.reference, _args((70, 781), torch.float32, gen),
                            torch.float32, gen, grad_args=(0, 1), names=NAMES)


def test_empty():
    gen = fresh_generator()
    out = check_against_reference(K.rmsnorm, K.reference, _args((0, 64), torch.float32, gen),
                                  torch.float32, gen, grad_args=(0, 1), names=NAMES)
    assert out.shape == (0, 64)


def test_inside_torch_compile():
    gen = fresh_generator()
    x, w, eps = _args((5, 33), torch.float32, gen)
    check_compiled_matches_eager(lambda x, w: K.rmsnorm(x + 1.0, w, eps) * 2.0, [x, w],
                                 grad_args=(0, 1))


def test_rejects_bad_input():
    x = torch.randn(4, 8, device=DEVICE)
    with pytest.raises(ValueError, match="weight has 7 elements"):
        K.rmsnorm(x, torch.randn(7, device=DEVICE))
    with pytest.raises(TypeError, match="x has dtype int32"):
        K.rmsnorm(x.int(), torch.randn(8, device=DEVICE))
    with pytest.raises(ValueError, match="x must be contiguous"):
        K.rmsnorm(torch.randn(8, 4, device=DEVICE).t(), torch.randn(8, device=DEVICE))
