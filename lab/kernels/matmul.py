"""Matmul with a fused epilogue: c = activation(a @ b + bias), autotuned on CUDA.

The bias add and the activation run on the fp32 accumulator before the one store of c, so the
epilogue costs no extra pass over the M x N output (eager PyTorch writes a @ b, then reads and
writes it again for the bias and again for the activation).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import INTERPRET, check_device, check_same, check_tensor, new_output
from .gelu import gelu

ACTIVATIONS = (None, "relu", "gelu", "gelu_tanh")
_ACTIVATION_CODE = {"none": 0, "relu": 1, "gelu": 2, "gelu_tanh": 3}

# ------------------------------------------------------------------------------ reference


def reference(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None,
              activation: str | None = None) -> torch.Tensor:
    """activation(a @ b + bias) as eager PyTorch does it best (addmm fuses the bias into the
    matmul), in a's dtype. "gelu" is the erf form, "gelu_tanh" the tanh form.

    a: (M, K), b: (K, N). Flops: 2 * M * N * K (plus M * N per epilogue op). Memory floor,
    itemsize s: (M * K + K * N + M * N) * s, plus N * s for the bias.
    """
    z = torch.addmm(bias, a, b) if bias is not None else a @ b
    if activation == "relu":
        return torch.relu(z)
    if activation in ("gelu", "gelu_tanh"):
        approximate = "tanh" if activation == "gelu_tanh" else "none"
        return torch.nn.functional.gelu(z, approximate=approximate)
    return z


# --------------------------------------------------------------------------------- kernels


def _cfg(bm, bn, bk, stages, warps):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8},
                         num_stages=stages, num_warps=warps)


# Tiles per dot precision. 16-bit: a few that do well on Hopper (128 x 256 and 256 x 128 for
# large problems, 64-wide for small or skinny ones), 3-4 stages of shared-memory pipelining.
# float32 follows torch's float32 matmul precision, as in attention.py: "ieee" (torch's default)
# has no tensor-core instruction, Triton emits FMA loops with every operand in registers, so it
# gets one small tile and is never autotuned; "tf32" (when torch allows it) gets two.
# `python -m lab.kernels.aot --only matmul` checks that none spills on Hopper.
_CONFIGS = {
    "16bit": [_cfg(128, 256, 64, 3, 8), _cfg(256, 128, 64, 3, 8), _cfg(128, 128, 64, 4, 8),
              _cfg(128, 128, 64, 4, 4), _cfg(128, 64, 64, 4, 4), _cfg(64, 128, 64, 4, 4),
              _cfg(64, 64, 64, 4, 4)],
    "tf32": [_cfg(128, 128, 32, 3, 8), _cfg(128, 64, 32, 3, 4)],
    "ieee": [_cfg(64, 64, 16, 2, 4)],
}
# Under the interpreter one small tile: the autotuner would run every config per shape.
_INTERPRET_CONFIGS = [_cfg(32, 32, 32, 1, 4)]


def dot_precision(dtype: torch.dtype) -> str:
    """"ieee" for float32 unless torch allows TF32 for float32 matmuls, then "tf32"; "16bit"
    (a table key; Triton ignores input_precision for 16-bit operands) otherwise."""
    if dtype != torch.float32:
        return "16bit"
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


# An activation epilogue needs registers beside the fp32 accumulator: with more than 64
# accumulator values per thread (128 x 256 or 256 x 128 on 8 warps, 128 x 128 on 4) the erf
# GELU made ptxas spill 256-512 bytes on Hopper, so those tiles serve only plain products.
_MAX_ACC_PER_THREAD_WITH_ACTIVATION = 64


def _configs_for(precision: str, activation: int = 0) -> list:
    """The configs the autotuner may try for one launch (activation: the ACTIVATION code)."""
    if INTERPRET:
        return _INTERPRET_CONFIGS
    configs = _CONFIGS[precision]
    if activation:
        configs = [c for c in configs if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"]
                   <= _MAX_ACC_PER_THREAD_WITH_ACTIVATION * 32 * c.num_warps]
    return configs


def _prune_configs(configs, named_args, **kwargs) -> list:
    # The autotuner compiles every config it benchmarks: keep only this launch's list.
    precision = "16bit" if named_args["a_ptr"].dtype != torch.float32 else kwargs["PRECISION"]
    return _configs_for(precision, kwargs["ACTIVATION"])


@triton.autotune(configs=_INTERPRET_CONFIGS if INTERPRET else
                 [c for configs in _CONFIGS.values() for c in configs],
                 key=["M", "N", "K", "PRECISION"],
                 prune_configs_by={"early_config_prune": _prune_configs})
@triton.jit
def _matmul_kernel(a_ptr, b_ptr, bias_ptr, c_ptr, M, N, K, stride_am, stride_ak, stride_bk,
                   stride_bn, stride_cm, stride_cn, HAS_BIAS: tl.constexpr,
                   ACTIVATION: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   GROUP_M: tl.constexpr):
    # Grouped order: consecutive programs walk down a column of GROUP_M row tiles before
    # moving right, so the B tiles they share (and the A tiles of the group) stay in L2.
    pid = tl.program_id(0)
    n_tiles_m = tl.cdiv(M, BLOCK_M)
    n_tiles_n = tl.cdiv(N, BLOCK_N)
    tiles_per_group = GROUP_M * n_tiles_n
    first_m = (pid // tiles_per_group) * GROUP_M
    group_rows = min(n_tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % tiles_per_group) % group_rows
    pid_n = (pid % tiles_per_group) // group_rows

    # Rows and columns past the edge wrap around (% M, % N) so the loads in the K loop need no
    # mask on M or N; the wrapped results are dropped by the masked store.
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k_start in range(0, K, BLOCK_K):
        k_ok = offs_k < K - k_start
        a = tl.load(a_ptrs, mask=k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None], other=0.0)
        if DOT_FP32:  # the interpreter multiplies bf16 as raw integers; see the launcher
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        # "ieee" for fp32 under torch's default precision, as torch.matmul (no TF32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    # Epilogue on the fp32 accumulator, then one store.
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    if ACTIVATION == 1:
        acc = tl.maximum(acc, 0.0)
    elif ACTIVATION == 2:
        acc = gelu(acc, False)
    elif ACTIVATION == 3:
        acc = gelu(acc, True)
    c_ptrs = c_ptr + rows[:, None] * stride_cm + cols[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(rows < M)[:, None] & (cols < N)[None, :])


# ------------------------------------------------------------------------------- launchers


def _check_inputs(a, b, bias, activation) -> None:
    # Any strides: the kernel takes them, so transposed views (b.t()) are read without a copy.
    check_tensor("a", a, ndim=2, contiguous=False)
    check_tensor("b", b, ndim=2, contiguous=False)
    check_same("a", a, "b", b)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"a is {tuple(a.shape)} and b is {tuple(b.shape)}: a's columns must "
                         f"equal b's rows")
    if bias is not None:
        check_tensor("bias", bias, ndim=1)
        check_same("a", a, "bias", bias)
        if bias.shape[0] != b.shape[1]:
            raise ValueError(f"bias has {bias.shape[0]} elements, the output has {b.shape[1]} "
                             f"columns; they must match")
    if activation not in ACTIVATIONS and activation != "none":
        raise ValueError(f"activation={activation!r}; choose one of {ACTIVATIONS}")
    for name, t in (("a", a), ("b", b)):
        # the kernel's offsets are int32: rows * row stride must stay below 2**31
        span = sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride(), strict=True))
        if t.numel() and span >= 2**31:
            raise ValueError(f"{name} spans 2**31 elements or more; not supported")
        if min(t.stride()) < 0:
            raise ValueError(f"{name} has a negative stride {t.stride()}")


def _kernel_precision(precision: str) -> str:
    # Triton's name: "tf32" is its default, and what 16-bit operands get (they ignore it)
    return "tf32" if precision == "16bit" else precision


def matmul_fwd(a, b, bias, activation: str | None, c) -> torch.Tensor:
    """Write activation(a @ b + bias) into c (M x N, a's dtype, any strides)."""
    _check_inputs(a, b, bias, activation)
    check_tensor("c", c, ndim=2, contiguous=False)
    check_device("c", c)
    check_same("a", a, "c", c)
    m, k = a.shape
    n = b.shape[1]
    if tuple(c.shape) != (m, n):
        raise ValueError(f"c has shape {tuple(c.shape)}, expected ({m}, {n})")
    if m == 0 or n == 0:
        return c

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

    _matmul_kernel[grid](
        a, b, bias if bias is not None else a, c, m, n, k, a.stride(0), a.stride(1),
        b.stride(0), b.stride(1), c.stride(0), c.stride(1), HAS_BIAS=bias is not None,
        ACTIVATION=_ACTIVATION_CODE[activation or "none"],
        DOT_FP32=INTERPRET and a.dtype == torch.bfloat16,
        PRECISION=_kernel_precision(dot_precision(a.dtype)))
    return c


# ----------------------------------------------------- torch.library ops and the autograd rule
# `custom_op` + `register_fake` lets torch.compile trace the op; `register_autograd` is the
# custom-op form of an autograd.Function. The backward recomputes the pre-activation with this
# kernel, applies the activation's derivative with PyTorch elementwise ops, and computes
# da = dz @ b^T and db = a^T @ dz with this kernel on transposed views.


@torch.library.custom_op("lab::matmul", mutates_args=())
def _matmul_op(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None,
               activation: str) -> torch.Tensor:
    c = new_output((a.shape[0], b.shape[1]), dtype=a.dtype, device=a.device)
    return matmul_fwd(a, b, bias, activation, c)


@_matmul_op.register_fake
def _(a, b, bias, activation):
    _check_inputs(a, b, bias, activation)
    return a.new_empty((a.shape[0], b.shape[1]))


def _setup_context(ctx, inputs, output):
    a, b, bias, activation = inputs
    ctx.activation = activation
    ctx.has_bias = bias is not None
    ctx.save_for_backward(a, b, bias)


def _backward(ctx, dc):
    a, b, bias = ctx.saved_tensors
    dz = dc
    if ctx.activation != "none":
        z = _matmul_op(a, b, bias, "none").float()
        if ctx.activation == "relu":
            dz = dc.float() * (z > 0)
        else:
            approximate = "tanh" if ctx.activation == "gelu_tanh" else "none"
            dz = torch.ops.aten.gelu_backward(dc.float(), z, approximate=approximate)
        dz = dz.to(a.dtype)
    da = _matmul_op(dz, b.t(), None, "none") if ctx.needs_input_grad[0] else None
    db = _matmul_op(a.t(), dz, None, "none") if ctx.needs_input_grad[1] else None
    dbias = dz.float().sum(0).to(a.dtype) if ctx.has_bias else None
    return da, db, dbias, None


_matmul_op.register_autograd(_backward, setup_context=_setup_context)


# ------------------------------------------------------------------------------- public op


def matmul(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None,
           activation: str | None = None) -> torch.Tensor:
    """activation(a @ b + bias).

    a: (M, K), b: (K, N), any strides (b may be a transposed view such as weight.t()), one
    dtype of fp32/fp16/bf16; bias: (N,) or None; activation: None, "relu", "gelu" (erf) or
    "gelu_tanh". Returns a contiguous (M, N) tensor of a's dtype. Differentiable in a, b, bias.
    """
    _check_inputs(a, b, bias, activation)
    return _matmul_op(a, b, bias, activation or "none")


def flops(shape, *, backward: bool = False) -> int:
    """shape = (M, N, K): 2 M N K for the product; the backward does two such products."""
    m, n, k = shape
    return (4 if backward else 2) * m * n * k


def bytes_moved(shape, dtype: torch.dtype, *, backward: bool = False) -> int:
    """Each operand read once and the output written once (the floor; tiles re-read from L2)."""
    m, n, k = shape
    if backward:  # read a, b, dc; write da, db
        return (2 * m * k + 2 * k * n + m * n) * dtype.itemsize
    return (m * k + k * n + m * n + n) * dtype.itemsize


def compile_cases():
    """For `python -m lab.kernels.aot`: every config of each precision. bf16 with b row-major
    and transposed (a linear layer's weight.t()), each with the heaviest epilogue (bias + erf
    GELU) and none; fp16 and float32 (IEEE and TF32) row-major with that epilogue."""
    from .aot import cases

    out = []
    row_major = {"stride_ak": 1, "stride_bn": 1, "stride_cn": 1}
    transposed_b = {"stride_ak": 1, "stride_bk": 1, "stride_cn": 1}
    for dtype, precision, layouts, epilogues in (
            (torch.bfloat16, "16bit", (("", row_major), ("b^T", transposed_b)),
             ((False, 0), (True, 2))),
            (torch.float16, "16bit", (("", row_major),), ((True, 2),)),
            (torch.float32, "tf32", (("", row_major),), ((True, 2),)),
            (torch.float32, "ieee", (("", row_major),), ((True, 2),))):
        name = str(dtype).removeprefix("torch.") + (f" {precision}" if precision != "16bit"
                                                    else "")
        for layout, strides in layouts:
            for has_bias, activation in epilogues:
                variant = " ".join(filter(None, (layout, "bias+gelu" if has_bias else "")))
                args = dict.fromkeys(("a_ptr", "b_ptr", "bias_ptr", "c_ptr"), dtype) | strides
                out += cases(_matmul_kernel, name, args,
                             {"HAS_BIAS": has_bias, "ACTIVATION": activation, "DOT_FP32": False,
                              "PRECISION": _kernel_precision(precision)},
                             variant=variant, configs=_configs_for(precision, activation))
    return out
