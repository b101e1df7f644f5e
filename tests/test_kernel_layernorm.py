"""LayerNorm kernel (forward; input, weight and bias gradients) against its reference, on the
CPU under the Triton interpreter."""

import pytest
import torch
from kernel_helpers import (
    DEVICE,
    DTYPES,
    assert_close,
    cases,
    check_against_reference,
    check_compiled_matches_eager,
    dtype_id,
    fresh_generator,
    randn,
)

from lab.kernels import layernorm as K

NAMES = ("x", "weight", "bias", "eps")


def _args(shape, dtype, gen, scale=1.0, bias=True):
    n = shape[-1]
    return [randn(shape, dtype, gen, scale=scale), randn((n,), dtype, gen),
            randn((n,), dtype, gen) if bias else None, 1e-5]


@pytest.mark.parametrize("shape, dtype", cases(
    ((1823, 781), (torch.float32,)),
    ((37, 781), (torch.float16, torch.bfloat16)),
    ((1, 1), DTYPES),
    ((1, 5), DTYPES),
    ((3, 7, 129), DTYPES),
    ((5, 3000), DTYPES),  # a long row: 4096-wide block, one row per program
    # longer than the interpreter's 4096-column register limit: streamed in 1024-wide blocks
    ((3, 5000), DTYPES),
))
def test_forward_backward(shape, dtype):
    gen = fresh_generator()
    check_against_reference(K.layernorm, K.reference, _args(shape, dtype, gen), dtype, gen,
                            grad_args=(0, 1, 2), names=NAMES)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_without_bias(dtype):
    gen = fresh_generator()
    check_against_reference(K.layernorm, K.reference, _args((67, 45), dtype, gen, bias=False),
                            dtype, gen, grad_args=(0, 1), names=NAMES)


@pytest.mark.parametrize("scale", [1e4, 1e-6], ids=["large", "small"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_extreme_values(dtype, scale):
    # large: the variance is formed from centred values, not E[x^2] - E[x]^2, which would
    # cancel catastrophically; small: the variance is far below eps
    gen = fresh_generator()
    check_against_reference(K.layernorm, K.reference, _args((9, 781), dtype, gen, scale=scale),
                            dtype, gen, grad_args=(0, 1, 2), names=NAMES)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_streamed_rows_without_bias_and_with_large_values(dtype):
    # the streamed forward's variance is formed from centred values too
    gen = fresh_generator()
    assert 4500 > K.MAX_REGISTER_COLS_FWD and 4500 > K.MAX_REGISTER_COLS_BWD
    check_against_reference(K.layernorm, K.reference,
                            _args((4, 4500), dtype, gen, scale=1e4, bias=False), dtype, gen,
                            grad_args=(0, 1), names=NAMES)


@pytest.mark.parametrize("n_rows", [70, 113])
def test_streamed_backward_with_uneven_and_empty_row_blocks(n_rows):
    # 4500 columns: 16 x 1024 column tiles under the interpreter, 5 column blocks, 4 programs
    # each; 70 rows are 5 row tiles, so one program per column block gets none (its partial
    # rows must be zeros, not the poison), 113 rows end in a partial tile
    gen = fresh_generator()
    assert K._stream_tile(4500) == (16, 1024)
    check_against_reference(K.layernorm, K.reference, _args((n_rows, 4500), torch.float32, gen),
                            torch.float32, gen, grad_args=(0, 1, 2), names=NAMES)


@pytest.mark.parametrize("n_rows", [70, 113])
def test_backward_programs_with_uneven_and_empty_row_blocks(n_rows):
    # 781 columns stack 16 rows a tile under the interpreter, which runs 4 programs: 70 rows
    # are 5 tiles, so blocks of 2, 2, 1 and an empty one (its partial row must be zeros, not
    # the poison); 113 rows end in a partial tile inside a full block
    gen = fresh_generator()
    meta = K._bwd_launch_meta(781)
    assert meta["BLOCK_ROWS"] == 16
    check_against_reference(K.layernorm, K.reference, _args((n_rows, 781), torch.float32, gen),
                            torch.float32, gen, grad_args=(0, 1, 2), names=NAMES)


@pytest.mark.parametrize("n_parts, n_cols", [(1, 1), (33, 300), (132, 129)])
def test_sum_partial_rows(n_parts, n_cols):
    # the second kernel of the backward: fp32 partial rows -> their column sums, rounded once
    from lab.kernels._common import poisoned_outputs, sum_partial_rows

    gen = fresh_generator()
    partials = randn((n_parts, n_cols), torch.float32, gen)
    with poisoned_outputs():
        for dtype in DTYPES:
            out = sum_partial_rows(partials, dtype)
            assert_close(out, partials.double().sum(0), dtype, f"column sums to {dtype}")


def test_empty():
    gen = fresh_generator()
    out = check_against_reference(K.layernorm, K.reference, _args((0, 64), torch.float32, gen),
                                  torch.float32, gen, grad_args=(0, 1, 2), names=NAMES)
    assert out.shape == (0, 64)


def test_inside_torch_compile():
    gen = fresh_generator()
    x, w, b, eps = _args((5, 33), torch.float32, gen)
    check_compiled_matches_eager(lambda x, w, b: K.layernorm(x + 1.0, w, b, eps) * 2.0,
                                 [x, w, b], grad_args=(0, 1, 2))


def test_rejects_bad_input():
    x, w = torch.randn(4, 8, device=DEVICE), torch.randn(8, device=DEVICE)
    with pytest.raises(ValueError, match="weight has 7 elements"):
        K.layernorm(x, torch.randn(7, device=DEVICE), None)
    with pytest.raises(ValueError, match="bias has 9 elements"):
        K.layernorm(x, w, torch.randn(9, device=DEVICE))
    with pytest.raises(TypeError, match="weight has dtype"):
        K.layernorm(x, w.half(), None)
    with pytest.raises(ValueError, match="x must be contiguous"):
        K.layernorm(torch.randn(8, 4, device=DEVICE).t(), torch.randn(4, device=DEVICE), None)
    with pytest.raises(ValueError, match="weight must have 1 dimensions"):
        K.layernorm(x, torch.randn(1, 8, device=DEVICE), None)


def test_cost_model():
    n_rows, n_cols = 4, 8
    assert K.bytes_moved((n_rows, n_cols), torch.float32) == \
        2 * n_rows * n_cols * 4 + 2 * n_cols * 4 + 8 * n_rows
