"""Attention, flash-style, forward and backward: softmax(q k^T * scale) v without the
seq_q x seq_k matrix.

Forward (FlashAttention-2): one program takes BLOCK_M queries of one (batch, head) and streams
the keys and values in blocks of BLOCK_N, keeping a running row max, row sum and output
accumulator (online softmax), so memory traffic is q, k, v read and o written, once per query
block. It also writes each row's log-sum-exp (4 bytes a row), all the backward needs to
recompute the softmax. Causal attention stops at the diagonal block, and only the blocks that
straddle the diagonal or the end of the keys pay for masking.

Backward (FlashAttention-2): P is recomputed block by block from q, k and the saved
log-sum-exp, never stored. One kernel per query block accumulates dq (and first writes
delta = rowsum(do * o), which every key block needs); one kernel per key block accumulates dk
and dv over the query blocks that see it. No atomics, no seq_q x seq_k buffer.

float32 inputs follow torch's float32 matmul precision: "highest" (torch's default) computes
the products in IEEE fp32, as torch.matmul does; "high" or "medium" allow TF32. The IEEE path
has no tensor-core instruction on Hopper, so it gets one small tile (see `_FWD_CONFIGS`).
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


# ------------------------------------------------------------------------- launch configs


def _cfg(block_m: int, block_n: int, warps: int, stages: int):
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=warps,
                         num_stages=stages)


# Tiles per (dot precision, head-dim class), chosen so that none spills on Hopper: checked by
# `python -m lab.kernels.aot --only attention` (registers, spills and compile time per config
# in docs/kernels.md). "16bit" is fp16/bf16 on tensor cores. float32 follows torch's float32
# matmul precision: "tf32" when it allows TF32, "ieee" under its default "highest", as
# torch.matmul does. IEEE fp32 has no tensor-core instruction on Hopper: Triton emits FMA
# loops whose operands all live in registers, so only small tiles fit without spilling (and
# larger ones took 13-42 s each to compile), and it gets one config, never autotuned.
_FWD_CONFIGS = {
    ("16bit", 64): [_cfg(128, 64, 4, 3), _cfg(128, 64, 8, 3), _cfg(128, 128, 8, 3),
                    _cfg(64, 64, 4, 4)],
    ("16bit", 128): [_cfg(128, 64, 8, 3), _cfg(128, 128, 8, 3), _cfg(64, 64, 4, 3),
                     _cfg(128, 64, 8, 2)],
    ("tf32", 64): [_cfg(128, 32, 8, 2), _cfg(64, 32, 4, 2)],
    ("tf32", 128): [_cfg(128, 32, 8, 2), _cfg(64, 32, 4, 2)],
    ("ieee", 64): [_cfg(32, 32, 4, 1)],
    ("ieee", 128): [_cfg(16, 32, 8, 1)],
}
_FWD_INTERPRET = [_cfg(32, 16, 4, 1)]  # BLOCK_N < BLOCK_M: tests cross the diagonal mid-block

# Backward tiles: (BLOCK_M queries, BLOCK_N keys, warps, stages). The dq kernel keeps q, do and
# a BLOCK_M x head_dim accumulator; the dk/dv kernel k, v and two BLOCK_N x head_dim ones.
_BWD_TILES = {
    ("dq", "16bit", 64): (128, 64, 8, 2), ("dq", "16bit", 128): (128, 32, 8, 2),
    ("dkdv", "16bit", 64): (64, 128, 8, 2), ("dkdv", "16bit", 128): (32, 128, 8, 2),
    ("dq", "tf32", 64): (64, 32, 4, 1), ("dq", "tf32", 128): (64, 32, 4, 1),
    ("dkdv", "tf32", 64): (32, 64, 4, 1), ("dkdv", "tf32", 128): (32, 32, 4, 1),
    ("dq", "ieee", 64): (16, 32, 4, 1), ("dq", "ieee", 128): (16, 16, 8, 1),
    ("dkdv", "ieee", 64): (32, 32, 4, 1), ("dkdv", "ieee", 128): (16, 32, 4, 1),
}
_BWD_TILES_INTERPRET = {"dq": (32, 16, 4, 1), "dkdv": (16, 32, 4, 1)}


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot's input_precision for these operands: "ieee" for float32 unless torch allows
    TF32 for float32 matmuls (torch.set_float32_matmul_precision("high"/"medium")); 16-bit
    operands ignore it and get "16bit" here only as a table key."""
    if dtype != torch.float32:
        return "16bit"
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def _kernel_precision(precision: str) -> str:
    # the constexpr the kernels get: Triton's own name ("tf32" is its default, and what 16-bit
    # operands are given: Triton ignores the setting for them)
    return "tf32" if precision == "16bit" else precision


