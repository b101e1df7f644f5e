"""Fused bias + GELU, forward and backward: y = gelu(x + bias), bias broadcast over rows.

Unfused, eager PyTorch writes x + bias to memory and reads it back for the GELU (and keeps it
for the backward); fused, the sum lives only in registers, and the backward recomputes it from
x and bias instead of storing it. The bias gradient is summed over rows in the same pass as dx.
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
    sigmoid,
)

APPROXIMATIONS = ("none", "tanh")

# ------------------------------------------------------------------------------ reference


def reference(x: torch.Tensor, bias: torch.Tensor, approximate: str = "tanh") -> torch.Tensor:
    """F.gelu(x + bias), in x's dtype.

    Memory floor per element of x (itemsize s): forward reads x and writes y (2 s), backward
    reads x and dy and writes dx (3 s); bias and its gradient once. Eager PyTorch moves 4 s
    forward (x + bias is written and read back). Flops per element: forward about 10
    (add, the polynomial or erf, products), backward about 16.
    """
    return torch.nn.functional.gelu(x + bias, approximate=approximate)


# ----------------------------------------------------------------- device helpers, kernels

# Globals a kernel reads must be constexpr.
_SQRT_2_OVER_PI = tl.constexpr(0.7978845608028654)
_SQRT_HALF = tl.constexpr(0.7071067811865476)
_INV_SQRT_2PI = tl.constexpr(0.3989422804014327)


@triton.jit
def gelu(z, TANH: tl.constexpr):
    """GELU of fp32 z. tanh form: 0.5 z (1 + tanh(u)) = z * sigmoid(2u), u = sqrt(2/pi)
    (z + 0.044715 z^3); exact form: 0.5 z (1 + erf(z / sqrt 2))."""
    if TANH:
        u = _SQRT_2_OVER_PI * (z + 0.044715 * z * z * z)
        return z * sigmoid(2.0 * u)
    else:
        return 0.5 * z * (1.0 + tl.erf(z * _SQRT_HALF))


@triton.jit
def gelu_grad(z, TANH: tl.constexpr):
    """d gelu / dz. tanh form, with s = sigmoid(2u): s + 2 z s (1 - s) du/dz (since
    1 - tanh(u)^2 = 4 s (1 - s)); exact form: Phi(z) + z phi(z)."""
    if TANH:
        u = _SQRT_2_OVER_PI * (z + 0.044715 * z * z * z)
        s = sigmoid(2.0 * u)
        du = _SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * z * z)
        return s + 2.0 * z * s * (1.0 - s) * du
    else:
        cdf = 0.5 * (1.0 + tl.erf(z * _SQRT_HALF))
        return cdf + z * _INV_SQRT_2PI * tl.exp(-0.5 * z * z)


# Columns per tile, and elements one program covers (short rows are stacked).
MAX_BLOCK_COLS = 1024
ELEMENTS_PER_PROGRAM = 16384 if INTERPRET else 4096


@triton.jit
def _bias_gelu_fwd_kernel(x_ptr, b_ptr, y_ptr, n_rows, n_cols, BLOCK_ROWS: tl.constexpr,
                          BLOCK_COLS: tl.constexpr, TANH: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.program_id(1) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    col_ok = cols < n_cols
    mask = (rows < n_rows)[:, None] & col_ok[None, :]
    offs = rows.to(tl.int64)[:, None] * n_cols + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    y = gelu(x + b[None, :], TANH)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bias_gelu_bwd_kernel(dy_ptr, x_ptr, b_ptr, dx_ptr, db_part_ptr, n_rows, n_cols,
                          BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr,
                          TANH: tl.constexpr):
    # Program (p, j) walks row tiles p, p + n_programs, ... of column block j, writes dx, and
    # writes one partial row p of the bias gradient (zeros if it got no tile); the launcher
    # adds the partial rows.
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    cols = tl.program_id(1) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    col_ok = cols < n_cols
    b = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    db_acc = tl.zeros([BLOCK_ROWS, BLOCK_COLS], tl.float32)
    for tile in range(pid, tl.cdiv(n_rows, BLOCK_ROWS), n_programs):
        rows = tile * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        mask = (rows < n_rows)[:, None] & col_ok[None, :]
        offs = rows.to(tl.int64)[:, None] * n_cols + cols[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dx = dy * gelu_grad(x + b[None, :], TANH)
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        db_acc += tl.where(mask, dx, 0.0)
    tl.store(db_part_ptr + pid.to(tl.int64) * n_cols + cols, tl.sum(db_acc, axis=0), mask=col_ok)


# ------------------------------------------------------------------------------- launchers


def _check_inputs(x, bias, approximate) -> None:
    check_tensor("x", x, min_ndim=1)
    check_tensor("bias", bias, ndim=1)
    check_same("x", x, "bias", bias)
    if bias.shape[0] != x.shape[-1]:
        raise ValueError(f"bias has {bias.shape[0]} elements, x has {x.shape[-1]} features "
                         f"(last dim of shape {tuple(x.shape)}); they must match")
    if approximate not in APPROXIMATIONS:
        raise ValueError(f"approximate={approximate!r}; choose one of {APPROXIMATIONS}")


def _tile(n_cols: int) -> tuple[int, int]:
    return row_tile(n_cols, max_block_cols=MAX_BLOCK_COLS,
                    elements_per_program=ELEMENTS_PER_PROGRAM)


def bias_gelu_fwd(x, bias, approximate: str, y) -> torch.Tensor:
    """Write gelu(x + bias) into y. x, y: (..., n_cols) contiguous; bias: (n_cols,)."""
    _check_inputs(x, bias, approximate)
    check_like("x", x, "y", y)
    if x.numel() == 0:
        return y
    n_cols = x.shape[-1]
    n_rows = x.numel() // n_cols
    block_rows, block_cols = _tile(n_cols)
    grid = (triton.cdiv(n_rows, block_rows), triton.cdiv(n_cols, block_cols))
    _bias_gelu_fwd_kernel[grid](x, bias, y, n_rows, n_cols, BLOCK_ROWS=block_rows,
                                BLOCK_COLS=block_cols, TANH=approximate == "tanh",
                                num_warps=num_warps_for(block_rows * block_cols))
    return y


def bias_gelu_bwd(dy, x, bias, approximate: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (dx, dbias) for y = gelu(x + bias) given dy (x's shape, contiguous)."""
    _check_inputs(x, bias, approximate)
    check_like("x", x, "dy", dy)
    n_cols = x.shape[-1]
    dx = new_output(x.shape, dtype=x.dtype, device=x.device)
    if x.numel() == 0:
        return dx, torch.zeros_like(bias)
    n_rows = x.numel() // n_cols
    block_rows, block_cols = _tile(n_cols)
    n_programs = persistent_programs(x.device, triton.cdiv(n_rows, block_rows))
    db_part = new_output((n_programs, n_cols), dtype=torch.float32, device=x.device)
    grid = (n_programs, triton.cdiv(n_cols, block_cols))
    _bias_gelu_bwd_kernel[grid](dy, x, bias, dx, db_part, n_rows, n_cols,
                                BLOCK_ROWS=block_rows, BLOCK_COLS=block_cols,
                                TANH=approximate == "tanh",
                                num_warps=num_warps_for(block_rows * block_cols))
    return dx, db_part.sum(0).to(bias.dtype)


