"""One set of weights and inputs for every framework.

The PyTorch builder of a workload is the single source of truth: when torch is installed, the
TensorFlow and JAX builders build the torch task on the CPU in float32 and copy its parameters
and data (transposed into each framework's layout), so all three frameworks compute on the very
same numbers and a test can demand that they agree. Without torch, `numpy_params` draws
parameters from the same distributions PyTorch's default initialisers use, so a TF- or JAX-only
install still runs (the values then differ from a torch cell's, the arithmetic does not).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class Arrays:
    """Numpy copies of a torch task: parameters by torch name, inputs, target, buffers."""

    params: dict[str, np.ndarray]
    inputs: tuple[np.ndarray, ...]
    target: np.ndarray | None
    buffers: dict[str, np.ndarray]  # e.g. BatchNorm running statistics
    source: str  # "torch" (copied from the torch builder) or "numpy" (same distributions)


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def from_torch(build_torch: Callable, shape: dict, mode: str, seed: int) -> Arrays:
    """Build the torch task on the CPU in float32 and copy everything out as numpy."""
    task = build_torch(shape, mode, "cpu", "float32", seed)
    model = task.model
    params = {name: p.detach().numpy().copy() for name, p in model.named_parameters()}
    buffers = {name: b.detach().numpy().copy() for name, b in model.named_buffers()
               if b.is_floating_point()}
    inputs = tuple(t.detach().numpy().copy() for t in task.inputs)
    target = None if task.target is None else task.target.detach().numpy().copy()
    return Arrays(params, inputs, target, buffers, "torch")


def torch_linear_init(rng: np.random.Generator, fan_in: int, size) -> np.ndarray:
    """nn.Linear's default: kaiming_uniform(a=sqrt(5)) for weights and the bias bound alike,
    both U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size).astype(np.float32)


def numpy_params(specs: dict[str, tuple], seed: int) -> dict[str, np.ndarray]:
    """Parameters from `{name: (torch_shape, kind, fan)}`; kind is one of:
    "linear" (U(+-1/sqrt(fan)), fan = fan_in), "conv" (kaiming normal, fan = fan_out, as
    torchvision's ResNet), "ones", "zeros"."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (size, kind, fan) in specs.items():
        if kind == "linear":
            out[name] = torch_linear_init(rng, fan, size)
        elif kind == "conv":
            out[name] = (rng.standard_normal(size) * np.sqrt(2.0 / fan)).astype(np.float32)
        elif kind == "ones":
            out[name] = np.ones(size, np.float32)
        elif kind == "zeros":
            out[name] = np.zeros(size, np.float32)
        else:
            raise ValueError(f"unknown init kind {kind!r} for {name}")
    return out


def arrays(build_torch: Callable, specs: Callable[[dict], dict], data: Callable,
           shape: dict, mode: str, seed: int) -> Arrays:
    """Torch's arrays when torch is installed, else numpy ones from `specs(shape)` and
    `data(rng, shape) -> (inputs, target)`."""
    if torch_installed():
        return from_torch(build_torch, shape, mode, seed)
    drawn = numpy_params(specs(shape), seed)
    # BatchNorm running statistics are buffers in torch, not parameters
    buffers = {k: v for k, v in drawn.items() if ".running_" in k}
    params = {k: v for k, v in drawn.items() if k not in buffers}
    inputs, target = data(np.random.default_rng(seed + 1), shape)
    return Arrays(params, inputs, target, buffers, "numpy")


@contextlib.contextmanager
def keras_floatx(dtype: str):
    """Build Keras layers in `dtype`. Layers take their dtype from the global dtype policy,
    which Keras fixes from floatx on first use, so both are set (and restored)."""
    import keras

    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)


def jax_cast(tree, dtype: str):
    """Every floating array of a pytree (numpy or jax) as a jax array of `dtype`."""
    import jax
    import jax.numpy as jnp

    def cast(x):
        x = np.asarray(x)
        return jnp.asarray(x, dtype=dtype) if x.dtype.kind == "f" else jnp.asarray(x)

    return jax.tree_util.tree_map(cast, tree)
