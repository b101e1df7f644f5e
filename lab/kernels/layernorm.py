"""LayerNorm over the last dimension, forward and backward (input, weight and bias gradients).

The kernels take a `RMS` switch and also serve `rmsnorm.py`: RMSNorm is LayerNorm without the
mean and the bias. A row that fits in registers is held there whole, so x (and dy) are read once.
A longer row is streamed in blocks: the forward reads it three times (sum, centred sum of
squares, normalise; the re-reads of one row come from L2), the backward in two kernels, one for
the per-row sums dx needs and one over column tiles for dx and the weight and bias gradients.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._common import (
    INTERPRET,
    PARTIAL_BLOCK_COLS,
    PARTIAL_BLOCK_ROWS,
    _sum_partial_rows_kernel,  # compiled ahead of time from here (see norm_compile_cases)
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

# Rows up to these lengths are held in registers whole; longer rows are streamed in blocks of
# STREAM_BLOCK_COLS. Compiled for sm_90 (`python -m lab.kernels.aot`), the in-register forward
# spilled from 32768 columns (on 16 warps, and with a bias on 32), and the backward, which also
# keeps the weight and bias gradients of its columns in registers, from 16384 (docs/kernels.md,
# "Ahead-of-time compile for Hopper"). Smaller under the interpreter, so the tests reach the
# streamed kernels with small shapes.
MAX_REGISTER_COLS_FWD = 4096 if INTERPRET else 16384
MAX_REGISTER_COLS_BWD = 4096 if INTERPRET else 8192
STREAM_BLOCK_COLS = 1024 if INTERPRET else 4096
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


# Rows too long for registers. One program per row in the forward and in the backward's row
# sums; the re-reads of a row (at most a few hundred KB) are served by L2.


@triton.jit
def _norm_fwd_streamed_kernel(x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, n_cols, eps,
                              BLOCK_COLS: tl.constexpr, RMS: tl.constexpr,
                              HAS_BIAS: tl.constexpr):
    row = tl.program_id(0)
    row_start = row.to(tl.int64) * n_cols
    cols = tl.arange(0, BLOCK_COLS)
    mean = 0.0
    if not RMS:
        acc = tl.zeros([BLOCK_COLS], tl.float32)
        for start in range(0, n_cols, BLOCK_COLS):
            c = start + cols
            acc += tl.load(x_ptr + row_start + c, mask=c < n_cols, other=0.0).to(tl.float32)
        mean = tl.sum(acc, axis=0) / n_cols
        tl.store(mean_ptr + row, mean)
    # the variance from centred values (a second read), never E[x^2] - E[x]^2, which cancels
    # catastrophically when |mean| >> std
    acc = tl.zeros([BLOCK_COLS], tl.float32)
    for start in range(0, n_cols, BLOCK_COLS):
        c = start + cols
        x = tl.load(x_ptr + row_start + c, mask=c < n_cols, other=0.0).to(tl.float32)
        xc = tl.where(c < n_cols, x - mean, 0.0)
        acc += xc * xc
    rstd = tl.rsqrt(tl.sum(acc, axis=0) / n_cols + eps)
    tl.store(rstd_ptr + row, rstd)
    for start in range(0, n_cols, BLOCK_COLS):
        c = start + cols
        col_ok = c < n_cols
        x = tl.load(x_ptr + row_start + c, mask=col_ok, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + c, mask=col_ok, other=0.0).to(tl.float32)
        y = (x - mean) * rstd * w
        if HAS_BIAS:
            y += tl.load(b_ptr + c, mask=col_ok, other=0.0).to(tl.float32)
        tl.store(y_ptr + row_start + c, y.to(y_ptr.dtype.element_ty), mask=col_ok)


@triton.jit
def _norm_bwd_row_sums_kernel(dy_ptr, x_ptr, w_ptr, mean_ptr, rstd_ptr, c1_ptr, c2_ptr, n_cols,
                              BLOCK_COLS: tl.constexpr, RMS: tl.constexpr):
    # The two per-row terms of dx (see _norm_bwd_kernel), with g = w * dy:
    # c1 = mean(g * xhat) and c2 = mean(g) (LayerNorm only), fp32, one of each per row.
    row = tl.program_id(0)
    row_start = row.to(tl.int64) * n_cols
    cols = tl.arange(0, BLOCK_COLS)
    rstd = tl.load(rstd_ptr + row)
    mean = 0.0
    if not RMS:
        mean = tl.load(mean_ptr + row)
    acc_gx = tl.zeros([BLOCK_COLS], tl.float32)
    acc_g = tl.zeros([BLOCK_COLS], tl.float32)
    for start in range(0, n_cols, BLOCK_COLS):
        c = start + cols
        col_ok = c < n_cols
        x = tl.load(x_ptr + row_start + c, mask=col_ok, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + row_start + c, mask=col_ok, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + c, mask=col_ok, other=0.0).to(tl.float32)
        g = dy * w  # 0 past the end of the row, so the padding adds nothing below
        acc_gx += g * ((x - mean) * rstd)
        if not RMS:
            acc_g += g
    tl.store(c1_ptr + row, tl.sum(acc_gx, axis=0) / n_cols)
    if not RMS:
        tl.store(c2_ptr + row, tl.sum(acc_g, axis=0) / n_cols)


@triton.jit
def _norm_bwd_tiled_kernel(dy_ptr, x_ptr, w_ptr, mean_ptr, rstd_ptr, c1_ptr, c2_ptr, dx_ptr,
                           dw_part_ptr, db_part_ptr, n_rows, n_cols, BLOCK_ROWS: tl.constexpr,
                           BLOCK_COLS: tl.constexpr, RMS: tl.constexpr):
    # dx from the per-row terms, and the weight (bias) gradient of one column block. Program
    # (p, j) walks row tiles p, p + n_programs, ... of column block j, keeps dw (db) of its
    # columns in registers and writes them as partial row p (zeros if it got no tile); the
    # launcher adds the partial rows.
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    cols = tl.program_id(1) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    col_ok = cols < n_cols
    w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    dw_acc = tl.zeros([BLOCK_ROWS, BLOCK_COLS], tl.float32)
    db_acc = tl.zeros([BLOCK_ROWS, BLOCK_COLS], tl.float32)
    for tile in range(pid, tl.cdiv(n_rows, BLOCK_ROWS), n_programs):
        rows = tile * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        row_ok = rows < n_rows
        mask = row_ok[:, None] & col_ok[None, :]
        offs = rows.to(tl.int64)[:, None] * n_cols + cols[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + rows, mask=row_ok, other=0.0)
        c1 = tl.load(c1_ptr + rows, mask=row_ok, other=0.0)
        if RMS:
            xhat = x * rstd[:, None]
            dx = (dy * w[None, :] - xhat * c1[:, None]) * rstd[:, None]
        else:
            mean = tl.load(mean_ptr + rows, mask=row_ok, other=0.0)
            c2 = tl.load(c2_ptr + rows, mask=row_ok, other=0.0)
            xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
            dx = (dy * w[None, :] - xhat * c1[:, None] - c2[:, None]) * rstd[:, None]
            db_acc += dy
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dw_acc += dy * xhat
    part = pid.to(tl.int64) * n_cols + cols
    tl.store(dw_part_ptr + part, tl.sum(dw_acc, axis=0), mask=col_ok)
    if not RMS:
        tl.store(db_part_ptr + part, tl.sum(db_acc, axis=0), mask=col_ok)


# ------------------------------------------------------------------------------- launchers


def check_norm_inputs(x, weight, bias=None) -> None:
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


def _launch_meta(n_cols: int) -> dict:
    """The in-register forward's tile and warps (n_cols <= MAX_REGISTER_COLS_FWD)."""
    rows, cols = row_tile(n_cols, max_block_cols=MAX_REGISTER_COLS_FWD,
                          elements_per_program=ELEMENTS_PER_PROGRAM)
    return {"BLOCK_ROWS": rows, "BLOCK_COLS": cols, "num_warps": num_warps_for(rows * cols)}


