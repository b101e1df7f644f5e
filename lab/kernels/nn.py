"""Drop-in functions for the transformer block's `torch-triton` backend.

Each takes the arguments of the eager op it replaces and calls one of the lab's kernels; all are
differentiable. Inputs that a kernel needs contiguous are made so here (a no-op when they
already are), since the eager ops they replace accept any layout.

    layer_norm(x, weight, bias, eps)              F.layer_norm over the last dim
    bias_gelu(x, bias)                            F.gelu(x + bias, approximate="tanh")
    attention(q, k, v, causal)                    F.scaled_dot_product_attention(..., is_causal)
                                                  q, k, v: (batch, heads, seq, head_dim)
    softmax(x)                                    torch.softmax(x, dim=-1)
    matmul(a, b, bias=None, activation=None)      activation(a @ b + bias), a (M, K), b (K, N)
    linear(x, weight, bias=None, activation=None) F.linear: x (..., in), weight (out, in)
    ops()                                         the four the block calls, as a namespace
"""

from __future__ import annotations

import types

import torch

from .attention import attention as _attention
from .gelu import bias_gelu as _bias_gelu
from .layernorm import layernorm as _layernorm
from .matmul import matmul as _matmul
from .softmax import softmax as _softmax


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               eps: float = 1e-5) -> torch.Tensor:
    return _layernorm(x.contiguous(), weight.contiguous(),
                      bias.contiguous() if bias is not None else None, eps)


def bias_gelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return _bias_gelu(x.contiguous(), bias.contiguous(), "tanh")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              causal: bool = False) -> torch.Tensor:
    return _attention(q, k, v, causal)


def softmax(x: torch.Tensor) -> torch.Tensor:
    return _softmax(x.contiguous())


def matmul(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None,
           activation: str | None = None) -> torch.Tensor:
    return _matmul(a, b, bias, activation)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           activation: str | None = None) -> torch.Tensor:
    """x @ weight^T + bias over the last dim of x; weight^T is a strided view, not a copy."""
    out_features, in_features = weight.shape
    y = _matmul(x.reshape(-1, in_features), weight.t(), bias, activation)
    return y.reshape(*x.shape[:-1], out_features)


def ops() -> types.SimpleNamespace:
    """The namespace the transformer block calls (layer_norm, linear, bias_gelu, attention)."""
    return types.SimpleNamespace(layer_norm=layer_norm, linear=linear, bias_gelu=bias_gelu,
                                 attention=attention)
