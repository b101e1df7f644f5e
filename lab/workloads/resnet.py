"""ResNet-50 in three frameworks: the seed's "Training Speed (ResNet-50)" row.

- PyTorch: torchvision's `resnet50()` written out layer for layer (Bottleneck v1.5: the stride
  is on the 3x3 conv; convs without bias; kaiming-normal fan-out init; 25,557,032 parameters),
  so the lab does not need torchvision, which fails to import beside some torch builds.
- JAX: the same network in plain `jax.lax` (NHWC, HWIO kernels, XLA's preferred layouts) with
  the torch model's weights and data copied in, so a test can demand the same logits.
- Keras: `keras.applications.ResNet50(weights=None)`, the model a Keras user trains. It is not
  the same network: its convs have biases (26,560 more trainable parameters; its count of
  25,636,712 also includes BatchNorm moving statistics), its downsampling stride sits
  on the first 1x1 conv (v1), and its BatchNorm uses momentum 0.99 and eps 1.001e-5. It gets the
  same input images and labels, its own seeded init, and `classifier_activation=None` so it
  returns logits and shares the cross-entropy loss of the others.

Train mode normalises with batch statistics (and updates the running ones) in every framework;
infer mode uses the running statistics.
"""

from __future__ import annotations

from . import weights
from .base import Footprint, JaxTask, TfTask, TorchTask, Workload

BLOCKS = (3, 4, 6, 3)  # bottlenecks per stage
WIDTHS = (64, 128, 256, 512)  # 3x3 conv channels per stage; the block outputs 4x that
EXPANSION = 4
NUM_CLASSES = 1000
BN_EPS, BN_MOMENTUM = 1e-5, 0.1  # torch's BatchNorm2d defaults


def default_shape(device: str) -> dict:
    if device == "cuda":
        return {"batch": 32, "image_size": 224}
    # Small enough that a train cell's 30 + 30 interleaved steps take tens of seconds on 2
    # cores (a step is ~1/100 of batch 32 at 224); `--batch 32 --image-size 224` is full size.
    return {"batch": 4, "image_size": 64}


def _blocks():
    """(name, in_channels, width, stride, has_downsample) for every bottleneck, in order."""
    inplanes = 64
    for stage, (count, width) in enumerate(zip(BLOCKS, WIDTHS, strict=True)):
        for j in range(count):
            stride = 2 if stage > 0 and j == 0 else 1
            yield f"layer{stage + 1}.{j}", inplanes, width, stride, j == 0
            inplanes = width * EXPANSION


def _convs():
    """(conv name, bn name, in, out, kernel, stride, padding) for every conv, in torch order."""
    yield "conv1", "bn1", 3, 64, 7, 2, 3
    for name, inplanes, width, stride, downsample in _blocks():
        yield f"{name}.conv1", f"{name}.bn1", inplanes, width, 1, 1, 0
        yield f"{name}.conv2", f"{name}.bn2", width, width, 3, stride, 1
        yield f"{name}.conv3", f"{name}.bn3", width, width * EXPANSION, 1, 1, 0
        if downsample:
            yield (f"{name}.downsample.0", f"{name}.downsample.1", inplanes,
                   width * EXPANSION, 1, stride, 0)


def _out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def flops(shape: dict, mode: str) -> float:
    """Conv and fc multiply-adds x2 (BN, ReLU, pooling ignored); 4.1 GMAC/image at 224."""
    size = _out_size(shape["image_size"], 7, 2, 3)
    macs = 3 * 64 * 49 * size * size
    size = _out_size(size, 3, 2, 1)  # max pool
    for _, inplanes, width, stride, downsample in _blocks():
        out = _out_size(size, 3, stride, 1)
        macs += inplanes * width * size * size + width * width * 9 * out * out
        macs += width * width * EXPANSION * out * out
        if downsample:
            macs += inplanes * width * EXPANSION * out * out
        size = out
    macs += 512 * EXPANSION * NUM_CLASSES
    forward = 2 * macs * shape["batch"]
    return float(forward if mode == "infer" else 3 * forward)


PARAMETERS = 25_557_032  # torchvision's resnet50(), which the torch model matches