def _stream_tile(n_cols: int) -> tuple[int, int]:
    """(rows, cols) of the streamed backward's column tiles."""
    return row_tile(n_cols, max_block_cols=STREAM_BLOCK_COLS,
                    elements_per_program=ELEMENTS_PER_PROGRAM)


def norm_fwd(x, weight, bias, eps: float, y, mean, rstd, *, rms: bool) -> None:
    """Write y = norm(x) * weight (+ bias), and per-row mean (LayerNorm only) and 1/std in
    fp32. x: (..., n_cols); y like x; mean, rstd: (n_rows,) with n_rows = x.numel() / n_cols."""
    check_norm_inputs(x, weight, bias)
    check_like("x", x, "y", y)
    if x.numel() == 0:
        return
    n_cols = x.shape[-1]
    n_rows = x.numel() // n_cols
    for name, t in (("mean", mean), ("rstd", rstd)):
        check_tensor(name, t, ndim=1, dtypes=(torch.float32,))
        if t.shape[0] != n_rows:
            raise ValueError(f"{name} has {t.shape[0]} elements for {n_rows} rows of x")
    b = bias if bias is not None else weight  # never read when HAS_BIAS is off
    if n_cols > MAX_REGISTER_COLS_FWD:
        _norm_fwd_streamed_kernel[(n_rows,)](
            x, weight, b, y, mean, rstd, n_cols, eps, BLOCK_COLS=STREAM_BLOCK_COLS, RMS=rms,
            HAS_BIAS=bias is not None, num_warps=num_warps_for(STREAM_BLOCK_COLS))
        return
    meta = _launch_meta(n_cols)
    grid = (triton.cdiv(n_rows, meta["BLOCK_ROWS"]),)
    _norm_fwd_kernel[grid](x, weight, b, y, mean, rstd, n_rows, n_cols, eps, RMS=rms,
                           HAS_BIAS=bias is not None, **meta)


