"""GPT-2 (the 124M config) from `transformers`, random weights: train, infer, generate."""

from __future__ import annotations

from ..base import GENERATE_MODE, STEP_MODES, Workload
from . import config as cfg


def build_torch(shape: dict, mode: str, device: str, dtype: str, seed: int):
    from . import torch_lm

    return torch_lm.build_task(cfg.GPT2, shape, mode, device, dtype, seed)


def build_jax(shape: dict, mode: str, device: str, dtype: str, seed: int):
    from . import gpt2_jax

    return gpt2_jax.build_task(shape, mode, dtype, seed)


WORKLOAD = Workload(
    name="gpt2",
    summary="GPT-2 from the 124M config, random weights (cuda: the real 12 layers x 768; cpu: "
            "2 x 256, vocab 8192; --full-size: the real one anywhere; --shape resizes it)",
    default_shape=lambda device: cfg.default_shape(cfg.GPT2, device),
    # train/infer tokens; a generate step's produced tokens are `generated_items`
    flops=lambda shape, mode: cfg.flops(cfg.GPT2, shape, mode),
    items_per_step=lambda shape: cfg.tokens_per_step(shape, "train"),
    throughput_unit="tokens/s",
    builders={"torch": build_torch, "jax": build_jax},
    modes=(*STEP_MODES, GENERATE_MODE),
    generated_items=lambda shape: cfg.tokens_per_step(shape, GENERATE_MODE),
    check_shape=lambda shape: cfg.shape_problem(cfg.GPT2, shape),
    footprint=lambda shape, mode: cfg.footprint(cfg.GPT2, shape, mode),
)
