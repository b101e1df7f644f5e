"""LayerNorm over the last dimension, forward and backward (input, weight and bias gradients).

The kernels take a `RMS` switch and also serve `rmsnorm.py`: RMSNorm is LayerNorm without the
mean and the bias. Each row is held in registers whole, so a row is read once per pass.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._common import (
    INTERPRET,
    check_like,
    check_same,
    check_tensor,
    new_output,
    num_warps_for,
    persistent_programs,
    row_tile,
    sum_partial_rows,
)

# ------------------------------------------------------------------------------ reference


def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
              eps: float = 1e-5) -> torch.Tensor:
    """F.layer_norm over the last dim, in x's dtype.

    Memory floor, x of n_rows x n_cols, itemsize s: forward reads x and writes y
    (2 * n_rows * n_cols * s, plus the weight and bias once); backward reads x and dy and writes
    dx (3 * n_rows * n_cols * s, plus dw and db). Flops per element: forward 7 (sum, subtract,
    square, sum, scale, weight, bias), backward about 11.
    """
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), weight, bias, eps)


# --------------------------------------------------------------------------------- kernels

# A row is held in registers whole; rows longer than this are refused (a norm over more than
# 64 K features is not a shape a model uses).
MAX_COLS = 65536
ELEMENTS_PER_PROGRAM = 16384 if INTERPRET else 4096


@triton.jit
def _norm_fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, n_rows, n_cols, eps,
                     BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr, RMS: tl.constexpr,
                     HAS_BIAS: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, BLOCK_COLS)
    row_ok = rows < n_rows
    col_ok = cols < n_cols
    mask = row_ok[:, None] & col_ok[None, :]
    offs = rows.to(tl.int64)[:, None] * n_cols + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if RMS:
        xc = x
    else:
        mean = tl.sum(x, axis=1) / n_cols
        xc = tl.where(mask, x - mean[:, None], 0.0)  # padding must not enter the variance
        tl.store(mean_ptr + rows, mean, mask=row_ok)
    rstd = tl.rsqrt(tl.sum(xc * xc, axis=1) / n_cols + eps)
    tl.store(rstd_ptr + rows, rstd, mask=row_ok)
    w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    y = xc * rstd[:, None] * w[None, :]
    if HAS_BIAS:
        y += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _norm_bwd_kernel(dy_ptr, x_ptr, w_ptr, mean_ptr, rstd_ptr, dx_ptr, dw_part_ptr,
                     db_part_ptr, n_rows, n_cols, tiles_per_program, BLOCK_ROWS: tl.constexpr,
                     BLOCK_COLS: tl.constexpr, RMS: tl.constexpr):
    # One pass: x and dy are read once and dx written once. With xhat = (x - mean) * rstd and
    # g = w * dy, per row:
    #   dx = rstd * (g - xhat * mean(g * xhat) - mean(g))   (LayerNorm)
    #   dx = rstd * (g - xhat * mean(g * xhat))             (RMSNorm: no mean term)
    # dw = sum over rows of dy * xhat and db = sum over rows of dy (LayerNorm only). Program
    # `pid` owns the contiguous block of row tiles [pid * tiles_per_program, + tiles_per_program)
    # and keeps its dw (db) in registers; it writes one fp32 partial row of each (zeros if its
    # block is empty) and `sum_partial_rows` adds the partials in a second, small kernel.
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_COLS)
    col_ok = cols < n_cols
    w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    dw_acc = tl.zeros([BLOCK_ROWS, BLOCK_COLS], tl.float32)
    db_acc = tl.zeros([BLOCK_ROWS, BLOCK_COLS], tl.float32)
    first_tile = pid * tiles_per_program
    end_tile = tl.minimum(first_tile + tiles_per_program, tl.cdiv(n_rows, BLOCK_ROWS))
    for tile in range(first_tile, end_tile):
        rows = tile * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        row_ok = rows < n_rows
        mask = row_ok[:, None] & col_ok[None, :]
        offs = rows.to(tl.int64)[:, None] * n_cols + cols[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + rows, mask=row_ok, other=0.0)
        if RMS:
            xhat = x * rstd[:, None]
        else:
            mean = tl.load(mean_ptr + rows, mask=row_ok, other=0.0)
            xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        g = dy * w[None, :]
        c1 = tl.sum(g * xhat, axis=1) / n_cols
        if RMS:
            dx = (g - xhat * c1[:, None]) * rstd[:, None]
        else:
            c2 = tl.sum(g, axis=1) / n_cols
            dx = (g - xhat * c1[:, None] - c2[:, None]) * rstd[:, None]
            db_acc += dy
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dw_acc += dy * xhat
    part = pid.to(tl.int64) * n_cols + cols
    tl.store(dw_part_ptr + part, tl.sum(dw_acc, axis=0), mask=col_ok)
    if not RMS:  # RMSNorm has no bias: no db registers, no db partials to write and add
        tl.store(db_part_ptr + part, tl.sum(db_acc, axis=0), mask=col_ok)


# ------------------------------------------------------------------------------- launchers


def check_norm_inputs(x, weight, bias=None, *, what: str = "layernorm") -> None:
    check_tensor("x", x, min_ndim=1)
    check_tensor("weight", weight, ndim=1)
    check_same("x", x, "weight", weight)
    n_cols = x.shape[-1]
    if weight.shape[0] != n_cols:
        raise ValueError(f"weight has {weight.shape[0]} elements, x has {n_cols} features "
                         f"(last dim of shape {tuple(x.shape)}); they must match")
    if bias is not None:
        check_tensor("bias", bias, ndim=1)
        check_same("x", x, "bias", bias)
        if bias.shape[0] != n_cols:
            raise ValueError(f"bias has {bias.shape[0]} elements, x has {n_cols} features; "
                             f"they must match")
    if n_cols > MAX_COLS:
        raise ValueError(f"x has {n_cols} features; {what} holds a row in registers and "
                         f"supports at most {MAX_COLS}")


def _launch_meta(n_cols: int) -> dict:
    rows, cols = row_tile(n_cols, max_block_cols=MAX_COLS,
                          elements_per_program=ELEMENTS_PER_PROGRAM)
    return {"BLOCK_ROWS": rows, "BLOCK_COLS": cols, "num_warps": num_warps_for(rows * cols)}


def norm_fwd(x, weight, bias, eps: float, y, mean, rstd, *, rms: bool) -> None:
    """Write y = norm(x) * weight (+ bias), and per-row mean (LayerNorm only) and 1/std in
    fp32. x: (..., n_cols); y like x; mean, rstd: (n_rows,) with n_rows = x.numel() / n_cols."""
    check_norm_inputs(x, weight, bias, what="rmsnorm" if rms else "layernorm")
    check_like("x", x, "y", y)
    if x.numel() == 0:
        return
    n_cols = x.shape[-1]
    n_rows = x.numel() // n_cols
    for name, t in (("mean", mean), ("rstd", rstd)):
        check_tensor(name, t, ndim=1, dtypes=(torch.float32,))
        if t.shape[0] != n_rows:
            raise ValueError(f"{name} has {t.shape[0]} elements for {n_rows} rows of x")
    meta = _launch_meta(n_cols)
    grid = (triton.cdiv(n_rows, meta["BLOCK_ROWS"]),)
    _norm_fwd_kernel[grid](x, weight, bias if bias is not None else weight, y, mean, rstd,
                           n_rows, n_cols, eps, RMS=rms, HAS_BIAS=bias is not None, **meta)


def _bwd_launch_meta(n_cols: int) -> dict:
    meta = _launch_meta(n_cols)
    # One program per SM, so its warps are all the SM has to hide memory latency: 8 values of
    # each row tensor per thread (32 warps for an 8192-wide row). Compiled for sm_90 that is
    # 126 registers for LayerNorm at 4096 columns and 64 (RMSNorm, no spill) or 64 + 112 bytes
    # of spill (LayerNorm) at 8192, where the forward's 8 warps needed 255 registers and left
    # the SM 8 warps (docs/kernels.md, "Resources").
    meta["num_warps"] = max(4, min(32, meta["BLOCK_ROWS"] * meta["BLOCK_COLS"] // 256))
    return meta


def norm_bwd(dy, x, weight, mean, rstd, *, rms: bool):
    """Return (dx, dw, db) for the forward above; db is the bias gradient (sum of dy over rows)
    for LayerNorm and None for RMSNorm (`rms=True`).

    One pass over x and dy; each of the n_programs programs (one per SM) writes a fp32 partial
    row of dw (and db) for its block of rows, and `sum_partial_rows` adds them: 2 x n_programs
    x n_cols x 4 bytes each, 1-2% of the traffic at 16384 x 8192 bf16."""
    check_norm_inputs(x, weight, what="rmsnorm" if rms else "layernorm")
    check_like("x", x, "dy", dy)
    n_cols = x.shape[-1]
    dx = new_output(x.shape, dtype=x.dtype, device=x.device)
    if x.numel() == 0:
        zeros = torch.zeros(n_cols, dtype=weight.dtype, device=x.device)
        return dx, zeros, None if rms else zeros.clone()
    n_rows = x.numel() // n_cols
    meta = _bwd_launch_meta(n_cols)
    n_tiles = triton.cdiv(n_rows, meta["BLOCK_ROWS"])
    n_programs = persistent_programs(x.device, n_tiles)
    tiles_per_program = triton.cdiv(n_tiles, n_programs)
    dw_part = new_output((n_programs, n_cols), dtype=torch.float32, device=x.device)
    # RMSNorm's kernel never touches the db pointer; dw_part stands in for it
    db_part = dw_part if rms else new_output((n_programs, n_cols), dtype=torch.float32,
                                             device=x.device)
    _norm_bwd_kernel[(n_programs,)](dy, x, weight, mean, rstd, dx, dw_part, db_part, n_rows,
                                    n_cols, tiles_per_program, RMS=rms, **meta)
    dw = sum_partial_rows(dw_part, weight.dtype)
    return dx, dw, None if rms else sum_partial_rows(db_part, weight.dtype)


# ----------------------------------------------------- torch.library ops and the autograd rule
# `custom_op` + `register_fake` lets torch.compile trace the op; `register_autograd` is the
# custom-op form of an autograd.Function (forward saves x, weight, mean and rstd; backward calls
# the backward op), so the op is differentiable eagerly and under torch.compile.


@torch.library.custom_op("lab::layernorm", mutates_args=())
def _layernorm_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n_rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    y = new_output(x.shape, dtype=x.dtype, device=x.device)
    mean = new_output((n_rows,), dtype=torch.float32, device=x.device)
    rstd = new_output((n_rows,), dtype=torch.float32, device=x.device)
    norm_fwd(x, weight, bias, eps, y, mean, rstd, rms=False)
    return y, mean, rstd


@_layernorm_op.register_fake
def _(x, weight, bias, eps):
    check_norm_inputs(x, weight, bias)
    n_rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    stats = x.new_empty((n_rows,), dtype=torch.float32)
    return torch.empty_like(x), stats, torch.empty_like(stats)


@torch.library.custom_op("lab::layernorm_backward", mutates_args=())
def _layernorm_backward_op(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                           mean: torch.Tensor, rstd: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return norm_bwd(dy, x, weight, mean, rstd, rms=False)


@_layernorm_backward_op.register_fake
def _(dy, x, weight, mean, rstd):
    return torch.empty_like(x), torch.empty_like(weight), torch.empty_like(weight)


def _setup_context(ctx, inputs, output):
    x, weight, bias, _eps = inputs
    _y, mean, rstd = output
    ctx.mark_non_differentiable(mean, rstd)
    ctx.has_bias = bias is not None
    ctx.save_for_backward(x, weight, mean, rstd)


def _backward(ctx, dy, _dmean, _drstd):
    x, weight, mean, rstd = ctx.saved_tensors
    dx, dw, db = _layernorm_backward_op(dy.contiguous(), x, weight, mean, rstd)
    return dx, dw, db if ctx.has_bias else None, None


_layernorm_op.register_autograd(_backward, setup_context=_setup_context)


# ------------------------------------------------------------------------------- public op


def layernorm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
              eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last dimension: (x - mean) / sqrt(var + eps) * weight + bias.

    x: (..., n_cols) contiguous, fp32/fp16/bf16; weight, bias: (n_cols,), x's dtype; bias may
    be None. n_cols <= 65536. Returns x's shape and dtype. Differentiable in x, weight, bias.
    """
    check_norm_inputs(x, weight, bias)
    return _layernorm_op(x, weight, bias, float(eps))[0]


def flops(shape, *, backward: bool = False) -> int:
    return (11 if backward else 7) * math.prod(shape)


def bytes_moved(shape, dtype: torch.dtype, *, backward: bool = False) -> int:
    """Minimum bytes: x (and dy) read once, y (or dx) written once, weight and bias (and their
    gradients) once; the per-row fp32 mean and rstd (8 bytes a row) written, then read back."""
    n_cols = shape[-1]
    n_rows = math.prod(shape) // max(n_cols, 1)
    rows = (3 if backward else 2) * n_rows * n_cols * dtype.itemsize
    params = (4 if backward else 2) * n_cols * dtype.itemsize
    return rows + params + 8 * n_rows
