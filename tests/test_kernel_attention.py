"""Flash attention, forward and backward kernels, against its reference,
F.scaled_dot_product_attention run in float64, on DEVICE (the CPU under the Triton interpreter,
or CUDA; see kernel_helpers)."""

import pytest
import torch
from kernel_helpers import (
    DEVICE,
    DTYPES,
    check_against_reference,
    check_compiled_matches_eager,
    dtype_id,
    fresh_generator,
    randn,
)

from lab.kernels import attention as K

NAMES = ("q", "k", "v", "causal")
# The backward's delta = rowsum(do * o) uses the stored o, rounded to the dtype, as
# FlashAttention-2 does; a 16-bit gradient then carries that rounding through a cancellation
# (ds = p * (dp - delta)) and can be off by more than one rounding of its own. 16-bit
# gradients are held to twice eager PyTorch's error plus one rounding (kernel_helpers).
LIKE_EAGER = {torch.float32: False, torch.float16: True, torch.bfloat16: True}
SEQ = 37  # not a multiple of any block under the interpreter (fwd 32/16, bwd 32/16 and 16/32)
# On CUDA the blocks are 16-128 wide: longer, ragged sequences cross them there.
GPU_SEQS = [(300, 257), (257, 300)] if DEVICE.type == "cuda" else []


def _qkv(shape_q, seq_k, dtype, gen, scale=1.0):
    batch, heads, _seq_q, head_dim = shape_q
    shape_k = (batch, heads, seq_k, head_dim)
    return [randn(shape_q, dtype, gen, scale=scale), randn(shape_k, dtype, gen),
            randn(shape_k, dtype, gen)]


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_forward_backward(dtype, head_dim, causal):
    gen = fresh_generator()
    args = _qkv((2, 3, SEQ, head_dim), SEQ, dtype, gen) + [causal]
    check_against_reference(K.attention, K.reference, args, dtype, gen, grad_args=(0, 1, 2),
                            names=NAMES, grads_like_eager=LIKE_EAGER[dtype])


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("seq_q, seq_k", [(1, 1), (1, SEQ), (20, 45), (45, 20), *GPU_SEQS],
                         ids=str)
def test_sequence_lengths(seq_q, seq_k, causal):
    # seq_q != seq_k: causal is top-left aligned (query i sees keys 0..i), as in SDPA
    gen = fresh_generator()
    args = _qkv((1, 2, seq_q, 64), seq_k, torch.float32, gen) + [causal]
    check_against_reference(K.attention, K.reference, args, torch.float32, gen,
                            grad_args=(0, 1, 2), names=NAMES)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("seq_q, seq_k", [(50, 19), (19, 50), (33, 33)], ids=str)
def test_backward_ragged(seq_q, seq_k, head_dim, causal):
    # The flash backward against float64 autograd: dq's query blocks and dk/dv's key blocks
    # end mid-block, and with causal the diagonal crosses blocks of both kernels.
    for dtype in (torch.float32, torch.bfloat16):
        gen = fresh_generator()
        args = _qkv((1, 2, seq_q, head_dim), seq_k, dtype, gen) + [causal]
        check_against_reference(K.attention, K.reference, args, dtype, gen,
                                grad_args=(0, 1, 2), names=NAMES,
                                grads_like_eager=LIKE_EAGER[dtype])


def test_float32_precision_follows_torch():
    # IEEE products under torch's default, TF32 only when torch allows it for matmuls
    before = torch.get_float32_matmul_precision()
    try:
        assert K.dot_precision(torch.float32) == "ieee"
        torch.set_float32_matmul_precision("high")
        assert K.dot_precision(torch.float32) == "tf32"
        assert K.dot_precision(torch.bfloat16) == "16bit"
    finally:
        torch.set_float32_matmul_precision(before)


def test_ieee_float32_is_never_autotuned():
    # Each IEEE fp32 config is a large FMA kernel (13-42 s to compile for Hopper before the
    # fix): the autotuner must get exactly one, so a first call compiles one kernel.
    for head_dim in (64, 128):
        assert len(K._FWD_CONFIGS[("ieee", head_dim)]) == 1


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_strided_inputs(dtype):
    # (batch, seq, heads, head_dim) transposed to (batch, heads, seq, head_dim): no copy
    gen = fresh_generator()
    q, k, v = (randn((2, SEQ, 3, 64), dtype, gen).transpose(1, 2) for _ in range(3))
    assert not q.is_contiguous()
    check_against_reference(K.attention, K.reference, [q, k, v, True], dtype, gen,
                            grad_args=(0, 1, 2), names=NAMES, grads_like_eager=LIKE_EAGER[dtype])


@pytest.mark.parametrize("scale", [30.0, 1e-6], ids=["large", "small"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_extreme_values(dtype, scale):
    # large: scores up to ~1e4, softmax is one-hot and needs the running max; small: uniform.
    # Forward only: the gradient's error grows with the scale of q (cancellation in
    # ds = p * (dp - delta)) in any implementation, the float64 reference's rounding included.
    gen = fresh_generator()
    args = _qkv((1, 2, SEQ, 64), SEQ, dtype, gen, scale=scale) + [True]
    check_against_reference(K.attention, K.reference, args, dtype, gen, names=NAMES)


def test_empty():
    gen = fresh_generator()
    args = _qkv((0, 2, SEQ, 64), SEQ, torch.float32, gen) + [True]
    out = check_against_reference(K.attention, K.reference, args, torch.float32, gen,
                                  grad_args=(0, 1, 2), names=NAMES)
    assert out.shape == (0, 2, SEQ, 64)


def test_inside_torch_compile():
    gen = fresh_generator()
    q, k, v = _qkv((1, 2, 17, 64), 17, torch.float32, gen)
    check_compiled_matches_eager(lambda q, k, v: K.attention(q * 2.0, k, v, True) + 1.0,
                                 [q, k, v], grad_args=(0, 1, 2))


def test_rejects_bad_input():
    def randn(*shape):
        return torch.randn(*shape, device=DEVICE)

    q = randn(1, 2, 8, 64)
    with pytest.raises(ValueError, match="head_dim 48"):
        K.attention(*(randn(1, 2, 8, 48),) * 3)
    with pytest.raises(ValueError, match="k has shape .* v has"):
        K.attention(q, q, randn(1, 2, 9, 64))
    with pytest.raises(ValueError, match="must share batch, heads and head_dim"):
        K.attention(q, randn(1, 3, 8, 64), randn(1, 3, 8, 64))
    with pytest.raises(TypeError, match="v has dtype"):
        K.attention(q, q, q.half())
    with pytest.raises(ValueError, match="q must have 4 dimensions"):
        K.attention(q[0], q, q)
    with pytest.raises(ValueError, match="stride 1 in its last"):
        K.attention(randn(1, 2, 64, 8).transpose(-1, -2), q, q)


def test_cost_model():
    assert K.flops((1, 1, 4, 4, 64)) == 4 * 16 * 64
    assert K.flops((1, 1, 4, 4, 64), causal=True) == 4 * 10 * 64