def footprint(shape: dict, mode: str) -> Footprint:
    """Memory estimate's inputs: every conv's output map, counted from the layer table, twice
    in training (the conv's output and its BatchNorm's, kept for backward; ReLU runs in place),
    and in inference the largest map three times (a block's input, its branch, its sum)."""
    size = _out_size(shape["image_size"], 7, 2, 3)
    maps = [64 * size * size]
    size = _out_size(size, 3, 2, 1)
    for _, _inplanes, width, stride, downsample in _blocks():
        out = _out_size(size, 3, stride, 1)
        maps += [width * size * size, width * out * out, width * EXPANSION * out * out]
        if downsample:
            maps.append(width * EXPANSION * out * out)
        size = out
    per_image = 2 * sum(maps) if mode == "train" else 3 * max(maps)
    return Footprint(PARAMETERS, per_image * shape["batch"], optimizer="sgd")


# ---------------------------------------------------------------- PyTorch

def _torch_classes():
    import torch
    import torch.nn as nn

    class Bottleneck(nn.Module):
        """torchvision.models.resnet.Bottleneck (v1.5), expansion 4."""

        def __init__(self, inplanes: int, width: int, stride: int, downsample: bool):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, width * EXPANSION, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(width * EXPANSION)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, width * EXPANSION, 1, stride=stride, bias=False),
                nn.BatchNorm2d(width * EXPANSION),
            ) if downsample else None

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return self.relu(out + identity)

    class ResNet50(nn.Module):
        """torchvision.models.resnet50(): same module names, so state_dicts interchange."""

        def __init__(self, num_classes: int = NUM_CLASSES):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            stages = {}
            for name, inplanes, width, stride, downsample in _blocks():
                stage = name.split(".")[0]
                stages.setdefault(stage, []).append(Bottleneck(inplanes, width, stride,
                                                               downsample))
            for stage, blocks in stages.items():
                setattr(self, stage, nn.Sequential(*blocks))
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512 * EXPANSION, num_classes)
            for m in self.modules():  # torchvision's init
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet50


def torch_resnet50(num_classes: int = NUM_CLASSES):
    return _torch_classes()(num_classes)


def build_torch(shape: dict, mode: str, device: str, dtype: str, seed: int) -> TorchTask:
    import torch

    torch.manual_seed(seed)
    model = torch_resnet50().to(device=device, dtype=getattr(torch, dtype))
    model.train(mode == "train")  # train: batch statistics; infer: running statistics
    gen = torch.Generator().manual_seed(seed + 1)
    size = shape["image_size"]
    x = torch.randn(shape["batch"], 3, size, size, generator=gen)
    target = torch.randint(0, NUM_CLASSES, (shape["batch"],), generator=gen)
    return TorchTask(model=model, inputs=(x.to(device=device, dtype=model.fc.weight.dtype),),
                     target=target.to(device), loss_fn=torch.nn.functional.cross_entropy,
                     optimizer="sgd")


# ---------------------------------------------------------------- shared arrays

def _param_specs(shape: dict) -> dict:
    specs = {}
    for conv, bn, cin, cout, k, _, _ in _convs():
        specs[f"{conv}.weight"] = ((cout, cin, k, k), "conv", cout * k * k)
        specs[f"{bn}.weight"] = ((cout,), "ones", 0)
        specs[f"{bn}.bias"] = ((cout,), "zeros", 0)
        specs[f"{bn}.running_mean"] = ((cout,), "zeros", 0)
        specs[f"{bn}.running_var"] = ((cout,), "ones", 0)
    fan_in = 512 * EXPANSION
    specs["fc.weight"] = ((NUM_CLASSES, fan_in), "linear", fan_in)
    specs["fc.bias"] = ((NUM_CLASSES,), "linear", fan_in)
    return specs


def _data(rng, shape: dict):
    size = shape["image_size"]
    x = rng.standard_normal((shape["batch"], 3, size, size)).astype("float32")
    return (x,), rng.integers(0, NUM_CLASSES, shape["batch"])


def _arrays(shape: dict, mode: str, seed: int) -> weights.Arrays:
    return weights.arrays(build_torch, _param_specs, _data, shape, mode, seed)


# ---------------------------------------------------------------- JAX

