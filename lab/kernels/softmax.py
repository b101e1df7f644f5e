"""Row-wise softmax over the last dimension, forward and backward, for rows of any length.

A row that fits one block is read once and written once. A longer row is streamed in blocks
twice (an online max/sum pass, then a normalising pass), so its traffic is 3 row-lengths instead
of 2; the second read usually hits L2.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._common import (
    INTERPRET,
    check_like,
    check_tensor,
    new_output,
    num_warps_for,
    row_tile,
)

# ------------------------------------------------------------------------------ reference


def reference(x: torch.Tensor) -> torch.Tensor:
    """softmax(x) over the last dim, as eager PyTorch computes it in x's dtype.

    Memory floor per element: forward reads x and writes y (2 * itemsize bytes); backward reads
    y and dy and writes dx (3 * itemsize). Flops per element: forward 5 (max, subtract, exp,
    sum, scale), backward 4 (dy * y, sum, subtract, multiply).
    """
    return torch.softmax(x, dim=-1)


# --------------------------------------------------------------------------------- kernels

# A row up to this many elements is held in registers whole; longer rows are streamed in blocks
# of STREAM_BLOCK_COLS. Smaller under the interpreter so the tests reach the streaming path with
# small shapes.
MAX_ONE_BLOCK_COLS = 2048 if INTERPRET else 16384
STREAM_BLOCK_COLS = 512 if INTERPRET else 4096
# Elements one program covers when rows are short (rows are stacked into one tile).
ELEMENTS_PER_PROGRAM = 16384 if INTERPRET else 4096


@triton.jit
def _softmax_fwd_kernel(x_ptr, y_ptr, n_rows, n_cols, BLOCK_ROWS: tl.constexpr,
                        BLOCK_COLS: tl.constexpr, ONE_BLOCK: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, BLOCK_COLS)
    row_ok = rows < n_rows
    # int64: rows * n_cols passes 2**31 for tensors of more than 2 G elements
    row_start = rows.to(tl.int64)[:, None] * n_cols
    if ONE_BLOCK:
        mask = row_ok[:, None] & (cols[None, :] < n_cols)
        x = tl.load(x_ptr + row_start + cols[None, :], mask=mask, other=float("-inf"))
        x = x.to(tl.float32)
        # rows past the end are all -inf; give them max 0 and sum 1 so they compute no NaN
        row_max = tl.where(row_ok, tl.max(x, axis=1), 0.0)
        e = tl.exp(x - row_max[:, None])
        y = e * (1.0 / tl.where(row_ok, tl.sum(e, axis=1), 1.0))[:, None]
        tl.store(y_ptr + row_start + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        # Pass 1, online: each lane keeps the running max m of the values it has seen and their
        # sum s of exp(x - m), rescaled when m grows. Lanes are merged once at the end.
        m = tl.full([BLOCK_ROWS, BLOCK_COLS], float("-inf"), tl.float32)
        s = tl.zeros([BLOCK_ROWS, BLOCK_COLS], tl.float32)
        for start in range(0, n_cols, BLOCK_COLS):
            c = start + cols
            mask = row_ok[:, None] & (c[None, :] < n_cols)
            x = tl.load(x_ptr + row_start + c[None, :], mask=mask, other=float("-inf"))
            x = x.to(tl.float32)
            m_new = tl.maximum(m, x)
            # a lane that has only seen -inf keeps s = 0 (exp(-inf - -inf) would be NaN)
            shift = tl.where(m_new == float("-inf"), 0.0, m_new)
            s = s * tl.exp(m - shift) + tl.exp(x - shift)
            m = m_new
        row_max = tl.max(m, axis=1)
        row_shift = tl.where(row_max == float("-inf"), 0.0, row_max)
        inv_sum = 1.0 / tl.sum(s * tl.exp(m - row_shift[:, None]), axis=1)
        # Pass 2: normalise.
        for start in range(0, n_cols, BLOCK_COLS):
            c = start + cols
            mask = row_ok[:, None] & (c[None, :] < n_cols)
            x = tl.load(x_ptr + row_start + c[None, :], mask=mask, other=float("-inf"))
            y = tl.exp(x.to(tl.float32) - row_max[:, None]) * inv_sum[:, None]
            tl.store(y_ptr + row_start + c[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _softmax_bwd_kernel(y_ptr, dy_ptr, dx_ptr, n_rows, n_cols, BLOCK_ROWS: tl.constexpr,
                        BLOCK_COLS: tl.constexpr, ONE_BLOCK: tl.constexpr):
    # dx = y * (dy - sum(dy * y)): the Jacobian of softmax applied to dy, row by row.
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, BLOCK_COLS)
    row_ok = rows < n_rows
    row_start = rows.to(tl.int64)[:, None] * n_cols
    if ONE_BLOCK:
        mask = row_ok[:, None] & (cols[None, :] < n_cols)
        offs = row_start + cols[None, :]
        y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dot = tl.sum(y * dy, axis=1)
        tl.store(dx_ptr + offs, (y * (dy - dot[:, None])).to(dx_ptr.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros([BLOCK_ROWS, BLOCK_COLS], tl.float32)
        for start in range(0, n_cols, BLOCK_COLS):
            c = start + cols
            mask = row_ok[:, None] & (c[None, :] < n_cols)
            offs = row_start + c[None, :]
            y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            acc += y * dy
        dot = tl.sum(acc, axis=1)
        for start in range(0, n_cols, BLOCK_COLS):
            c = start + cols
            mask = row_ok[:, None] & (c[None, :] < n_cols)
            offs = row_start + c[None, :]
            y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            dx = y * (dy - dot[:, None])
            tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------------------- launchers


def _check_input(x) -> None:
    check_tensor("x", x, min_ndim=1)


def _launch_meta(n_cols: int) -> dict:
    one_block = n_cols <= MAX_ONE_BLOCK_COLS
    if one_block:
        rows, cols = row_tile(n_cols, max_block_cols=MAX_ONE_BLOCK_COLS,
                              elements_per_program=ELEMENTS_PER_PROGRAM)
    else:
        rows, cols = 1, STREAM_BLOCK_COLS
    return {"BLOCK_ROWS": rows, "BLOCK_COLS": cols, "ONE_BLOCK": one_block,
            "num_warps": num_warps_for(rows * cols)}


def softmax_fwd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Write softmax(x) over the last dim into `y` (same shape and dtype, contiguous)."""
    _check_input(x)
    check_like("x", x, "y", y)
    if x.numel() == 0:
        return y
    n_cols = x.shape[-1]
    n_rows = x.numel() // n_cols
    meta = _launch_meta(n_cols)
    grid = (triton.cdiv(n_rows, meta["BLOCK_ROWS"]),)
    _softmax_fwd_kernel[grid](x, y, n_rows, n_cols, **meta)
    return y


