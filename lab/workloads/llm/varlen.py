"""`llama-varlen`: the Llama-style decoder on batches whose sequence length changes every step.

Real text batches differ in length. A compiler that specialises on shapes then compiles again
(torch.compile's default marks a dimension dynamic after the second distinct size and compiles
once more; `dynamic=True` starts with a dynamic graph; `dynamic=False` compiles every length)
and JAX traces each new shape. The usual remedy is padding to a few bucket lengths: the shape
key `bucket` (0: none) pads each batch up to a multiple of it. Padding goes at the end and its
targets are -100, which cross-entropy ignores, so the causal model's loss over the real tokens
is the same padded or not; only the work and the number of shapes change.

A step is one pass over the fixed cycle (`ShapeCycle`), so a backend's first call holds all the
compiles the cycle causes, and steady-state samples time the same mix of lengths on each side.
Which compile setting runs is the backend's choice (default, dynamic=True, dynamic=False).
"""

from __future__ import annotations

import math

from ..base import ShapeCycle, Workload
from . import config as cfg

# Fractions of `seq`, minus 3 so lengths are not round numbers (drawn text rarely is): six
# batches, six distinct lengths, in no sorted order.
CYCLE_FRACTIONS = (0.5, 0.75, 1.0, 0.625, 0.875, 0.375)
IGNORE = -100  # target of a padded position: ignored by the loss (torch's default ignore_index)
PAD_TOKEN = 0  # what a padded input position holds; causal attention keeps it out of the rest


def cycle_lengths(seq: int) -> tuple[int, ...]:
    return tuple(max(1, round(seq * f) - 3) for f in CYCLE_FRACTIONS)


def padded_length(length: int, bucket: int) -> int:
    return length if bucket <= 0 else math.ceil(length / bucket) * bucket


def default_shape(device: str) -> dict:
    return {**cfg.default_shape(cfg.LLAMA, device), "bucket": 0}


def _model_shape(shape: dict) -> dict:
    return {k: v for k, v in shape.items() if k != "bucket"}


def flops(shape: dict, mode: str) -> float:
    """The llama flops of each batch at its padded length (padding is computed too)."""
    if mode not in ("infer", "train"):
        raise ValueError(f"llama-varlen has no {mode!r} mode")
    return sum(cfg.flops(cfg.LLAMA, {**_model_shape(shape), "seq": p}, mode)
               for p in _padded(shape))


def _padded(shape: dict) -> tuple[int, ...]:
    return tuple(padded_length(n, shape["bucket"]) for n in cycle_lengths(shape["seq"]))


def items_per_step(shape: dict) -> int:
    """Real (unpadded) tokens per cycle: padding is work, not throughput."""
    return shape["batch"] * sum(cycle_lengths(shape["seq"]))


def _token_batches(shape: dict, seed: int):
    """[(ids (batch, padded), target (batch, padded))] as torch int64 tensors on the CPU."""
    import torch

    from .torch_lm import token_data

    out = []
    for i, (length, padded) in enumerate(zip(cycle_lengths(shape["seq"]), _padded(shape),
                                             strict=True)):
        tokens = token_data(shape, shape["vocab"], seed + 100 * i, shape["batch"], length + 1)
        ids = torch.full((shape["batch"], padded), PAD_TOKEN, dtype=torch.int64)
        target = torch.full((shape["batch"], padded), IGNORE, dtype=torch.int64)
        ids[:, :length], target[:, :length] = tokens[:, :-1], tokens[:, 1:]
        out.append((ids, target))
    return out


def build_torch(shape: dict, mode: str, device: str, dtype: str, seed: int) -> ShapeCycle:
    from . import torch_lm

    if mode not in ("infer", "train"):
        raise ValueError(f"llama-varlen has no {mode!r} mode")
    task = torch_lm.build_task(cfg.LLAMA, _model_shape(shape), mode, device, dtype, seed)
    batches = [((ids.to(device),), target.to(device))
               for ids, target in _token_batches(shape, seed)]
    task.inputs, task.target = batches[0]
    return ShapeCycle(task=task, batches=batches, lengths=cycle_lengths(shape["seq"]),
                      padded=_padded(shape))


def masked_next_token_loss(logits, target):
    """Mean cross-entropy over the positions whose target is not IGNORE (as torch's)."""
    import jax
    import jax.numpy as jnp

    keep = target != IGNORE
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(log_p, jnp.where(keep, target, 0)[..., None], axis=-1)[..., 0]
    return -jnp.sum(jnp.where(keep, picked, 0.0)) / jnp.sum(keep)


def build_jax(shape: dict, mode: str, device: str, dtype: str, seed: int) -> ShapeCycle:
    import jax.numpy as jnp

    from . import llama_jax

    if mode not in ("infer", "train"):
        raise ValueError(f"llama-varlen has no {mode!r} mode")
    task = llama_jax.build_task(_model_shape(shape), mode, dtype, seed)
    task.loss_fn = masked_next_token_loss
    batches = [((jnp.asarray(ids.numpy(), jnp.int32),), jnp.asarray(target.numpy(), jnp.int32))
               for ids, target in _token_batches(shape, seed)]
    task.inputs, task.target = batches[0]
    return ShapeCycle(task=task, batches=batches, lengths=cycle_lengths(shape["seq"]),
                      padded=_padded(shape))


WORKLOAD = Workload(
    name="llama-varlen",
    summary="llama on a cycle of 6 sequence lengths per step (recompiles, retraces); "
            "--shape bucket=N pads to multiples of N",
    default_shape=default_shape,
    flops=flops,
    items_per_step=items_per_step,
    throughput_unit="tokens/s",
    builders={"torch": build_torch, "jax": build_jax},
    check_shape=lambda shape: cfg.shape_problem(cfg.LLAMA, _model_shape(shape)),
    zero_ok=("bucket",),  # 0: no padding, the default
    # the cycle's longest padded batch is the step's peak: batches run one after another
    footprint=lambda shape, mode: cfg.footprint(
        cfg.LLAMA, {**_model_shape(shape), "seq": max(_padded(shape))}, mode),
)
