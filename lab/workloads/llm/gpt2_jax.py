"""GPT-2 in plain JAX, computing what `transformers`' GPT2LMHeadModel does, with the torch
model's weights copied in (as `llama_jax` does for the Llama-style decoder).

GPT-2's linear layers are `Conv1D` modules whose weights are already stored (in, out), so they
are copied untransposed; the LM head is the token embedding, transposed. Pre-LayerNorm blocks,
learned positions, tanh-GELU ("gelu_new"), attention scaled by 1/sqrt(head_dim). The KV cache
for generation has the layout of `llama_jax`'s.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ..base import JaxTask
from . import config as cfg
from .llama_jax import next_token_loss


@dataclass(frozen=True)
class Dims:
    heads: int
    eps: float  # LayerNorm epsilon


def _layer_norm(x, p, eps: float):
    import jax
    import jax.numpy as jnp

    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * p["weight"] + p["bias"]


def _linear(x, p):
    return x @ p["weight"] + p["bias"]


def forward(params, ids, cache=None, *, dims: Dims, last_only: bool = False):
    """Logits of token ids (batch, seq); with a cache, (logits, updated cache)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    b, t = ids.shape
    nh = dims.heads
    start = jnp.zeros((), jnp.int32) if cache is None else cache["pos"]
    positions = start + jnp.arange(t, dtype=jnp.int32)
    x = params["wte"][ids] + params["wpe"][positions][None]
    hd = x.shape[-1] // nh
    key_positions = positions if cache is None else jnp.arange(cache["k"].shape[3])
    visible = key_positions[None, :] <= positions[:, None]
    new_k, new_v = (None, None) if cache is None else (cache["k"], cache["v"])

    for i, layer in enumerate(params["h"]):
        h = _layer_norm(x, layer["ln_1"], dims.eps)
        q, k, v = (z.reshape(b, t, nh, hd).transpose(0, 2, 1, 3)
                   for z in jnp.split(_linear(h, layer["c_attn"]), 3, axis=-1))
        if cache is not None:
            at = (i, 0, 0, start, 0)
            new_k = lax.dynamic_update_slice(new_k, k[None].astype(new_k.dtype), at)
            new_v = lax.dynamic_update_slice(new_v, v[None].astype(new_v.dtype), at)
            k, v = new_k[i], new_v[i]
        scores = (q @ k.transpose(0, 1, 3, 2)) / jnp.sqrt(jnp.asarray(hd, q.dtype))
        probs = jax.nn.softmax(jnp.where(visible, scores, -jnp.inf), axis=-1)
        y = (probs @ v).transpose(0, 2, 1, 3).reshape(b, t, nh * hd)
        x = x + _linear(y, layer["attn_c_proj"])
        h = _layer_norm(x, layer["ln_2"], dims.eps)
        x = x + _linear(jax.nn.gelu(_linear(h, layer["c_fc"]), approximate=True),
                        layer["mlp_c_proj"])

    x = _layer_norm(x[:, -1:] if last_only else x, params["ln_f"], dims.eps)
    logits = x @ params["wte"].T
    if cache is None:
        return logits
    return logits, {"k": new_k, "v": new_v, "pos": start + t}


def params_from_torch(lm) -> tuple[dict, Dims]:
    """(params, dims) of a `transformers` GPT2LMHeadModel, as float32 numpy."""
    def a(t):
        return t.detach().float().cpu().numpy().copy()

    def wb(module):
        return {"weight": a(module.weight), "bias": a(module.bias)}

    body = lm.transformer
    layers = [{"ln_1": wb(blk.ln_1), "c_attn": wb(blk.attn.c_attn),
               "attn_c_proj": wb(blk.attn.c_proj), "ln_2": wb(blk.ln_2),
               "c_fc": wb(blk.mlp.c_fc), "mlp_c_proj": wb(blk.mlp.c_proj)} for blk in body.h]
    if lm.lm_head.weight is not body.wte.weight:
        raise ValueError("GPT-2's LM head is expected to be tied to its token embedding")
    params = {"wte": a(body.wte.weight), "wpe": a(body.wpe.weight), "h": layers,
              "ln_f": wb(body.ln_f)}
    return params, Dims(heads=lm.config.n_head, eps=float(lm.config.layer_norm_epsilon))


def build_task(shape: dict, mode: str, dtype: str, seed: int):
    """A JaxTask for train / infer, a GenerateTask for generate."""
    import jax.numpy as jnp

    from .. import weights
    from .generate import jax_generate_task
    from .llama_jax import torch_source

    source = torch_source(cfg.GPT2, shape, mode, seed)
    params, dims = params_from_torch(source.model.lm)
    params = weights.jax_cast(params, dtype)
    if mode != "generate":
        ids, target = (jnp.asarray(t.numpy(), jnp.int32) for t in (source.inputs[0],
                                                                   source.target))
        return JaxTask(apply=functools.partial(forward, dims=dims), params=params,
                       inputs=(ids,), target=target, loss_fn=next_token_loss,
                       optimizer=source.optimizer, weights_source="torch")

    kv_shape = (len(params["h"]), shape["batch"], dims.heads,
                shape["prompt"] + shape["new_tokens"], shape["hidden"] // dims.heads)
    return jax_generate_task(functools.partial(forward, dims=dims, last_only=True), params,
                             source.prompt.numpy(), shape["new_tokens"], kv_shape, dtype)
