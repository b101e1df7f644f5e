"""Keras 3 on its PyTorch backend (`keras-torch-eager`, `keras-torch-jit`: Keras wraps its step
function in torch.compile); the sides are lab.compile.keras_common's, threads and caches
torch's (lab.compile.torch)."""

from __future__ import annotations

from lab.compile import keras_common as BASE  # noqa: N812 (the registry's name for it)
from lab.compile import torch as _torch

SIDES = BASE.sides("torch")
support = _torch.support
set_threads = _torch.set_threads
cache_env = _torch.cache_env


def versions() -> dict:
    return {**BASE.versions(), **_torch.versions()}


def process_env(threads: int, device: str) -> dict:
    return {**_torch.process_env(threads, device), **BASE.keras_env(), "KERAS_BACKEND": "torch"}