def jax_apply(params, state, x, train: bool):
    """The torch network on NHWC images; returns (logits, new BatchNorm state)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    new_state = dict(state)

    def conv(x, name, stride, pad):
        return lax.conv_general_dilated(x, params[f"{name}.weight"], (stride, stride),
                                        [(pad, pad), (pad, pad)],
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def bn(x, name):
        mean_key, var_key = f"{name}.running_mean", f"{name}.running_var"
        if train:
            mean, var = jnp.mean(x, axis=(0, 1, 2)), jnp.var(x, axis=(0, 1, 2))
            n = x.size // x.shape[-1]
            # torch keeps the unbiased variance in its running estimate
            new_state[mean_key] = (1 - BN_MOMENTUM) * state[mean_key] + BN_MOMENTUM * mean
            new_state[var_key] = ((1 - BN_MOMENTUM) * state[var_key]
                                  + BN_MOMENTUM * var * (n / max(n - 1, 1)))
        else:
            mean, var = state[mean_key], state[var_key]
        scale = params[f"{name}.weight"] * lax.rsqrt(var + BN_EPS)
        return (x - mean) * scale + params[f"{name}.bias"]

    x = jax.nn.relu(bn(conv(x, "conv1", 2, 3), "bn1"))
    x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                          ((0, 0), (1, 1), (1, 1), (0, 0)))
    for name, _, _, stride, downsample in _blocks():
        identity = (bn(conv(x, f"{name}.downsample.0", stride, 0), f"{name}.downsample.1")
                    if downsample else x)
        out = jax.nn.relu(bn(conv(x, f"{name}.conv1", 1, 0), f"{name}.bn1"))
        out = jax.nn.relu(bn(conv(out, f"{name}.conv2", stride, 1), f"{name}.bn2"))
        out = bn(conv(out, f"{name}.conv3", 1, 0), f"{name}.bn3")
        x = jax.nn.relu(out + identity)
    x = jnp.mean(x, axis=(1, 2))
    return x @ params["fc.weight"] + params["fc.bias"], new_state


def jax_params(torch_params: dict) -> dict:
    """torch layouts -> JAX layouts: conv OIHW -> HWIO, fc (out, in) -> (in, out)."""
    out = {}
    for name, value in torch_params.items():
        if value.ndim == 4:
            out[name] = value.transpose(2, 3, 1, 0)
        elif name == "fc.weight":
            out[name] = value.T
        else:
            out[name] = value
    return out


def build_jax(shape: dict, mode: str, device: str, dtype: str, seed: int) -> JaxTask:
    import jax.numpy as jnp

    from .losses import jax_cross_entropy

    arr = _arrays(shape, mode, seed)
    images = arr.inputs[0].transpose(0, 2, 3, 1)  # NCHW -> NHWC
    return JaxTask(apply=jax_apply, params=weights.jax_cast(jax_params(arr.params), dtype),
                   inputs=(weights.jax_cast(images, dtype),),
                   target=jnp.asarray(arr.target, jnp.int32), loss_fn=jax_cross_entropy,
                   optimizer="sgd", state=weights.jax_cast(arr.buffers, dtype),
                   weights_source=arr.source)


# ---------------------------------------------------------------- Keras

def keras_resnet50(image_size: int):
    from tensorflow import keras

    return keras.applications.ResNet50(weights=None, input_shape=(image_size, image_size, 3),
                                       classes=NUM_CLASSES, classifier_activation=None)


def build_tf(shape: dict, mode: str, device: str, dtype: str, seed: int) -> TfTask:
    import keras
    import tensorflow as tf

    from .losses import tf_cross_entropy

    arr = _arrays(shape, mode, seed)  # the same images and labels as torch and JAX
    images = arr.inputs[0].transpose(0, 2, 3, 1)

    def make(dt: str) -> TfTask:
        keras.utils.set_random_seed(seed)  # Keras's own init; its architecture differs
        with weights.keras_floatx(dt):
            model = keras_resnet50(shape["image_size"])
        return TfTask(model=model, inputs=(tf.constant(images, dt),),
                      target=tf.constant(arr.target, tf.int32), loss_fn=tf_cross_entropy,
                      optimizer="sgd", rebuild=make, weights_source="keras")

    return make(dtype)


WORKLOAD = Workload(
    name="resnet50",
    summary="ResNet-50 (torchvision v1.5 / Keras ResNet50 / JAX); sizes: batch, image_size",
    default_shape=default_shape,
    flops=flops,
    items_per_step=lambda shape: shape["batch"],
    throughput_unit="images/s",
    builders={"torch": build_torch, "tf": build_tf, "jax": build_jax},
    footprint=footprint,
)