# ----------------------------------------------------- torch.library ops and the autograd rule
# `custom_op` + `register_fake` lets torch.compile trace the op; `register_autograd` is the
# custom-op form of an autograd.Function (forward saves x and bias, backward recomputes
# x + bias), so the op is differentiable eagerly and under torch.compile.


@torch.library.custom_op("lab::bias_gelu", mutates_args=())
def _bias_gelu_op(x: torch.Tensor, bias: torch.Tensor, approximate: str) -> torch.Tensor:
    return bias_gelu_fwd(x, bias, approximate,
                         new_output(x.shape, dtype=x.dtype, device=x.device))


@_bias_gelu_op.register_fake
def _(x, bias, approximate):
    _check_inputs(x, bias, approximate)
    return torch.empty_like(x)


@torch.library.custom_op("lab::bias_gelu_backward", mutates_args=())
def _bias_gelu_backward_op(dy: torch.Tensor, x: torch.Tensor, bias: torch.Tensor,
                           approximate: str) -> tuple[torch.Tensor, torch.Tensor]:
    return bias_gelu_bwd(dy, x, bias, approximate)


@_bias_gelu_backward_op.register_fake
def _(dy, x, bias, approximate):
    return torch.empty_like(x), torch.empty_like(bias)


def _setup_context(ctx, inputs, output):
    x, bias, approximate = inputs
    ctx.approximate = approximate
    ctx.save_for_backward(x, bias)


