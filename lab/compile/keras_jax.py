"""Keras 3 on its JAX backend (`keras-jax-eager`, `keras-jax-jit`: jax.jit, XLA); the sides
are lab.compile.keras_common's, threads and caches JAX's (lab.compile.jax)."""

from __future__ import annotations

from lab.compile import jax as _jax
from lab.compile import keras_common as BASE  # noqa: N812 (the registry's name for it)

SIDES = BASE.sides("jax")
support = _jax.support
set_threads = _jax.set_threads
cache_env = _jax.cache_env


def versions() -> dict:
    return {**BASE.versions(), **_jax.versions()}


def process_env(threads: int, device: str) -> dict:
    return {**_jax.process_env(threads, device), **BASE.keras_env(), "KERAS_BACKEND": "jax"}
