"""SwiGLU's gating, forward and backward: y = silu(gate) * up, elementwise.

`gate` and `up` are the two projections of the MLP input (LLaMA's w1 x and w3 x). Eager PyTorch
writes silu(gate) to memory and reads it back for the product; fused, it stays in registers, and
the backward recomputes it from gate instead of keeping it.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._common import INTERPRET, check_like, check_same, check_tensor, new_output, sigmoid

# ------------------------------------------------------------------------------ reference


def reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """F.silu(gate) * up, in gate's dtype.

    Memory floor per element (itemsize s): forward reads gate and up and writes y (3 s);
    backward reads gate, up and dy and writes dgate and dup (5 s). Eager PyTorch moves 5 s
    forward (silu(gate) is written and read back). Flops per element: forward 4 (exp, add,
    divide, product), backward about 9.
    """
    return torch.nn.functional.silu(gate) * up


# --------------------------------------------------------------------------------- kernels

# Elements per program: a flat, elementwise kernel; 4096 keeps 16 values per thread at 8 warps.
BLOCK = 16384 if INTERPRET else 4096


@triton.jit
def _swiglu_fwd_kernel(gate_ptr, up_ptr, y_ptr, n_elements, BLOCK: tl.constexpr):
    # int64: offsets pass 2**31 for tensors of more than 2 G elements
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    a = tl.load(gate_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(up_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = a * sigmoid(a) * b
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_bwd_kernel(dy_ptr, gate_ptr, up_ptr, dgate_ptr, dup_ptr, n_elements,
                       BLOCK: tl.constexpr):
    # With s = sigmoid(a): silu(a) = a s and silu'(a) = s (1 + a (1 - s)), so
    # dgate = dy * up * silu'(a) and dup = dy * silu(a).
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    a = tl.load(gate_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(up_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    s = sigmoid(a)
    tl.store(dgate_ptr + offs, (dy * b * s * (1.0 + a * (1.0 - s))).to(dgate_ptr.dtype.element_ty),
             mask=mask)
    tl.store(dup_ptr + offs, (dy * a * s).to(dup_ptr.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------------------- launchers


def _check_inputs(gate, up) -> None:
    check_tensor("gate", gate)
    check_like("gate", gate, "up", up)


def swiglu_fwd(gate, up, y) -> torch.Tensor:
    """Write silu(gate) * up into y (all the same shape, dtype, contiguous)."""
    _check_inputs(gate, up)
    check_tensor("y", y)
    check_same("gate", gate, "y", y)
    if y.shape != gate.shape:
        raise ValueError(f"y has shape {tuple(y.shape)}, gate has {tuple(gate.shape)}")
    n = gate.numel()
    if n == 0:
        return y
    _swiglu_fwd_kernel[(triton.cdiv(n, BLOCK),)](gate, up, y, n, BLOCK=BLOCK, num_warps=8)
    return y


def swiglu_bwd(dy, gate, up) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (dgate, dup) for y = silu(gate) * up given dy (gate's shape, contiguous)."""
    _check_inputs(gate, up)
    check_tensor("dy", dy)
    check_same("gate", gate, "dy", dy)
    if dy.shape != gate.shape:
        raise ValueError(f"dy has shape {tuple(dy.shape)}, gate has {tuple(gate.shape)}")
    dgate = new_output(gate.shape, dtype=gate.dtype, device=gate.device)
    dup = new_output(gate.shape, dtype=gate.dtype, device=gate.device)
    n = gate.numel()
    if n:
        _swiglu_bwd_kernel[(triton.cdiv(n, BLOCK),)](dy, gate, up, dgate, dup, n, BLOCK=BLOCK,
                                                     num_warps=8)
    return dgate, dup


# ----------------------------------------------------- torch.library ops and the autograd rule
# `custom_op` + `register_fake` lets torch.compile trace the op; `register_autograd` is the
# custom-op form of an autograd.Function (forward saves gate and up), so the op is
# differentiable eagerly and under torch.compile.


@torch.library.custom_op("lab::swiglu", mutates_args=())
def _swiglu_op(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return swiglu_fwd(gate, up, new_output(gate.shape, dtype=gate.dtype, device=gate.device))


@_swiglu_op.register_fake
def _(gate, up):
    _check_inputs(gate, up)
    return torch.empty_like(gate)


@torch.library.custom_op("lab::swiglu_backward", mutates_args=())
def _swiglu_backward_op(dy: torch.Tensor, gate: torch.Tensor,
                        up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return swiglu_bwd(dy, gate, up)


@_swiglu_backward_op.register_fake
def _(dy, gate, up):
    return torch.empty_like(gate), torch.empty_like(up)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, dy):
    gate, up = ctx.saved_tensors
    return _swiglu_backward_op(dy.contiguous(), gate, up)


_swiglu_op.register_autograd(_backward, setup_context=_setup_context)


# ------------------------------------------------------------------------------- public op


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up, elementwise.

    gate, up: the same shape (any rank), contiguous, fp32/fp16/bf16, one dtype. Returns that
    shape and dtype. Differentiable in gate and up.
    """
    _check_inputs(gate, up)
    return _swiglu_op(gate, up)


def flops(shape, *, backward: bool = False) -> int:
    return (9 if backward else 4) * math.prod(shape)


def bytes_moved(shape, dtype: torch.dtype, *, backward: bool = False) -> int:
    """Minimum bytes: every input read once, every output written once."""
    return (5 if backward else 3) * math.prod(shape) * dtype.itemsize


def compile_cases():
    """For `python -m lab.kernels.aot`: forward and backward (one launch configuration each,
    whatever the shape), for each dtype."""
    from .aot import cases

    out = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for kernel, names in ((_swiglu_fwd_kernel, ("gate_ptr", "up_ptr", "y_ptr")),
                              (_swiglu_bwd_kernel, ("dy_ptr", "gate_ptr", "up_ptr", "dgate_ptr",
                                                    "dup_ptr"))):
            out += cases(kernel, str(dtype).removeprefix("torch."), dict.fromkeys(names, dtype),
                         {"BLOCK": BLOCK}, num_warps=8)
    return out
