"""Keras 3 on its TensorFlow backend (`keras-tf-eager`, `keras-tf-jit`: XLA);
the sides are lab.compile.keras_common's, threads and caches TensorFlow's (lab.compile.tf)."""

from __future__ import annotations

from lab.compile import keras_common as BASE  # noqa: N812 (the registry's name for it)
from lab.compile import tf as _tf

SIDES = BASE.sides("tf")
support = _tf.support
set_threads = _tf.set_threads
cache_env = _tf.cache_env


def versions() -> dict:
    return {**BASE.versions(), **_tf.versions()}


def process_env(threads: int, device: str) -> dict:
    return {**_tf.process_env(threads, device), **BASE.keras_env(),
            "KERAS_BACKEND": "tensorflow"}
