"""A GPT-style transformer block: pre-LayerNorm causal self-attention + GELU MLP, residuals.

The block calls its ops through an `ops` namespace so the `torch-triton` backend can swap the
lab's Triton kernels in for the eager ops without a second definition of the block.
"""

from __future__ import annotations

import types

from . import weights
from .base import Footprint, JaxTask, TfTask, TorchTask, Workload


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


def check_shape(shape: dict) -> str | None:
    if shape["d_model"] % shape["heads"]:
        return f"d_model={shape['d_model']} is not divisible by heads={shape['heads']}"
    return None


def footprint(shape: dict, mode: str) -> Footprint:
    """Memory estimate's inputs: 12 d^2 + 13 d parameters (qkv, projection, the 4d MLP, two
    LayerNorms); one layer's activations, 16 d + heads x seq elements per token (after
    Korthikanti et al. 2022 without dropout, as lab.workloads.llm.config.footprint counts),
    kept for backward in training and about as many live in inference (the layer is the
    whole model)."""
    b, t, d = shape["batch"], shape["seq"], shape["d_model"]
    tokens = b * t
    return Footprint(12 * d * d + 13 * d, tokens * (16 * d + shape["heads"] * t),
                     optimizer="adam")


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


# ---------------------------------------------------------------- TensorFlow and JAX
# The same block, op for op, with the torch block's weights and data copied in
# (lab.workloads.weights). Linear weights are stored (in, out) as both frameworks prefer;
# attention is written out (scores, causal mask, softmax, weighted sum) because neither
# framework has a fused causal attention that runs on every device and version the lab
# supports. LayerNorm eps 1e-5 and tanh-GELU match the torch block.
LN_EPS = 1e-5
_LINEARS = ("qkv", "proj", "up", "down")


def _param_specs(shape: dict) -> dict:
    c = shape["d_model"]
    specs = {}
    for name, (fan_out, fan_in) in {"ln1": (c, None), "qkv": (3 * c, c), "proj": (c, c),
                                    "ln2": (c, None), "up": (4 * c, c),
                                    "down": (c, 4 * c)}.items():
        if fan_in is None:
            specs[f"{name}.weight"] = ((fan_out,), "ones", 0)
            specs[f"{name}.bias"] = ((fan_out,), "zeros", 0)
        else:
            specs[f"{name}.weight"] = ((fan_out, fan_in), "linear", fan_in)
            specs[f"{name}.bias"] = ((fan_out,), "linear", fan_in)
    return specs


def _data(rng, shape: dict):
    size = (shape["batch"], shape["seq"], shape["d_model"])
    x, target = (rng.standard_normal(size).astype("float32") for _ in range(2))
    return (x,), target


def _arrays(shape: dict, mode: str, seed: int) -> dict:
    arr = weights.arrays(build_torch, _param_specs, _data, shape, mode, seed)
    arr.params = {k: (v.T if k.split(".")[0] in _LINEARS and k.endswith(".weight") else v)
                  for k, v in arr.params.items()}
    return arr


def _keras_block_class():
    import keras
    import numpy as np
    import tensorflow as tf

    class TransformerBlock(keras.Model):
        """The block as a Keras model whose weights are named and ordered as torch's."""

        def __init__(self, d_model: int, heads: int, params: dict):
            super().__init__()
            if d_model % heads:
                raise ValueError(f"d_model={d_model} is not divisible by heads={heads}")
            self.heads = heads
            self.w = {}
            for name, value in params.items():  # creation order = torch's parameter order
                self.w[name] = self.add_weight(name=name.replace(".", "_"), shape=value.shape,
                                               initializer=keras.initializers.Constant(value))

        def _layer_norm(self, x, name):
            mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
            return (x - mean) * tf.math.rsqrt(var + LN_EPS) * self.w[f"{name}.weight"] \
                + self.w[f"{name}.bias"]

        def _linear(self, x, name, bias=True):
            y = tf.matmul(x, self.w[f"{name}.weight"])
            return y + self.w[f"{name}.bias"] if bias else y

        def call(self, x, training=False):
            b, t, c = x.shape
            hd = c // self.heads
            h = self._layer_norm(x, "ln1")
            q, k, v = tf.split(self._linear(h, "qkv"), 3, axis=-1)
            q, k, v = (tf.transpose(tf.reshape(z, (b, t, self.heads, hd)), (0, 2, 1, 3))
                       for z in (q, k, v))
            scores = tf.matmul(q, k, transpose_b=True) / np.sqrt(hd).astype("float32")
            causal = tf.linalg.band_part(tf.ones((t, t), tf.bool), -1, 0)
            scores = tf.where(causal, scores, tf.constant(-np.inf, scores.dtype))
            y = tf.matmul(tf.nn.softmax(scores, axis=-1), v)
            y = tf.reshape(tf.transpose(y, (0, 2, 1, 3)), (b, t, c))
            x = x + self._linear(y, "proj")
            h = self._layer_norm(x, "ln2")
            h = tf.nn.gelu(self._linear(h, "up", bias=False) + self.w["up.bias"],
                           approximate=True)
            return x + self._linear(h, "down")

    return TransformerBlock


