"""The seed's MLP: `SimpleNet` (784 -> 128 -> 10, batch 32), exactly as the seed writes it."""

from __future__ import annotations

from . import weights
from .base import Footprint, JaxTask, TfTask, TorchTask, Workload


def _simple_net_class():
    import torch
    import torch.nn as nn

    # Verbatim from the seed document ("PyTorch - Dynamic and Pythonic").
    class SimpleNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(784, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = torch.relu(self.fc1(x))
            return self.fc2(x)

    return SimpleNet


def default_shape(device: str) -> dict:
    return {"batch": 32}


def flops(shape: dict, mode: str) -> float:
    # Matmul flops only (2 per multiply-add); bias and ReLU are O(batch*width) and ignored.
    forward = 2 * shape["batch"] * (784 * 128 + 128 * 10)
    return float(forward if mode == "infer" else 3 * forward)  # backward ~ 2x forward


def footprint(shape: dict, mode: str) -> Footprint:
    """Memory estimate's inputs: 784 x 128 + 128 + 128 x 10 + 10 parameters; the input, the
    hidden layer before and after ReLU and the output per sample."""
    return Footprint(784 * 128 + 128 + 128 * 10 + 10, shape["batch"] * (784 + 2 * 128 + 10))


def build_torch(shape: dict, mode: str, device: str, dtype: str, seed: int) -> TorchTask:
    import torch

    torch.manual_seed(seed)
    model = _simple_net_class()().to(device=device, dtype=getattr(torch, dtype))
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(shape["batch"], 784, generator=gen)
    x = x.to(device=device, dtype=model.fc1.weight.dtype)
    target = torch.randint(0, 10, (shape["batch"],), generator=gen).to(device)
    return TorchTask(model=model, inputs=(x,), target=target,
                     loss_fn=torch.nn.functional.cross_entropy, optimizer="sgd")


# ---------------------------------------------------------------- TensorFlow and JAX
# Both copy the torch SimpleNet's weights and data (lab.workloads.weights), so the three
# frameworks compute the same function on the same numbers.

def _param_specs(shape: dict) -> dict:
    return {"fc1.weight": ((128, 784), "linear", 784), "fc1.bias": ((128,), "linear", 784),
            "fc2.weight": ((10, 128), "linear", 128), "fc2.bias": ((10,), "linear", 128)}


def _data(rng, shape: dict):
    x = rng.standard_normal((shape["batch"], 784)).astype("float32")
    return (x,), rng.integers(0, 10, shape["batch"])


def _arrays(shape: dict, mode: str, seed: int) -> weights.Arrays:
    return weights.arrays(build_torch, _param_specs, _data, shape, mode, seed)


def keras_sequential():
    """The seed's Keras model, verbatim ("TensorFlow - Keras API")."""
    import warnings

    from tensorflow import keras

    with warnings.catch_warnings():
        # Keras 3 prefers keras.Input over input_shape= and warns; the seed's form is kept on
        # purpose (it is the code being measured) and builds the same model.
        warnings.filterwarnings("ignore", message=".*input_shape.*")
        model = keras.Sequential([
            keras.layers.Dense(128, activation='relu', input_shape=(784,)),
            keras.layers.Dense(10)
        ])
    return model


def build_tf(shape: dict, mode: str, device: str, dtype: str, seed: int) -> TfTask:
    import tensorflow as tf

    from .losses import tf_cross_entropy

    arr = _arrays(shape, mode, seed)
    p = arr.params

    def make(dt: str) -> TfTask:
        with weights.keras_floatx(dt):
            model = keras_sequential()
        # torch's Linear keeps (out, in); Keras's Dense kernel is (in, out)
        model.set_weights([p["fc1.weight"].T, p["fc1.bias"], p["fc2.weight"].T, p["fc2.bias"]])
        x = tf.constant(arr.inputs[0], dtype=dt)
        return TfTask(model=model, inputs=(x,), target=tf.constant(arr.target, tf.int32),
                      loss_fn=tf_cross_entropy, optimizer="sgd", rebuild=make,
                      weights_source=arr.source)

    return make(dtype)


def jax_apply(params, x):
    import jax

    h = jax.nn.relu(x @ params["fc1.weight"] + params["fc1.bias"])
    return h @ params["fc2.weight"] + params["fc2.bias"]


def build_jax(shape: dict, mode: str, device: str, dtype: str, seed: int) -> JaxTask:
    import jax.numpy as jnp

    from .losses import jax_cross_entropy

    arr = _arrays(shape, mode, seed)
    params = {k: (v.T if k.endswith(".weight") else v) for k, v in arr.params.items()}
    return JaxTask(apply=jax_apply, params=weights.jax_cast(params, dtype),
                   inputs=weights.jax_cast(arr.inputs, dtype),
                   target=jnp.asarray(arr.target, jnp.int32), loss_fn=jax_cross_entropy,
                   optimizer="sgd", weights_source=arr.source)


WORKLOAD = Workload(
    name="mlp",
    summary="seed SimpleNet MLP 784-128-10 (batch 32)",
    default_shape=default_shape,
    flops=flops,
    items_per_step=lambda shape: shape["batch"],
    throughput_unit="samples/s",
    builders={"torch": build_torch, "tf": build_tf, "jax": build_jax},
    footprint=footprint,
)