def _head_dim_class(head_dim: int) -> int:
    return 128 if head_dim > 64 else 64  # 16 and 32 use the 64 tiles


def _fwd_configs_for(precision: str, head_dim: int) -> list:
    """The configs the forward's autotuner may try for one launch."""
    if INTERPRET:
        return _FWD_INTERPRET
    return _FWD_CONFIGS[(precision, _head_dim_class(head_dim))]


def _all_fwd_configs() -> list:
    if INTERPRET:
        return _FWD_INTERPRET
    return [c for configs in _FWD_CONFIGS.values() for c in configs]


def _prune_fwd_configs(configs, named_args, **kwargs) -> list:
    # The autotuner compiles every config it benchmarks: keep only this launch's list, so a
    # float32 call compiles its one small tile, not every 16-bit one (13-42 s each as fp32).
    precision = "16bit" if named_args["q_ptr"].dtype != torch.float32 else kwargs["PRECISION"]
    return _fwd_configs_for(precision, kwargs["HEAD_DIM"])


def _bwd_tiles(which: str, precision: str, head_dim: int) -> tuple[int, int, int, int]:
    if INTERPRET:
        return _BWD_TILES_INTERPRET[which]
    return _BWD_TILES[(which, precision, _head_dim_class(head_dim))]


# --------------------------------------------------------------------------------- kernels

_LOG2_E = 1.4426950408889634


@triton.jit
def _attend_blocks(acc, row_sum, row_max, q, k_base, v_base, stride_ks, stride_vs, rows,
                   seq_k, qk_scale, lo, hi, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
                   MASKED: tl.constexpr, CAUSAL: tl.constexpr, DOT_FP32: tl.constexpr,
                   PRECISION: tl.constexpr):
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
        qk = tl.dot(q, k_t, input_precision=PRECISION) * qk_scale
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
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
        row_max = new_max
    return acc, row_sum, row_max


@triton.autotune(configs=_all_fwd_configs(), key=["seq_q", "seq_k", "HEAD_DIM", "CAUSAL",
                                                   "PRECISION"],
                 prune_configs_by={"early_config_prune": _prune_fwd_configs})
@triton.jit
def _attention_fwd_kernel(q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, qk_scale, n_heads, seq_q, seq_k,
                          stride_qb, stride_qh, stride_qs, stride_kb, stride_kh, stride_ks,
                          stride_vb, stride_vh, stride_vs, stride_ob, stride_oh, stride_os,
                          HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, DOT_FP32: tl.constexpr,
                          PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
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
        0, full_end, HEAD_DIM, BLOCK_N, False, CAUSAL, DOT_FP32, PRECISION)
    acc, row_sum, row_max = _attend_blocks(
        acc, row_sum, row_max, q, k_base, v_base, stride_ks, stride_vs, rows, seq_k, qk_scale,
        full_end, hi, HEAD_DIM, BLOCK_N, True, CAUSAL, DOT_FP32, PRECISION)

    o = acc / row_sum[:, None]
    tl.store(o_base + rows[:, None] * stride_os + offs_d[None, :],
             o.to(o_ptr.dtype.element_ty), mask=row_ok[:, None])
    # log2-sum-exp of the scaled scores: the backward's p = exp2(score - lse), exactly the
    # normalised softmax. lse is (batch * heads, seq_q), contiguous.
    tl.store(lse_ptr + batch_head.to(tl.int64) * seq_q + rows, row_max + tl.log2(row_sum),
             mask=row_ok)