def softmax_bwd(y: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Write the input gradient of softmax into `dx`, given its output `y` and `dy`."""
    for name, t in (("y", y), ("dy", dy), ("dx", dx)):
        check_like("y", y, name, t, min_ndim=1)
    if y.numel() == 0:
        return dx
    n_cols = y.shape[-1]
    n_rows = y.numel() // n_cols
    meta = _launch_meta(n_cols)
    grid = (triton.cdiv(n_rows, meta["BLOCK_ROWS"]),)
    _softmax_bwd_kernel[grid](y, dy, dx, n_rows, n_cols, **meta)
    return dx


# ----------------------------------------------------- torch.library ops and the autograd rule
# `custom_op` + `register_fake` lets torch.compile trace the op without running it;
# `register_autograd` is the custom-op form of an autograd.Function (forward saves y, backward
# calls the backward op), so the op is differentiable both eagerly and under torch.compile.


@torch.library.custom_op("lab::softmax", mutates_args=())
def _softmax_op(x: torch.Tensor) -> torch.Tensor:
    return softmax_fwd(x, new_output(x.shape, dtype=x.dtype, device=x.device))


@_softmax_op.register_fake
def _(x):
    _check_input(x)
    return torch.empty_like(x)


@torch.library.custom_op("lab::softmax_backward", mutates_args=())
def _softmax_backward_op(y: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    return softmax_bwd(y, dy, new_output(y.shape, dtype=y.dtype, device=y.device))


@_softmax_backward_op.register_fake
def _(y, dy):
    return torch.empty_like(y)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output)


def _backward(ctx, dy):
    (y,) = ctx.saved_tensors
    # autograd may hand over an expanded (stride-0) gradient; the kernel reads dense rows
    return _softmax_backward_op(y, dy.contiguous())


_softmax_op.register_autograd(_backward, setup_context=_setup_context)


# ------------------------------------------------------------------------------- public op


def softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension.

    x: (..., n_cols), contiguous, fp32/fp16/bf16, CUDA (or CPU under TRITON_INTERPRET=1).
    Returns a tensor of x's shape and dtype. Differentiable.
    """
    _check_input(x)
    return _softmax_op(x)


def flops(shape, *, backward: bool = False) -> int:
    return (4 if backward else 5) * math.prod(shape)


def bytes_moved(shape, dtype: torch.dtype, *, backward: bool = False) -> int:
    """Minimum bytes to and from memory: each tensor read or written once."""
    tensors = 3 if backward else 2
    return tensors * math.prod(shape) * dtype.itemsize


# Row lengths that reach each launch configuration `_launch_meta` can choose on a GPU: 781
# (short rows stacked, 4 x 1024 on 8 warps; every stacked width is 4096 elements on 8 warps),
# 8192 (one block, 8 warps), 16384 (one block, 16 warps) and 100_000 (streamed in 4096-wide
# blocks).
_COMPILE_ROW_LENGTHS = (781, 8192, 16384, 100_000)


def compile_cases():
    """For `python -m lab.kernels.aot`: forward and backward at each launch configuration the
    launchers use on a GPU (`_COMPILE_ROW_LENGTHS`), for each dtype."""
    from .aot import cases

    out = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for n_cols in _COMPILE_ROW_LENGTHS:
            meta = _launch_meta(n_cols)
            warps = meta.pop("num_warps")
            for kernel, ptrs in ((_softmax_fwd_kernel, ("x_ptr", "y_ptr")),
                                 (_softmax_bwd_kernel, ("y_ptr", "dy_ptr", "dx_ptr"))):
                out += cases(kernel, str(dtype).removeprefix("torch."),
                             dict.fromkeys(ptrs, dtype) | {"n_cols": n_cols}, meta,
                             variant=f"cols {n_cols}", num_warps=warps)
    return out