def build_tf(shape: dict, mode: str, device: str, dtype: str, seed: int) -> TfTask:
    import tensorflow as tf

    from .losses import tf_mse

    arr = _arrays(shape, mode, seed)

    def make(dt: str) -> TfTask:
        with weights.keras_floatx(dt):
            model = _keras_block_class()(shape["d_model"], shape["heads"], arr.params)
        x, target = tf.constant(arr.inputs[0], dt), tf.constant(arr.target, dt)
        return TfTask(model=model, inputs=(x,), target=target, loss_fn=tf_mse,
                      optimizer="adam", rebuild=make, weights_source=arr.source)

    return make(dtype)


def jax_apply(params, x, heads: int):
    import jax
    import jax.numpy as jnp

    def layer_norm(x, name):
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + LN_EPS) * params[f"{name}.weight"] \
            + params[f"{name}.bias"]

    def linear(x, name):
        return x @ params[f"{name}.weight"] + params[f"{name}.bias"]

    b, t, c = x.shape
    hd = c // heads
    h = layer_norm(x, "ln1")
    q, k, v = jnp.split(linear(h, "qkv"), 3, axis=-1)
    q, k, v = (z.reshape(b, t, heads, hd).transpose(0, 2, 1, 3) for z in (q, k, v))
    scores = (q @ k.transpose(0, 1, 3, 2)) / jnp.sqrt(jnp.asarray(hd, x.dtype))
    causal = jnp.tril(jnp.ones((t, t), bool))
    scores = jnp.where(causal, scores, -jnp.inf)
    y = (jax.nn.softmax(scores, axis=-1) @ v).transpose(0, 2, 1, 3).reshape(b, t, c)
    x = x + linear(y, "proj")
    h = jax.nn.gelu(linear(layer_norm(x, "ln2"), "up"), approximate=True)
    return x + linear(h, "down")


def build_jax(shape: dict, mode: str, device: str, dtype: str, seed: int) -> JaxTask:
    import functools

    from .losses import jax_mse

    if shape["d_model"] % shape["heads"]:
        raise ValueError(f"d_model={shape['d_model']} is not divisible by heads={shape['heads']}")
    arr = _arrays(shape, mode, seed)
    return JaxTask(apply=functools.partial(jax_apply, heads=shape["heads"]),
                   params=weights.jax_cast(arr.params, dtype),
                   inputs=weights.jax_cast(arr.inputs, dtype),
                   target=weights.jax_cast(arr.target, dtype), loss_fn=jax_mse,
                   optimizer="adam", weights_source=arr.source)


WORKLOAD = Workload(
    name="transformer",
    summary="GPT block: pre-LN causal attention + GELU MLP (sizes: batch, seq, d_model, heads)",
    default_shape=default_shape,
    flops=flops,
    items_per_step=lambda shape: shape["batch"] * shape["seq"],
    throughput_unit="tokens/s",
    builders={"torch": build_torch, "tf": build_tf, "jax": build_jax},
    check_shape=check_shape,
    footprint=footprint,
)
