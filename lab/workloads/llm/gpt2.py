"""GPT-2 (the 124M config) from `transformers`, random weights: train, infer, generate."""

from __future__ import annotations

from ..base import Workload
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
            "2 x 256, vocab 8192; --shape layers=,hidden=,heads=,vocab= resize it)",
    default_shape=lambda device: cfg.default_shape(cfg.GPT2, device),
    # items_per_step cannot see the mode: these are train/infer tokens; a generate cell's
    # tokens are cfg.tokens_per_step(shape, "generate")
    flops=lambda shape, mode: cfg.flops(cfg.GPT2, shape, mode),
    items_per_step=lambda shape: cfg.tokens_per_step(shape, "train"),
    throughput_unit="tokens/s",
    builders={"torch": build_torch, "jax": build_jax},
)
