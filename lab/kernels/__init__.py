"""Triton kernels for the hot ops, one op per module, each measured against its reference.

Every module `lab.kernels.<module>` holds, top to bottom: `reference(...)`, the op in plain
PyTorch with its byte and flop count; the `@triton.jit` kernels; launchers that check shape,
dtype, device and layout (TypeError / ValueError naming the argument) and return early on
empty input; the op registered with `torch.library.custom_op` as `lab::<name>` (with
`register_fake` so torch.compile can trace it, and `register_autograd` where it has a
backward); the public function, named like the op; and `flops(shape, ...)` /
`bytes_moved(shape, dtype, ...)`.

Kernels run on CUDA tensors, or on CPU tensors under the Triton interpreter: set
TRITON_INTERPRET=1 before the kernel modules are imported (Triton reads it when a kernel is
defined).

`DESCRIPTIONS` lists the ops without importing torch or Triton; `KERNELS` maps the same names to
their modules and imports them on first access:

    from lab.kernels import KERNELS
    KERNELS["softmax"].softmax(x)

Drop-ins for the transformer block's `torch-triton` backend live in `lab.kernels.nn`:

    layer_norm(x, weight, bias, eps) -> Tensor     x: (..., d); weight, bias: (d,) or bias None
    bias_gelu(x, bias) -> Tensor                   gelu_tanh(x + bias); x: (..., d), bias: (d,)
    attention(q, k, v, causal) -> Tensor           (batch, heads, seq, head_dim), head_dim 16-128
    softmax(x) -> Tensor                           over the last dim
    matmul(a, b, bias=None, activation=None)       (M, K) @ (K, N) (+ bias) then None/"relu"/
                                                   "gelu"/"gelu_tanh"
    linear(x, weight, bias=None, activation=None)  as F.linear: x (..., in), weight (out, in)
    ops() -> SimpleNamespace(layer_norm, linear, bias_gelu, attention)
"""

from __future__ import annotations

# op name -> (module under lab.kernels, one-line description)
_OPS: dict[str, tuple[str, str]] = {
    "softmax": ("softmax", "row-wise softmax over the last dim, any row length; fwd + bwd"),
    "layernorm": ("layernorm", "LayerNorm over the last dim; fwd + bwd (dx, dweight, dbias)"),
    "rmsnorm": ("rmsnorm", "RMSNorm over the last dim; fwd + bwd (dx, dweight)"),
    "bias_gelu": ("gelu", "fused bias + GELU (tanh or erf); fwd + bwd (dx, dbias)"),
    "swiglu": ("swiglu", "SwiGLU gate silu(gate) * up; fwd + bwd"),
    "cross_entropy": ("cross_entropy",
                      "cross-entropy over a large vocabulary; loss and gradient in one pass"),
    "matmul": ("matmul", "autotuned matmul with fused bias + relu/gelu epilogue; fwd + bwd"),
    "attention": ("attention",
                  "flash attention forward and backward (Triton), causal or not, head_dim 16-128"),
}

DESCRIPTIONS: dict[str, str] = {name: desc for name, (_module, desc) in _OPS.items()}


def module_name(op: str) -> str:
    """The importable module of an op, e.g. module_name("bias_gelu") == "lab.kernels.gelu"."""
    return f"{__name__}.{_OPS[op][0]}"


def __getattr__(name: str):
    # KERNELS imports torch and Triton, so it is built on first access, not at import.
    if name == "KERNELS":
        import importlib

        kernels = {op: importlib.import_module(module_name(op)) for op in _OPS}
        globals()["KERNELS"] = kernels
        return kernels
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
