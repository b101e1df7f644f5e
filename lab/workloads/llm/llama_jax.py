"""The Llama-style decoder in plain JAX, computing what `transformers`' LlamaForCausalLM does.

Weights are copied from the torch model of the same shape and seed (built on the CPU in
float32), so a test can demand the same logits and the same greedy tokens. Layout: linear
weights stored (in, out) for `x @ w`; per-layer dicts in a list (a pytree) named after the
torch modules they come from. With tied embeddings (Llama-3.2-1B) there is one matrix, used
for the lookup and, transposed, as the LM head, so training updates it from both uses as torch
does.

RoPE's inverse frequencies are copied from the torch module's buffer rather than recomputed,
so the llama3 frequency scaling (or any other rope type a config names) cannot diverge; they
and the scaling factor are constants, not parameters.

Generation uses a fixed-size KV cache `{"k", "v": (layers, batch, kv_heads, max_len, head_dim),
"pos": int32 scalar}`: the position is an array, not a Python int, so the jitted decode step
is traced once for every token (the prefill, on the prompt's shape, once more).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..base import JaxTask
from . import config as cfg


@dataclass(frozen=True)
class Dims:
    heads: int
    kv_heads: int
    head_dim: int
    eps: float  # RMSNorm epsilon
    attention_scaling: float  # RoPE's cos/sin factor (1.0 for default and llama3 types)


def _rms_norm(x, weight, eps: float):
    import jax
    import jax.numpy as jnp

    # as LlamaRMSNorm: the statistic in float32, the weight applied in the input's dtype
    h = x.astype(jnp.float32)
    h = h * jax.lax.rsqrt(jnp.mean(jnp.square(h), axis=-1, keepdims=True) + eps)
    return weight * h.astype(x.dtype)


def _rope(x, cos, sin):
    """x * cos + rotate_half(x) * sin, rotate_half(x) = (-x2, x1) over the two halves."""
    import jax.numpy as jnp

    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def forward(params, ids, cache=None, *, dims: Dims, inv_freq: np.ndarray,
            last_only: bool = False):
    """Logits (batch, seq, vocab) of token ids (batch, seq); with a cache, the tokens sit at
    positions cache["pos"]... and attend to everything cached before them, and the result is
    (logits, updated cache)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    b, t = ids.shape
    nh, nkv, hd = dims.heads, dims.kv_heads, dims.head_dim
    x = params["embed"][ids]
    start = jnp.zeros((), jnp.int32) if cache is None else cache["pos"]
    positions = start + jnp.arange(t, dtype=jnp.int32)
    # frequencies in float32 whatever the model's dtype, as LlamaRotaryEmbedding does
    freqs = positions[:, None].astype(jnp.float32) * jnp.asarray(inv_freq, jnp.float32)[None]
    angles = jnp.concatenate([freqs, freqs], axis=-1)
    cos = (jnp.cos(angles) * dims.attention_scaling).astype(x.dtype)
    sin = (jnp.sin(angles) * dims.attention_scaling).astype(x.dtype)
    if cache is None:
        key_positions = positions
    else:
        key_positions = jnp.arange(cache["k"].shape[3], dtype=jnp.int32)
    # causal: a query sees keys at its position and before (empty cache slots come after)
    visible = key_positions[None, :] <= positions[:, None]
    new_k, new_v = (None, None) if cache is None else (cache["k"], cache["v"])

    for i, layer in enumerate(params["layers"]):
        h = _rms_norm(x, layer["input_layernorm"], dims.eps)
        q = (h @ layer["q_proj"]).reshape(b, t, nh, hd).transpose(0, 2, 1, 3)
        k = (h @ layer["k_proj"]).reshape(b, t, nkv, hd).transpose(0, 2, 1, 3)
        v = (h @ layer["v_proj"]).reshape(b, t, nkv, hd).transpose(0, 2, 1, 3)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        if cache is not None:
            at = (i, 0, 0, start, 0)
            new_k = lax.dynamic_update_slice(new_k, k[None].astype(new_k.dtype), at)
            new_v = lax.dynamic_update_slice(new_v, v[None].astype(new_v.dtype), at)
            k, v = new_k[i], new_v[i]
        # grouped-query attention: each KV head serves heads // kv_heads query heads
        k, v = jnp.repeat(k, nh // nkv, axis=1), jnp.repeat(v, nh // nkv, axis=1)
        scores = (q @ k.transpose(0, 1, 3, 2)) * (hd ** -0.5)
        scores = jnp.where(visible, scores, -jnp.inf)
        probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(q.dtype)
        y = (probs @ v).transpose(0, 2, 1, 3).reshape(b, t, nh * hd)
        x = x + y @ layer["o_proj"]
        h = _rms_norm(x, layer["post_attention_layernorm"], dims.eps)
        x = x + (jax.nn.silu(h @ layer["gate_proj"]) * (h @ layer["up_proj"])) @ layer["down_proj"]

    x = _rms_norm(x[:, -1:] if last_only else x, params["norm"], dims.eps)
    head = params["lm_head"] if "lm_head" in params else params["embed"].T
    logits = x @ head
    if cache is None:
        return logits
    return logits, {"k": new_k, "v": new_v, "pos": start + t}


def params_from_torch(lm) -> tuple[dict, Dims, np.ndarray]:
    """(params, dims, inv_freq) of a `transformers` LlamaForCausalLM, as float32 numpy."""
    def a(t):
        return t.detach().float().cpu().numpy().copy()

    config, body = lm.config, lm.model
    layers = []
    for block in body.layers:
        attn, mlp = block.self_attn, block.mlp
        layer = {name: a(getattr(attn, name).weight).T
                 for name in ("q_proj", "k_proj", "v_proj", "o_proj")}
        layer.update({name: a(getattr(mlp, name).weight).T
                      for name in ("gate_proj", "up_proj", "down_proj")})
        layer["input_layernorm"] = a(block.input_layernorm.weight)
        layer["post_attention_layernorm"] = a(block.post_attention_layernorm.weight)
        layers.append(layer)
    params = {"embed": a(body.embed_tokens.weight), "layers": layers,
              "norm": a(body.norm.weight)}
    if lm.lm_head.weight is not body.embed_tokens.weight:
        params["lm_head"] = a(lm.lm_head.weight).T
    dims = Dims(heads=config.num_attention_heads, kv_heads=config.num_key_value_heads,
                head_dim=config.head_dim, eps=float(config.rms_norm_eps),
                attention_scaling=float(body.rotary_emb.attention_scaling))
    return params, dims, a(body.rotary_emb.inv_freq)


def next_token_loss(logits, target):
    """Mean cross-entropy against the next token, in float32 as the torch loss computes it."""
    import jax
    import jax.numpy as jnp

    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_p, target[..., None], axis=-1))


