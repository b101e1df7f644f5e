"""A Llama 3 shape (Llama-3.2-1B's config: RoPE with llama3 scaling, RMSNorm, SwiGLU,
grouped-query attention) from `transformers`, random weights, and the same decoder in JAX
with the torch weights copied in: train, infer, generate."""

from __future__ import annotations

from ..base import GENERATE_MODE, STEP_MODES, Workload
from . import config as cfg


def build_torch(shape: dict, mode: str, device: str, dtype: str, seed: int):
    from . import torch_lm

    return torch_lm.build_task(cfg.LLAMA, shape, mode, device, dtype, seed)


def build_jax(shape: dict, mode: str, device: str, dtype: str, seed: int):
    from . import llama_jax

    return llama_jax.build_task(shape, mode, dtype, seed)


WORKLOAD = Workload(
    name="llama",
    summary="Llama-3.2-1B config, random weights (cuda: the real 16 layers x 2048, 32/8 "
            "heads, vocab 128256; cpu: 2 x 256, 8/2 heads, vocab 8192; --full-size: the real "
            "one anywhere; --shape resizes it)",
    default_shape=lambda device: cfg.default_shape(cfg.LLAMA, device),
    flops=lambda shape, mode: cfg.flops(cfg.LLAMA, shape, mode),
    items_per_step=lambda shape: cfg.tokens_per_step(shape, "train"),
    throughput_unit="tokens/s",
    builders={"torch": build_torch, "jax": build_jax},
    modes=(*STEP_MODES, GENERATE_MODE),
    generated_items=lambda shape: cfg.tokens_per_step(shape, GENERATE_MODE),
    check_shape=lambda shape: cfg.shape_problem(cfg.LLAMA, shape),
    footprint=lambda shape, mode: cfg.footprint(cfg.LLAMA, shape, mode),
)