def _backward(ctx, dy):
    x, bias = ctx.saved_tensors
    dx, dbias = _bias_gelu_backward_op(dy.contiguous(), x, bias, ctx.approximate)
    return dx, dbias, None


_bias_gelu_op.register_autograd(_backward, setup_context=_setup_context)


# ------------------------------------------------------------------------------- public op


def bias_gelu(x: torch.Tensor, bias: torch.Tensor, approximate: str = "tanh") -> torch.Tensor:
    """gelu(x + bias) with the bias broadcast over the rows of x.

    x: (..., n_cols) contiguous, fp32/fp16/bf16; bias: (n_cols,), x's dtype. `approximate` is
    "tanh" (GPT-2's GELU, the default here) or "none" (erf, F.gelu's default). Returns x's
    shape and dtype. Differentiable in x and bias.
    """
    _check_inputs(x, bias, approximate)
    return _bias_gelu_op(x, bias, approximate)


def flops(shape, *, backward: bool = False) -> int:
    return (16 if backward else 10) * math.prod(shape)


def bytes_moved(shape, dtype: torch.dtype, *, backward: bool = False) -> int:
    """Minimum bytes: x (and dy) read once, y (or dx) written once, bias (and dbias) once."""
    n_cols = shape[-1]
    rows = (3 if backward else 2) * math.prod(shape) * dtype.itemsize
    return rows + (2 if backward else 1) * n_cols * dtype.itemsize


# Row lengths that reach each tile `_tile` chooses on a GPU: 100 (short rows stacked, 32 x 128)
# and 4096 (4 x 1024: every row longer than 512 columns). Every tile is 4096 elements on 8 warps.
_COMPILE_ROW_LENGTHS = (100, 4096)


def compile_cases():
    """For `python -m lab.kernels.aot`: forward and backward, tanh and erf, at each GPU tile,
    for each dtype."""
    from .aot import cases

    out = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        ptrs = dict.fromkeys(("x_ptr", "b_ptr", "y_ptr", "dy_ptr", "dx_ptr"), dtype)
        ptrs["db_part_ptr"] = torch.float32
        for n_cols in _COMPILE_ROW_LENGTHS:
            block_rows, block_cols = _tile(n_cols)
            for approximate in APPROXIMATIONS:
                for kernel, names in (
                        (_bias_gelu_fwd_kernel, ("x_ptr", "b_ptr", "y_ptr")),
                        (_bias_gelu_bwd_kernel, ("dy_ptr", "x_ptr", "b_ptr", "dx_ptr",
                                                 "db_part_ptr"))):
                    out += cases(kernel, str(dtype).removeprefix("torch."),
                                 {n: ptrs[n] for n in names} | {"n_cols": n_cols},
                                 {"BLOCK_ROWS": block_rows, "BLOCK_COLS": block_cols,
                                  "TANH": approximate == "tanh"},
                                 variant=f"cols {n_cols} {approximate}",
                                 num_warps=num_warps_for(block_rows * block_cols))
    return out
