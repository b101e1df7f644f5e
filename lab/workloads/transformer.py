"""A GPT-style transformer block: pre-LayerNorm causal self-attention + GELU MLP, residuals.

The block calls its ops through an `ops` namespace so the `torch-triton` backend can swap the
lab's Triton kernels in for the eager ops without a second definition of the block.
"""

from __future__ import annotations

import types

from .base import TorchTask, Workload


def default_shape(device: str) -> dict:
    if device == "cuda":
        return {"batch": 8, "seq": 1024, "d_model": 1024, "heads": 16}
    return {"batch": 4, "seq": 128, "d_model": 256, "heads": 4}


def flops(shape: dict, mode: str) -> float:
    b, t, c = shape["batch"], shape["seq"], shape["d_model"]
    projections = 2 * b * t * c * (3 * c + c)  # qkv and output projection
    attention = 2 * 2 * b * t * t * c  # q @ k^T and p @ v, full (unmasked) as computed
    mlp = 2 * 2 * b * t * c * (4 * c)  # up and down projections, ratio 4
    forward = projections + attention + mlp
    return float(forward if mode == "infer" else 3 * forward)


def torch_ops():
    """The eager ops the block uses by default."""
    import torch.nn.functional as F

    return types.SimpleNamespace(
        layer_norm=lambda x, w, b, eps: F.layer_norm(x, (x.shape[-1],), w, b, eps),
        linear=F.linear,
        bias_gelu=lambda x, bias: F.gelu(x + bias, approximate="tanh"),
        attention=lambda q, k, v, causal: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
    )


def _block_class():
    import torch
    import torch.nn as nn

    class TransformerBlock(nn.Module):
        def __init__(self, d_model: int, heads: int, ops=None):
            super().__init__()
            if d_model % heads:
                raise ValueError(f"d_model={d_model} is not divisible by heads={heads}")
            self.heads = heads
            self.ops = ops or torch_ops()
            self.ln1 = nn.LayerNorm(d_model)
            self.qkv = nn.Linear(d_model, 3 * d_model)
            self.proj = nn.Linear(d_model, d_model)
            self.ln2 = nn.LayerNorm(d_model)
            self.up = nn.Linear(d_model, 4 * d_model)
            self.down = nn.Linear(4 * d_model, d_model)

        def forward(self, x):
            ops = self.ops
            b, t, c = x.shape
            h = ops.layer_norm(x, self.ln1.weight, self.ln1.bias, self.ln1.eps)
            q, k, v = ops.linear(h, self.qkv.weight, self.qkv.bias).split(c, dim=-1)
            # (b, t, c) -> (b, heads, t, head_dim)
            q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
            y = ops.attention(q.contiguous(), k.contiguous(), v.contiguous(), True)
            y = y.transpose(1, 2).reshape(b, t, c)
            x = x + ops.linear(y, self.proj.weight, self.proj.bias)
            h = ops.layer_norm(x, self.ln2.weight, self.ln2.bias, self.ln2.eps)
            h = ops.bias_gelu(ops.linear(h, self.up.weight, None), self.up.bias)
            return x + ops.linear(h, self.down.weight, self.down.bias)

    return TransformerBlock


def build_torch(shape: dict, mode: str, device: str, dtype: str, seed: int, ops=None) -> TorchTask:
    import torch

    torch.manual_seed(seed)
    model = _block_class()(shape["d_model"], shape["heads"], ops=ops)
    model = model.to(device=device, dtype=getattr(torch, dtype))
    gen = torch.Generator().manual_seed(seed + 1)
    size = (shape["batch"], shape["seq"], shape["d_model"])
    x = torch.randn(size, generator=gen).to(device=device, dtype=model.qkv.weight.dtype)
    target = torch.randn(size, generator=gen).to(device=device, dtype=x.dtype)
    return TorchTask(model=model, inputs=(x,), target=target,
                     loss_fn=torch.nn.functional.mse_loss, optimizer="adam")


WORKLOAD = Workload(
    name="transformer",
    summary="GPT block: pre-LN causal attention + GELU MLP (sizes: batch, seq, d_model, heads)",
    default_shape=default_shape,
    flops=flops,
    items_per_step=lambda shape: shape["batch"] * shape["seq"],
    throughput_unit="tokens/s",
    builders={"torch": build_torch},
)
