"""Attention forward, flash-style: softmax(q k^T * scale) v without the seq_q x seq_k matrix.

One program takes BLOCK_M queries of one (batch, head) and streams the keys and values in
blocks of BLOCK_N, keeping a running row max, row sum and output accumulator (online
softmax), so memory traffic is q, k, v read and o written, once per query block. Causal
attention stops at the diagonal block, and only the blocks that straddle the diagonal or the
end of the keys pay for masking.

The backward is plain PyTorch (it materialises the attention matrix, in fp32); it is there so
the op can be trained through, not for speed.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._common import INTERPRET, check_same, check_tensor, new_output

HEAD_DIMS = (16, 32, 64, 128)

# ------------------------------------------------------------------------------ reference


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
              scale: float | None = None) -> torch.Tensor:
    """F.scaled_dot_product_attention in q's dtype; causal is top-left aligned.

    q: (batch, heads, seq_q, head_dim); k, v: (batch, heads, seq_k, head_dim). Flops: 4 *
    batch * heads * seq_q * seq_k * head_dim (q k^T and p v), about half of that when causal.
    Memory floor, itemsize s: q, k and v read and o written once,
    batch * heads * (2 * seq_q + 2 * seq_k) * head_dim * s.
    """
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                                            scale=scale)


# --------------------------------------------------------------------------------- kernels

_LOG2_E = tl.constexpr(1.4426950408889634)


def _configs() -> list:
    """Tiles for Hopper at head_dim 64/128 (128 queries per program, 64-128 keys per step).
    Under the interpreter one small tile with BLOCK_N < BLOCK_M, so the tests cross both the
    diagonal and the end of the keys in the middle of a block."""
    def cfg(bm, bn, warps, stages):
        return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)
    if INTERPRET:
        return [cfg(32, 16, 4, 1)]
    return [cfg(128, 64, 4, 3), cfg(128, 64, 8, 3), cfg(128, 128, 8, 3), cfg(64, 64, 4, 4)]


@triton.jit
def _attend_blocks(acc, row_sum, row_max, q, k_base, v_base, stride_ks, stride_vs, rows,
                   seq_k, qk_scale, lo, hi, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
                   MASKED: tl.constexpr, CAUSAL: tl.constexpr, DOT_FP32: tl.constexpr,
                   IEEE_FP32: tl.constexpr):
    """Fold keys [lo, hi) into the running (acc, row_sum, row_max). Scores are kept in log2
    units (qk_scale includes log2(e)) so the exponentials are exp2."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        k_ptrs = k_base + cols[None, :] * stride_ks + offs_d[:, None]  # k^T tile: (D, BLOCK_N)
        v_ptrs = v_base + cols[:, None] * stride_vs + offs_d[None, :]  # v tile: (BLOCK_N, D)
        if MASKED:
            k_t = tl.load(k_ptrs, mask=cols[None, :] < seq_k, other=0.0)
            v = tl.load(v_ptrs, mask=cols[:, None] < seq_k, other=0.0)
        else:
            k_t = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        if DOT_FP32:
            k_t = k_t.to(tl.float32)
            v = v.to(tl.float32)
        if IEEE_FP32:
            qk = tl.dot(q, k_t, input_precision="ieee") * qk_scale
        else:
            qk = tl.dot(q, k_t) * qk_scale
        if MASKED:
            visible = cols[None, :] < seq_k
            if CAUSAL:
                visible = visible & (rows[:, None] >= cols[None, :])
            # -inf is safe: every row has a finite max by now (key 0 is always visible and
            # is folded in first), so exp2(-inf - max) = 0 and never -inf - -inf.
            qk = tl.where(visible, qk, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(qk, axis=1))
        rescale = tl.exp2(row_max - new_max)
        p = tl.exp2(qk - new_max[:, None])
        row_sum = row_sum * rescale + tl.sum(p, axis=1)
        acc = acc * rescale[:, None]
        if IEEE_FP32:
            acc = tl.dot(p.to(v.dtype), v, acc, input_precision="ieee")
        else:
            acc = tl.dot(p.to(v.dtype), v, acc)
        row_max = new_max
    return acc, row_sum, row_max


