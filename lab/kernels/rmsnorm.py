"""RMSNorm over the last dimension, forward and backward (input and weight gradients).

The kernels are LayerNorm's (`layernorm.py`) with `RMS=True`: no mean is subtracted and there is
no bias, so the forward stores only the per-row 1/rms.
"""

from __future__ import annotations

import math

import torch

from ._common import new_output
from .layernorm import (
    _norm_bwd_kernel,
    _norm_bwd_row_sums_kernel,
    _norm_bwd_tiled_kernel,
    _norm_fwd_kernel,
    _norm_fwd_streamed_kernel,
    check_norm_inputs,
    norm_bwd,
    norm_compile_cases,
    norm_fwd,
)

# The kernels RMSNorm launches, by name in this module: `python -m lab.kernels.aot` compiles
# a module's declared cases by looking their kernels up in it. (The partial-row sum that ends
# the backward is declared in layernorm.py.)
_KERNELS = (_norm_fwd_kernel, _norm_fwd_streamed_kernel, _norm_bwd_kernel,
            _norm_bwd_row_sums_kernel, _norm_bwd_tiled_kernel)

# ------------------------------------------------------------------------------ reference


def reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """F.rms_norm over the last dim: x / sqrt(mean(x^2) + eps) * weight, in x's dtype.

    Memory floor, x of n_rows x n_cols, itemsize s: forward reads x, writes y
    (2 * n_rows * n_cols * s, plus the weight); backward reads x and dy, writes dx
    (3 * n_rows * n_cols * s, plus dw). Flops per element: forward 4 (square, sum, scale,
    weight), backward about 8.
    """
    return torch.nn.functional.rms_norm(x, (x.shape[-1],), weight, eps)


# ------------------------------------------------------------------- kernels and launchers
# `layernorm._norm_fwd_kernel` / `_norm_bwd_kernel` through `norm_fwd` / `norm_bwd`, rms=True.

# ----------------------------------------------------- torch.library ops and the autograd rule


@torch.library.custom_op("lab::rmsnorm", mutates_args=())
def _rmsnorm_op(x: torch.Tensor, weight: torch.Tensor,
                eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    n_rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    y = new_output(x.shape, dtype=x.dtype, device=x.device)
    rstd = new_output((n_rows,), dtype=torch.float32, device=x.device)
    # the kernel stores no mean when rms=True; rstd stands in for the unused pointer
    norm_fwd(x, weight, None, eps, y, rstd, rstd, rms=True)
    return y, rstd


@_rmsnorm_op.register_fake
def _(x, weight, eps):
    check_norm_inputs(x, weight)
    n_rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    return torch.empty_like(x), x.new_empty((n_rows,), dtype=torch.float32)


@torch.library.custom_op("lab::rmsnorm_backward", mutates_args=())
def _rmsnorm_backward_op(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                         rstd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dx, dw, _no_db = norm_bwd(dy, x, weight, rstd, rstd, rms=True)
    return dx, dw


@_rmsnorm_backward_op.register_fake
def _(dy, x, weight, rstd):
    return torch.empty_like(x), torch.empty_like(weight)


def _setup_context(ctx, inputs, output):
    x, weight, _eps = inputs
    _y, rstd = output
    ctx.mark_non_differentiable(rstd)
    ctx.save_for_backward(x, weight, rstd)


def _backward(ctx, dy, _drstd):
    x, weight, rstd = ctx.saved_tensors
    dx, dw = _rmsnorm_backward_op(dy.contiguous(), x, weight, rstd)
    return dx, dw, None


_rmsnorm_op.register_autograd(_backward, setup_context=_setup_context)


# ------------------------------------------------------------------------------- public op


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dimension: x / sqrt(mean(x^2) + eps) * weight.

    x: (..., n_cols) contiguous, fp32/fp16/bf16; weight: (n_cols,), x's dtype.
    Returns x's shape and dtype. Differentiable in x and weight.
    """
    check_norm_inputs(x, weight)
    return _rmsnorm_op(x, weight, float(eps))[0]


def flops(shape, *, backward: bool = False) -> int:
    return (8 if backward else 4) * math.prod(shape)


def bytes_moved(shape, dtype: torch.dtype, *, backward: bool = False) -> int:
    """Minimum bytes: x (and dy) read once, y (or dx) written once, the weight (and dw) once,
    and the per-row fp32 rstd (4 bytes a row) written, then read back."""
    n_cols = shape[-1]
    n_rows = math.prod(shape) // max(n_cols, 1)
    rows = (3 if backward else 2) * n_rows * n_cols * dtype.itemsize
    params = (2 if backward else 1) * n_cols * dtype.itemsize
    return rows + params + 4 * n_rows


def compile_cases():
    """For `python -m lab.kernels.aot`: LayerNorm's kernels with `RMS=True` (no mean, no bias)
    at each GPU launch configuration, for each dtype."""
    return norm_compile_cases(rms=True)