def torch_source(family: cfg.Family, shape: dict, mode: str, seed: int):
    """The torch task (CPU, float32) whose weights and tokens a JAX task copies."""
    import importlib.util

    for package in ("torch", "transformers"):
        if importlib.util.find_spec(package) is None:
            raise ImportError(f"the JAX llama copies its weights from the `transformers` torch "
                              f"model: install {package} (pip install perflab[torch,llm])")
    from . import torch_lm

    return torch_lm.build_task(family, shape, mode, "cpu", "float32", seed)


def build_task(shape: dict, mode: str, dtype: str, seed: int):
    """A JaxTask for train / infer, a GenerateTask for generate."""
    import jax.numpy as jnp

    from .. import weights
    from .generate import jax_generate_task

    source = torch_source(cfg.LLAMA, shape, mode, seed)
    lm = source.model.lm
    params, dims, inv_freq = params_from_torch(lm)
    params = weights.jax_cast(params, dtype)
    if mode == "generate":
        kv_shape = (len(params["layers"]), shape["batch"], dims.kv_heads,
                    shape["prompt"] + shape["new_tokens"], dims.head_dim)
        model = functools.partial(forward, dims=dims, inv_freq=inv_freq, last_only=True)
        return jax_generate_task(model, params, source.prompt.numpy(), shape["new_tokens"],
                                 kv_shape, dtype)
    apply = functools.partial(forward, dims=dims, inv_freq=inv_freq)
    ids, target = (jnp.asarray(t.numpy(), jnp.int32) for t in (source.inputs[0], source.target))
    return JaxTask(apply=apply, params=params, inputs=(ids,), target=target,
                   loss_fn=next_token_loss, optimizer=source.optimizer, weights_source="torch")