@triton.jit
def _dq_blocks(dq, q, do, lse, delta, k_base, v_base, stride_ks, stride_vs, rows, seq_k,
               qk_scale, lo, hi, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
               MASKED: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr):
    """dq += ds k over keys [lo, hi), ds = p * (dp - delta), p recomputed from lse. Keys past
    seq_k load as zeros: their p is not 0, but ds * k is, so only the causal mask is needed."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        col_ok = cols[:, None] < seq_k
        k = tl.load(k_base + cols[:, None] * stride_ks + offs_d[None, :], mask=col_ok, other=0.0)
        v = tl.load(v_base + cols[:, None] * stride_vs + offs_d[None, :], mask=col_ok, other=0.0)
        if DOT_FP32:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        p = tl.exp2(s * qk_scale - lse[:, None])
        if MASKED:
            p = tl.where(rows[:, None] >= cols[None, :], p, 0.0)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)
    return dq


@triton.jit
def _attention_bwd_dq_kernel(q_ptr, k_ptr, v_ptr, o_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr,
                             qk_scale, scale, n_heads, seq_q, seq_k,
                             stride_qb, stride_qh, stride_qs, stride_kb, stride_kh, stride_ks,
                             stride_vb, stride_vh, stride_vs, stride_ob, stride_oh, stride_os,
                             stride_dob, stride_doh, stride_dos, stride_dqb, stride_dqh,
                             stride_dqs, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
                             DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_m = tl.program_id(0)
    batch_head = tl.program_id(1)
    batch = (batch_head // n_heads).to(tl.int64)
    head = (batch_head % n_heads).to(tl.int64)
    k_base = k_ptr + batch * stride_kb + head * stride_kh
    v_base = v_ptr + batch * stride_vb + head * stride_vh

    rows = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = rows < seq_q
    # Rows past seq_q load as zeros with lse = delta = 0: every term they add is 0 * finite.
    q = tl.load(q_ptr + batch * stride_qb + head * stride_qh + rows[:, None] * stride_qs
                + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    do = tl.load(do_ptr + batch * stride_dob + head * stride_doh + rows[:, None] * stride_dos
                 + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    o = tl.load(o_ptr + batch * stride_ob + head * stride_oh + rows[:, None] * stride_os
                + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    row_offs = batch_head.to(tl.int64) * seq_q + rows
    lse = tl.load(lse_ptr + row_offs, mask=row_ok, other=0.0)
    # delta_i = sum_j p_ij dp_ij = rowsum(do_i * o_i); the dk/dv kernel reads it after this one.
    delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), axis=1)
    tl.store(delta_ptr + row_offs, delta, mask=row_ok)
    if DOT_FP32:
        q = q.to(tl.float32)
        do = do.to(tl.float32)

    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    if CAUSAL:
        hi = tl.minimum(seq_k, (start_m + 1) * BLOCK_M)
        full_end = (tl.minimum(start_m * BLOCK_M, seq_k) // BLOCK_N) * BLOCK_N
    else:
        hi = seq_k
        full_end = seq_k
    dq = _dq_blocks(dq, q, do, lse, delta, k_base, v_base, stride_ks, stride_vs, rows, seq_k,
                    qk_scale, 0, full_end, HEAD_DIM, BLOCK_N, False, DOT_FP32, PRECISION)
    dq = _dq_blocks(dq, q, do, lse, delta, k_base, v_base, stride_ks, stride_vs, rows, seq_k,
                    qk_scale, full_end, hi, HEAD_DIM, BLOCK_N, True, DOT_FP32, PRECISION)
    tl.store(dq_ptr + batch * stride_dqb + head * stride_dqh + rows[:, None] * stride_dqs
             + offs_d[None, :], (dq * scale).to(dq_ptr.dtype.element_ty), mask=row_ok[:, None])


@triton.jit
def _dkdv_blocks(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qs, stride_dos,
                 cols, seq_q, qk_scale, lo, hi, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                 MASKED: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr):
    """dv += p^T do and dk += ds^T q over queries [lo, hi), in the transposed (key-major)
    orientation. Queries past seq_q load as zeros with lse = delta = 0, adding 0."""
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + offs_m
        row_ok = rows < seq_q
        q = tl.load(q_base + rows[:, None] * stride_qs + offs_d[None, :], mask=row_ok[:, None],
                    other=0.0)
        do = tl.load(do_base + rows[:, None] * stride_dos + offs_d[None, :],
                     mask=row_ok[:, None], other=0.0)
        lse = tl.load(lse_base + rows, mask=row_ok, other=0.0)
        delta = tl.load(delta_base + rows, mask=row_ok, other=0.0)
        if DOT_FP32:
            q = q.to(tl.float32)
            do = do.to(tl.float32)
        s_t = tl.dot(k, tl.trans(q), input_precision=PRECISION)
        dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)
        p_t = tl.exp2(s_t * qk_scale - lse[None, :])
        if MASKED:
            p_t = tl.where(rows[None, :] >= cols[:, None], p_t, 0.0)
        ds_t = p_t * (dp_t - delta[None, :])
        dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=PRECISION)
        dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=PRECISION)
    return dk, dv


@triton.jit
def _attention_bwd_dkdv_kernel(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
                               qk_scale, scale, n_heads, seq_q, seq_k,
                               stride_qb, stride_qh, stride_qs, stride_kb, stride_kh, stride_ks,
                               stride_vb, stride_vh, stride_vs, stride_dob, stride_doh,
                               stride_dos, stride_dkb, stride_dkh, stride_dks, stride_dvb,
                               stride_dvh, stride_dvs, HEAD_DIM: tl.constexpr,
                               CAUSAL: tl.constexpr, DOT_FP32: tl.constexpr,
                               PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                               BLOCK_N: tl.constexpr):
    start_n = tl.program_id(0) * BLOCK_N
    batch_head = tl.program_id(1)
    batch = (batch_head // n_heads).to(tl.int64)
    head = (batch_head % n_heads).to(tl.int64)
    cols = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    col_ok = cols < seq_k
    # Keys past seq_k load as zeros; their dk, dv rows are computed and never stored.
    k = tl.load(k_ptr + batch * stride_kb + head * stride_kh + cols[:, None] * stride_ks
                + offs_d[None, :], mask=col_ok[:, None], other=0.0)
    v = tl.load(v_ptr + batch * stride_vb + head * stride_vh + cols[:, None] * stride_vs
                + offs_d[None, :], mask=col_ok[:, None], other=0.0)
    if DOT_FP32:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    q_base = q_ptr + batch * stride_qb + head * stride_qh
    do_base = do_ptr + batch * stride_dob + head * stride_doh
    lse_base = lse_ptr + batch_head.to(tl.int64) * seq_q
    delta_base = delta_ptr + batch_head.to(tl.int64) * seq_q

    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    if CAUSAL:
        # Queries before start_n see none of these keys. Query blocks starting at or after
        # the block's last key see all of them; those in between need the diagonal mask.
        lo = (start_n // BLOCK_M) * BLOCK_M
        diag_end = tl.minimum(tl.cdiv(start_n + BLOCK_N - 1, BLOCK_M) * BLOCK_M, seq_q)
        dk, dv = _dkdv_blocks(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qs,
                              stride_dos, cols, seq_q, qk_scale, lo, diag_end, HEAD_DIM,
                              BLOCK_M, True, DOT_FP32, PRECISION)
    else:
        diag_end = 0
    dk, dv = _dkdv_blocks(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qs,
                          stride_dos, cols, seq_q, qk_scale, diag_end, seq_q, HEAD_DIM,
                          BLOCK_M, False, DOT_FP32, PRECISION)
    tl.store(dk_ptr + batch * stride_dkb + head * stride_dkh + cols[:, None] * stride_dks
             + offs_d[None, :], (dk * scale).to(dk_ptr.dtype.element_ty), mask=col_ok[:, None])
    tl.store(dv_ptr + batch * stride_dvb + head * stride_dvh + cols[:, None] * stride_dvs
             + offs_d[None, :], dv.to(dv_ptr.dtype.element_ty), mask=col_ok[:, None])


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


def _check_out(name: str, like: torch.Tensor, out: torch.Tensor) -> None:
    check_tensor(name, out, ndim=4, contiguous=False)
    check_same("q", like, name, out)
    if out.shape != like.shape or out.stride(-1) != 1:
        raise ValueError(f"{name} must have shape {tuple(like.shape)} and stride 1 in its last "
                         f"dim")


def attention_fwd(q, k, v, causal: bool, scale: float, o, lse) -> torch.Tensor:
    """Write attention(q, k, v) into o (q's shape and dtype; last dim contiguous) and each
    row's log2-sum-exp of the scaled scores into lse ((batch, heads, seq_q) float32)."""
    _check_inputs(q, k, v)
    _check_out("o", q, o)
    if lse.shape != q.shape[:3] or lse.dtype != torch.float32 or not lse.is_contiguous():
        raise ValueError(f"lse must be a contiguous float32 tensor of shape {tuple(q.shape[:3])}")
    if q.numel() == 0:
        return o
    batch, heads, seq_q, head_dim = q.shape
    seq_k = k.shape[2]

    def grid(meta):
        return (triton.cdiv(seq_q, meta["BLOCK_M"]), batch * heads)

    _attention_fwd_kernel[grid](
        q, k, v, o, lse, scale * _LOG2_E, heads, seq_q, seq_k, *q.stride()[:3],
        *k.stride()[:3], *v.stride()[:3], *o.stride()[:3], HEAD_DIM=head_dim, CAUSAL=causal,
        DOT_FP32=INTERPRET and q.dtype == torch.bfloat16,
        PRECISION=_kernel_precision(dot_precision(q.dtype)))
    return o


def attention_bwd(q, k, v, o, lse, do, causal: bool, scale: float, dq, dk, dv):
    """Write the gradients of attention(q, k, v) for the output gradient do into dq, dk, dv,
    from the forward's o and lse (attention_fwd)."""
    _check_inputs(q, k, v)
    for name, like, t in (("o", q, o), ("do", q, do), ("dq", q, dq), ("dk", k, dk),
                          ("dv", v, dv)):
        _check_out(name, like, t)
    if q.numel() == 0 or k.numel() == 0:
        return dq, dk, dv
    batch, heads, seq_q, head_dim = q.shape
    seq_k = k.shape[2]
    delta = torch.empty((batch, heads, seq_q), dtype=torch.float32, device=q.device)
    precision = dot_precision(q.dtype)
    flags = {"HEAD_DIM": head_dim, "CAUSAL": causal,
             "DOT_FP32": INTERPRET and q.dtype == torch.bfloat16,
             "PRECISION": _kernel_precision(precision)}
    block_m, block_n, warps, stages = _bwd_tiles("dq", precision, head_dim)
    _attention_bwd_dq_kernel[(triton.cdiv(seq_q, block_m), batch * heads)](
        q, k, v, o, do, lse, delta, dq, scale * _LOG2_E, scale, heads, seq_q, seq_k,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3], *do.stride()[:3],
        *dq.stride()[:3], **flags, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps,
        num_stages=stages)
    block_m, block_n, warps, stages = _bwd_tiles("dkdv", precision, head_dim)
    _attention_bwd_dkdv_kernel[(triton.cdiv(seq_k, block_n), batch * heads)](
        q, k, v, do, lse, delta, dk, dv, scale * _LOG2_E, scale, heads, seq_q, seq_k,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3],
        *dk.stride()[:3], *dv.stride()[:3], **flags, BLOCK_M=block_m, BLOCK_N=block_n,
        num_warps=warps, num_stages=stages)
    return dq, dk, dv