def _bwd_launch_meta(n_cols: int) -> dict:
    """The in-register backward's tile and warps (n_cols <= MAX_REGISTER_COLS_BWD)."""
    meta = _launch_meta(n_cols)
    # One program per SM, so its warps are all the SM has to hide memory latency: 8 values of
    # each row tensor per thread (32 warps for an 8192-wide row). Compiled for sm_90 that fits
    # in 64 registers without a spill at 8192 columns; at 16384 (16 values) it spilled 460-672
    # bytes, so longer rows take the streamed kernels.
    meta["num_warps"] = max(4, min(32, meta["BLOCK_ROWS"] * meta["BLOCK_COLS"] // 256))
    return meta


def norm_bwd(dy, x, weight, mean, rstd, *, rms: bool):
    """Return (dx, dw, db) for the forward above; db is the bias gradient (sum of dy over rows)
    for LayerNorm and None for RMSNorm (`rms=True`).

    Up to MAX_REGISTER_COLS_BWD columns, one pass over x and dy; each of the n_programs
    programs (one per SM) writes a fp32 partial row of dw (and db) for its block of rows, and
    `sum_partial_rows` adds them: 2 x n_programs x n_cols x 4 bytes each, 1-2% of the traffic
    at 16384 x 8192 bf16. Longer rows read x and dy twice: once for the per-row sums, once
    in column tiles that write dx and the partial rows."""
    check_norm_inputs(x, weight)
    check_like("x", x, "dy", dy)
    n_cols = x.shape[-1]
    dx = new_output(x.shape, dtype=x.dtype, device=x.device)
    if x.numel() == 0:
        zeros = torch.zeros(n_cols, dtype=weight.dtype, device=x.device)
        return dx, zeros, None if rms else zeros.clone()
    n_rows = x.numel() // n_cols
    streamed = n_cols > MAX_REGISTER_COLS_BWD
    if streamed:
        block_rows, block_cols = _stream_tile(n_cols)
    else:
        meta = _bwd_launch_meta(n_cols)
        block_rows = meta["BLOCK_ROWS"]
    n_tiles = triton.cdiv(n_rows, block_rows)
    n_programs = persistent_programs(x.device, n_tiles)
    dw_part = new_output((n_programs, n_cols), dtype=torch.float32, device=x.device)
    # RMSNorm's kernels never touch the db pointer (nor the mean, nor c2); dw_part (rstd, c1)
    # stands in for it
    db_part = dw_part if rms else new_output((n_programs, n_cols), dtype=torch.float32,
                                             device=x.device)
    if streamed:
        c1 = new_output((n_rows,), dtype=torch.float32, device=x.device)
        c2 = c1 if rms else new_output((n_rows,), dtype=torch.float32, device=x.device)
        warps = num_warps_for(STREAM_BLOCK_COLS)
        _norm_bwd_row_sums_kernel[(n_rows,)](dy, x, weight, mean, rstd, c1, c2, n_cols,
                                             BLOCK_COLS=STREAM_BLOCK_COLS, RMS=rms,
                                             num_warps=warps)
        _norm_bwd_tiled_kernel[(n_programs, triton.cdiv(n_cols, block_cols))](
            dy, x, weight, mean, rstd, c1, c2, dx, dw_part, db_part, n_rows, n_cols,
            BLOCK_ROWS=block_rows, BLOCK_COLS=block_cols, RMS=rms,
            num_warps=num_warps_for(block_rows * block_cols))
    else:
        tiles_per_program = triton.cdiv(n_tiles, n_programs)
        _norm_bwd_kernel[(n_programs,)](dy, x, weight, mean, rstd, dx, dw_part, db_part,
                                        n_rows, n_cols, tiles_per_program, RMS=rms, **meta)
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
    be None. Returns x's shape and dtype. Differentiable in x, weight, bias.
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


# Row lengths that reach each in-register launch configuration on a GPU (`_launch_meta`,
# `_bwd_launch_meta`): 781 (rows stacked, 4 x 1024: every width up to 4096 stacks to 4096
# elements, 8 warps forward and 16 backward), then one row per program from 4096 up to the
# register limits, the values each thread holds doubling with the row. Longer rows are streamed
# in blocks of one size whatever the row (_STREAM_COMPILE_ROW_LENGTH stands for them).
_COMPILE_ROW_LENGTHS = (781, 4096, 8192, MAX_REGISTER_COLS_FWD)
_STREAM_COMPILE_ROW_LENGTH = 100_000


def _norm_cases(kernel, dtype: torch.dtype, n_cols: int, constexprs: dict, warps: int,
                variant: str = "") -> list:
    """The compile cases of one launch of a norm kernel: row tensors in `dtype`, per-row
    statistics and partial sums in fp32."""
    from .aot import cases, jit_function

    ptrs = dict.fromkeys(("x_ptr", "w_ptr", "b_ptr", "y_ptr", "dy_ptr", "dx_ptr"), dtype)
    ptrs |= dict.fromkeys(("mean_ptr", "rstd_ptr", "c1_ptr", "c2_ptr", "dw_part_ptr",
                           "db_part_ptr"), torch.float32)
    names = jit_function(kernel).arg_names
    args = {n: t for n, t in ptrs.items() if n in names} | {"n_cols": n_cols}
    if "eps" in names:
        args["eps"] = 1e-5
    return cases(kernel, str(dtype).removeprefix("torch."), args, constexprs,
                 variant=f"cols {n_cols}{variant}", num_warps=warps)


def norm_compile_cases(*, rms: bool) -> list:
    """The compile cases of the shared kernels for LayerNorm (`rms=False`: with and without a
    bias, and the partial-row sum both backwards end with) or RMSNorm (`rms=True`)."""
    from .aot import cases

    out = []
    biases = (False,) if rms else (False, True)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for n_cols in _COMPILE_ROW_LENGTHS:
            meta = _launch_meta(n_cols)
            warps = meta.pop("num_warps")
            for has_bias in biases:
                out += _norm_cases(_norm_fwd_kernel, dtype, n_cols,
                                   meta | {"RMS": rms, "HAS_BIAS": has_bias}, warps,
                                   " bias" if has_bias else "")
            if n_cols <= MAX_REGISTER_COLS_BWD:
                meta = _bwd_launch_meta(n_cols)
                warps = meta.pop("num_warps")
                out += _norm_cases(_norm_bwd_kernel, dtype, n_cols, meta | {"RMS": rms}, warps)
        n_cols = _STREAM_COMPILE_ROW_LENGTH
        stream = {"BLOCK_COLS": STREAM_BLOCK_COLS, "RMS": rms}
        for has_bias in biases:
            out += _norm_cases(_norm_fwd_streamed_kernel, dtype, n_cols,
                               stream | {"HAS_BIAS": has_bias}, num_warps_for(STREAM_BLOCK_COLS),
                               " bias" if has_bias else "")
        out += _norm_cases(_norm_bwd_row_sums_kernel, dtype, n_cols, stream,
                           num_warps_for(STREAM_BLOCK_COLS))
        block_rows, block_cols = _stream_tile(n_cols)
        out += _norm_cases(_norm_bwd_tiled_kernel, dtype, n_cols,
                           {"BLOCK_ROWS": block_rows, "BLOCK_COLS": block_cols, "RMS": rms},
                           num_warps_for(block_rows * block_cols))
        if rms:
            # the partial-row sum is LayerNorm's case: the same compile declared twice would
            # hit the compile check's cache and report nothing
            continue
        # the weight (and bias) gradient: fp32 partial rows (132: one per H100/H200 SM) summed
        # and rounded to the dtype
        out += cases(_sum_partial_rows_kernel, str(dtype).removeprefix("torch."),
                     {"part_ptr": torch.float32, "out_ptr": dtype, "n_parts": 132},
                     {"BLOCK_ROWS": PARTIAL_BLOCK_ROWS, "BLOCK_COLS": PARTIAL_BLOCK_COLS},
                     num_warps=4)
    return out


def compile_cases():
    """For `python -m lab.kernels.aot`: LayerNorm's kernels (with and without a bias) at each
    GPU launch configuration, for each dtype (RMSNorm's in rmsnorm.py)."""
    return norm_compile_cases(rms=False)