@triton.autotune(configs=_configs(), key=["seq_q", "seq_k", "HEAD_DIM", "CAUSAL"])
@triton.jit
def _attention_fwd_kernel(q_ptr, k_ptr, v_ptr, o_ptr, qk_scale, n_heads, seq_q, seq_k,
                          stride_qb, stride_qh, stride_qs, stride_kb, stride_kh, stride_ks,
                          stride_vb, stride_vh, stride_vs, stride_ob, stride_oh, stride_os,
                          HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, DOT_FP32: tl.constexpr,
                          IEEE_FP32: tl.constexpr, BLOCK_M: tl.constexpr,
                          BLOCK_N: tl.constexpr):
    start_m = tl.program_id(0)
    batch_head = tl.program_id(1)
    batch = (batch_head // n_heads).to(tl.int64)
    head = (batch_head % n_heads).to(tl.int64)
    q_base = q_ptr + batch * stride_qb + head * stride_qh
    k_base = k_ptr + batch * stride_kb + head * stride_kh
    v_base = v_ptr + batch * stride_vb + head * stride_vh
    o_base = o_ptr + batch * stride_ob + head * stride_oh

    rows = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = rows < seq_q
    q = tl.load(q_base + rows[:, None] * stride_qs + offs_d[None, :], mask=row_ok[:, None],
                other=0.0)
    if DOT_FP32:
        q = q.to(tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    row_sum = tl.zeros([BLOCK_M], tl.float32)
    row_max = tl.full([BLOCK_M], float("-inf"), tl.float32)

    # Key blocks every row of this tile sees in full need no mask: below the diagonal when
    # causal (keys < the tile's first query), and before the last partial block of keys.
    if CAUSAL:
        hi = tl.minimum(seq_k, (start_m + 1) * BLOCK_M)
        full_end = (tl.minimum(start_m * BLOCK_M, seq_k) // BLOCK_N) * BLOCK_N
    else:
        hi = seq_k
        full_end = (seq_k // BLOCK_N) * BLOCK_N
    acc, row_sum, row_max = _attend_blocks(
        acc, row_sum, row_max, q, k_base, v_base, stride_ks, stride_vs, rows, seq_k, qk_scale,
        0, full_end, HEAD_DIM, BLOCK_N, False, CAUSAL, DOT_FP32, IEEE_FP32)
    acc, row_sum, row_max = _attend_blocks(
        acc, row_sum, row_max, q, k_base, v_base, stride_ks, stride_vs, rows, seq_k, qk_scale,
        full_end, hi, HEAD_DIM, BLOCK_N, True, CAUSAL, DOT_FP32, IEEE_FP32)

    o = acc / row_sum[:, None]
    tl.store(o_base + rows[:, None] * stride_os + offs_d[None, :],
             o.to(o_ptr.dtype.element_ty), mask=row_ok[:, None])


# ------------------------------------------------------------------------------- launchers


def _check_inputs(q, k, v) -> None:
    # Any batch/head/sequence strides (a transposed (b, s, h, d) view works), but each row of
    # head_dim must be contiguous so a tile loads as whole rows.
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t, ndim=4, contiguous=False)
        check_same("q", q, name, t)
        if t.shape[-1] > 1 and t.stride(-1) != 1:
            raise ValueError(f"{name} must have stride 1 in its last (head_dim) dimension, got "
                             f"strides {t.stride()}")
    batch, heads, seq_q, head_dim = q.shape
    if k.shape != v.shape:
        raise ValueError(f"k has shape {tuple(k.shape)}, v has {tuple(v.shape)}; they must match")
    if (k.shape[0], k.shape[1], k.shape[3]) != (batch, heads, head_dim):
        raise ValueError(f"k {tuple(k.shape)} must share batch, heads and head_dim with q "
                         f"{tuple(q.shape)}")
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"q has head_dim {head_dim}; supported: {HEAD_DIMS}")
    if k.shape[2] == 0 and q.numel() > 0:
        raise ValueError("k and v have no keys (seq_k = 0)")


def attention_fwd(q, k, v, causal: bool, scale: float, o) -> torch.Tensor:
    """Write attention(q, k, v) into o (q's shape and dtype; last dim contiguous)."""
    _check_inputs(q, k, v)
    check_tensor("o", o, ndim=4, contiguous=False)
    check_same("q", q, "o", o)
    if o.shape != q.shape or o.stride(-1) != 1:
        raise ValueError(f"o must have q's shape {tuple(q.shape)} and stride 1 in its last dim")
    if q.numel() == 0:
        return o
    batch, heads, seq_q, head_dim = q.shape
    seq_k = k.shape[2]

    def grid(meta):
        return (triton.cdiv(seq_q, meta["BLOCK_M"]), batch * heads)

    _attention_fwd_kernel[grid](
        q, k, v, o, scale * 1.4426950408889634, heads, seq_q, seq_k, *q.stride()[:3],
        *k.stride()[:3], *v.stride()[:3], *o.stride()[:3], HEAD_DIM=head_dim, CAUSAL=causal,
        DOT_FP32=INTERPRET and q.dtype == torch.bfloat16, IEEE_FP32=q.dtype == torch.float32)
    return o


# ----------------------------------------------------- torch.library ops and the autograd rule
# `custom_op` + `register_fake` lets torch.compile trace the op; `register_autograd` is the
# custom-op form of an autograd.Function, with a backward in PyTorch (see the module docstring).


@torch.library.custom_op("lab::attention", mutates_args=())
def _attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                  scale: float) -> torch.Tensor:
    return attention_fwd(q, k, v, causal, scale,
                         new_output(q.shape, dtype=q.dtype, device=q.device))


@_attention_op.register_fake
def _(q, k, v, causal, scale):
    _check_inputs(q, k, v)
    return q.new_empty(q.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, causal, scale = inputs
    ctx.causal = causal
    ctx.scale = scale
    ctx.save_for_backward(q, k, v)


def _backward(ctx, do):
    # With p = softmax(s), s = q k^T * scale: dv = p^T do; dp = do v^T;
    # ds = p * (dp - rowsum(dp * p)); dq = ds k * scale; dk = ds^T q * scale.
    q, k, v = ctx.saved_tensors
    qf, kf, vf, dof = q.float(), k.float(), v.float(), do.float()
    s = (qf @ kf.transpose(-2, -1)) * ctx.scale
    if ctx.causal:
        visible = torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).tril()
        s = s.masked_fill(~visible, float("-inf"))
    p = torch.softmax(s, dim=-1)
    dv = p.transpose(-2, -1) @ dof
    dp = dof @ vf.transpose(-2, -1)
    ds = p * (dp - (dp * p).sum(dim=-1, keepdim=True))
    dq = (ds @ kf) * ctx.scale
    dk = (ds.transpose(-2, -1) @ qf) * ctx.scale
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None


_attention_op.register_autograd(_backward, setup_context=_setup_context)


# ------------------------------------------------------------------------------- public op


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
              scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scale (+ causal mask)) v, as F.scaled_dot_product_attention.

    q: (batch, heads, seq_q, head_dim); k, v: (batch, heads, seq_k, head_dim); one dtype of
    fp32/fp16/bf16; head_dim in (16, 32, 64, 128); the last dim contiguous, other strides free.
    causal masks key j for query i when j > i (top-left aligned, like SDPA's is_causal).
    scale defaults to 1 / sqrt(head_dim). Returns a contiguous tensor of q's shape and dtype.
    Differentiable (the backward is PyTorch, O(seq_q * seq_k) memory).
    """
    _check_inputs(q, k, v)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    return _attention_op(q, k, v, bool(causal), float(scale))


def _visible_pairs(seq_q: int, seq_k: int, causal: bool) -> int:
    if not causal:
        return seq_q * seq_k
    # query i sees keys 0..i (capped at seq_k): sum over i of min(i + 1, seq_k)
    full = min(seq_q, seq_k)
    return full * (full + 1) // 2 + (seq_q - full) * seq_k


def flops(shape, *, causal: bool = False, backward: bool = False) -> int:
    """shape = (batch, heads, seq_q, seq_k, head_dim). Forward: 2 matmuls of 2 flops per
    multiply-add over the visible (query, key) pairs; backward: 2.5x that (5 matmuls, the
    FlashAttention convention)."""
    batch, heads, seq_q, seq_k, head_dim = shape
    forward = 4 * batch * heads * _visible_pairs(seq_q, seq_k, causal) * head_dim
    return forward * 5 // 2 if backward else forward


def bytes_moved(shape, dtype: torch.dtype, *, backward: bool = False) -> int:
    """Minimum bytes: forward reads q, k, v and writes o; backward reads q, k, v, o, do and
    writes dq, dk, dv."""
    batch, heads, seq_q, seq_k, head_dim = shape
    row = batch * heads * head_dim * dtype.itemsize
    if backward:
        return row * (4 * seq_q + 4 * seq_k)
    return row * (2 * seq_q + 2 * seq_k)