# ----------------------------------------------------- torch.library ops and the autograd rule
# `custom_op` + `register_fake` lets torch.compile trace the ops; `register_autograd` is the
# custom-op form of an autograd.Function. The forward op also returns lse, which the backward
# op needs; the public `attention` returns only o.


@torch.library.custom_op("lab::attention", mutates_args=())
def _attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                  scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    o = new_output(q.shape, dtype=q.dtype, device=q.device)
    lse = new_output(q.shape[:3], dtype=torch.float32, device=q.device)
    attention_fwd(q, k, v, causal, scale, o, lse)
    return o, lse


@_attention_op.register_fake
def _(q, k, v, causal, scale):
    _check_inputs(q, k, v)
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("lab::attention_backward", mutates_args=())
def _attention_backward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                           lse: torch.Tensor, do: torch.Tensor, causal: bool, scale: float
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dq, dk, dv = (new_output(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
    return attention_bwd(q, k, v, o, lse, do, causal, scale, dq, dk, dv)


@_attention_backward_op.register_fake
def _(q, k, v, o, lse, do, causal, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, causal, scale = inputs
    o, lse = output
    ctx.causal = causal
    ctx.scale = scale
    ctx.save_for_backward(q, k, v, o, lse)


def _backward(ctx, do, _dlse):
    # lse is internal (the public op returns o only), so its gradient is always zero/None.
    q, k, v, o, lse = ctx.saved_tensors
    if do.stride(-1) != 1:  # e.g. the expanded ones of out.sum().backward()
        do = do.contiguous()
    dq, dk, dv = _attention_backward_op(q, k, v, o, lse, do, ctx.causal, ctx.scale)
    return dq, dk, dv, None, None


_attention_op.register_autograd(_backward, setup_context=_setup_context)


# ------------------------------------------------------------------------------- public op


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
              scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scale (+ causal mask)) v, as F.scaled_dot_product_attention.

    q: (batch, heads, seq_q, head_dim); k, v: (batch, heads, seq_k, head_dim); one dtype of
    fp32/fp16/bf16; head_dim in (16, 32, 64, 128); the last dim contiguous, other strides free.
    causal masks key j for query i when j > i (top-left aligned, like SDPA's is_causal).
    scale defaults to 1 / sqrt(head_dim). Returns a contiguous tensor of q's shape and dtype.
    Differentiable with a flash backward (O(seq) extra memory: the per-row log-sum-exp).
    float32 products follow torch.get_float32_matmul_precision() ("highest": IEEE, else TF32).
    """
    _check_inputs(q, k, v)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    o, _lse = _attention_op(q, k, v, bool(causal), float(scale))
    return o


def _visible_pairs(seq_q: int, seq_k: int, causal: bool) -> int:
    if not causal:
        return seq_q * seq_k
    # query i sees keys 0..i (capped at seq_k): sum over i of min(i + 1, seq_k)
    full = min(seq_q, seq_k)
    return full * (full + 1) // 2 + (seq_q - full) * seq_k


def flops(shape, *, causal: bool = False, backward: bool = False) -> int:
    """shape = (batch, heads, seq_q, seq_k, head_dim). Forward: 2 matmuls of 2 flops per
    multiply-add over the visible (query, key) pairs; backward: 2.5x that (5 matmuls, the
    FlashAttention convention; the kernels here do 7, as q k^T and do v^T are recomputed in
    both backward kernels)."""
    batch, heads, seq_q, seq_k, head_dim = shape
    forward = 4 * batch * heads * _visible_pairs(seq_q, seq_k, causal) * head_dim
    return forward * 5 // 2 if backward else forward


def bytes_moved(shape, dtype: torch.dtype, *, backward: bool = False) -> int:
    """Minimum bytes: forward reads q, k, v and writes o; backward reads q, k, v, o, do and
    writes dq, dk, dv. The fp32 per-row log-sum-exp and delta (4-12 bytes a query row) are
    left out, as in the FlashAttention papers' counts."""
    batch, heads, seq_q, seq_k, head_dim = shape
    row = batch * heads * head_dim * dtype.itemsize
    if backward:
        return row * (4 * seq_q + 4 * seq_k)
    return row * (2 * seq_q + 2 * seq_k)


def compile_cases():
    """For `python -m lab.kernels.aot`: the three kernels at head_dim 64 and 128, causal and
    not, for each dot precision (fp16, bf16, float32 as IEEE and as TF32), the forward with
    every config its autotuner may try for that launch."""
    from .aot import cases, jit_function

    out = []
    for dtype, precision in ((torch.float32, "ieee"), (torch.float32, "tf32"),
                             (torch.float16, "16bit"), (torch.bfloat16, "16bit")):
        name = str(dtype).removeprefix("torch.") + (f" {precision}" if precision != "16bit"
                                                    else "")
        ptrs = dict.fromkeys(("q_ptr", "k_ptr", "v_ptr", "o_ptr", "do_ptr", "dq_ptr", "dk_ptr",
                              "dv_ptr"), dtype)
        ptrs |= dict.fromkeys(("lse_ptr", "delta_ptr"), torch.float32)
        # n_heads 8: not a multiple of 16, so it gets no divisibility hint
        args = ptrs | {"qk_scale": 0.125, "scale": 0.125, "n_heads": 8}
        for head_dim in (64, 128):
            for causal in (False, True):
                variant = f"d{head_dim}{' causal' if causal else ''}"
                flags = {"HEAD_DIM": head_dim, "CAUSAL": causal, "DOT_FP32": False,
                         "PRECISION": _kernel_precision(precision)}
                for which, kernel in (("fwd", _attention_fwd_kernel),
                                      ("dq", _attention_bwd_dq_kernel),
                                      ("dkdv", _attention_bwd_dkdv_kernel)):
                    names = jit_function(kernel).arg_names
                    kernel_args = {n: t for n, t in args.items() if n in names}
                    if which == "fwd":
                        out += cases(kernel, name, kernel_args, flags, variant=variant,
                                     configs=_fwd_configs_for(precision, head_dim))
                        continue
                    block_m, block_n, warps, stages = _bwd_tiles(which, precision, head_dim)
                    out += cases(kernel, name, kernel_args,
                                 flags | {"BLOCK_M": block_m, "BLOCK_N": block_n},
                                 variant=variant, num_warps=warps, num_stages=stages)
    return out
