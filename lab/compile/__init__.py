"""Registry of backends: how a workload becomes a timed step in each framework.

Names are `family-variant[:option]`, e.g. `torch-compile:max-autotune`. An unknown name or
option is an error that lists the valid ones; nothing falls back silently. Every compiled
backend names the eager backend of its own framework as its baseline, so its speedup is always
over its own framework's eager mode, measured in the same process.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from lab.compile.protocol import MODULE_ATTRIBUTES, BackendModule, Support


class Framework(StrEnum):
    TORCH = "torch"
    TF = "tf"
    JAX = "jax"
    KERAS = "keras"  # Keras 3 models on one of its backends (lab.compile.keras_common)


@dataclass(frozen=True)
class BackendInfo:
    name: str
    framework: Framework
    module: str  # lab.compile.<module> implements it
    summary: str
    baseline: str | None = None  # eager backend of the same framework; None for eager itself
    options: tuple[str, ...] = ()  # valid values after ':'; the first is the default
    requires: tuple[str, ...] = ()  # importable modules it needs beyond its framework
    # whether it runs the `generate` mode (a greedy decode loop: lab.compile.generation)
    generates: bool = False
    # an inference runtime (docs/inference.md): infer mode only, and the converted model runs
    # in its stored dtype, never under autocast; the selection skips other cells before they run
    inference_only: bool = False

    @property
    def compiles(self) -> bool:
        return self.baseline is not None


BACKENDS: dict[str, BackendInfo] = {
    b.name: b
    for b in (
        BackendInfo("torch-eager", Framework.TORCH, "lab.compile.torch", "PyTorch eager",
                    generates=True),
        # dynamic / static: the default mode with dynamic=True / dynamic=False (shapes that
        # change between steps: llama-varlen)
        BackendInfo("torch-compile", Framework.TORCH, "lab.compile.torch",
                    "torch.compile (Inductor)", baseline="torch-eager",
                    options=("default", "reduce-overhead", "max-autotune",
                             "max-autotune-no-cudagraphs", "dynamic", "static"),
                    generates=True),
        BackendInfo("torch-triton", Framework.TORCH, "lab.compile.triton",
                    "PyTorch eager with the lab's Triton kernels swapped in",
                    baseline="torch-eager", requires=("triton",)),
        BackendInfo("tf-eager", Framework.TF, "lab.compile.tf", "TensorFlow eager execution"),
        BackendInfo("tf-graph", Framework.TF, "lab.compile.tf", "tf.function (graph)",
                    baseline="tf-eager"),
        BackendInfo("tf-xla", Framework.TF, "lab.compile.tf",
                    "tf.function(jit_compile=True) (XLA)", baseline="tf-eager"),
        BackendInfo("jax-eager", Framework.JAX, "lab.compile.jax", "JAX op-by-op dispatch",
                    generates=True),
        BackendInfo("jax-jit", Framework.JAX, "lab.compile.jax", "jax.jit (XLA)",
                    baseline="jax-eager", generates=True),
        # inference runtimes (infer mode only; docs/inference.md): conversion is their compile
        BackendInfo("torchscript", Framework.TORCH, "lab.compile.runtimes.torchscript",
                    "TorchScript (torch.jit.trace, or script where trace cannot; deprecated)",
                    baseline="torch-eager", options=("trace", "script"), inference_only=True),
        BackendInfo("torch-export", Framework.TORCH, "lab.compile.runtimes.torch_export",
                    "torch.export + AOTInductor package", baseline="torch-eager",
                    inference_only=True),
        BackendInfo("onnxruntime", Framework.TORCH, "lab.compile.runtimes.onnxruntime_torch",
                    "ONNX Runtime on torch.onnx.export(dynamo=True)", baseline="torch-eager",
                    options=("default", "tensorrt"),
                    requires=("onnx", "onnxscript", "onnxruntime"), inference_only=True),
        BackendInfo("onnxruntime-tf", Framework.TF, "lab.compile.runtimes.onnxruntime_tf",
                    "ONNX Runtime on a Keras model converted by tf2onnx", baseline="tf-eager",
                    requires=("onnx", "tf2onnx", "onnxruntime"), inference_only=True),
        BackendInfo("litert", Framework.TF, "lab.compile.runtimes.litert",
                    "LiteRT interpreter on a TFLite-converted Keras model",
                    baseline="tf-eager", options=("float32", "int8"),
                    requires=("ai_edge_litert",), inference_only=True),
        BackendInfo("tensorrt", Framework.TORCH, "lab.compile.runtimes.tensorrt",
                    "Torch-TensorRT (torch.export + TensorRT engines), CUDA only",
                    baseline="torch-eager", inference_only=True),
        # Keras 3 (keras_hub models, the keras suite) on each of its backends, eager or with
        # model.compile(jit_compile=True)
        *(BackendInfo(f"keras-{short}-{kind}", Framework.KERAS, f"lab.compile.keras_{short}",
                      f"Keras 3 on {what}, " + ("run_eagerly=True" if kind == "eager" else
                                                f"jit_compile=True ({jit})"),
                      baseline=None if kind == "eager" else f"keras-{short}-eager",
                      requires=("keras_hub", package))
          for short, what, package, jit in (
              ("tf", "TensorFlow", "tensorflow", "XLA"), ("jax", "JAX", "jax", "XLA"),
              ("torch", "PyTorch", "torch", "torch.compile"))
          for kind in ("eager", "jit")),
    )
}

FRAMEWORK_PACKAGE = {Framework.TORCH: "torch", Framework.TF: "tensorflow", Framework.JAX: "jax",
                     Framework.KERAS: "keras"}


class UnknownBackend(ValueError):
    pass


@dataclass(frozen=True)
class BackendChoice:
    """A backend plus its option, as asked for on the command line."""

    info: BackendInfo
    option: str | None

    @property
    def label(self) -> str:
        return self.info.name if self.option in (None, self.default_option) else \
            f"{self.info.name}:{self.option}"

    @property
    def default_option(self) -> str | None:
        return self.info.options[0] if self.info.options else None


def resolve(text: str) -> BackendChoice:
    name, _, option = text.strip().partition(":")
    info = BACKENDS.get(name)
    if info is None:
        raise UnknownBackend(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
    if option and option not in info.options:
        valid = ", ".join(info.options) if info.options else "none"
        raise UnknownBackend(f"backend {name!r} has no option {option!r}; valid options: {valid}")
    return BackendChoice(info, option or (info.options[0] if info.options else None))


def flatten_outputs(out) -> list:
    """A model's outputs (nested tuples, lists, dicts) as a flat list in a stable order, so
    accuracy compares output i with output i whatever the framework's container."""
    if isinstance(out, (tuple, list)):
        return [y for x in out for y in flatten_outputs(x)]
    if isinstance(out, dict):
        return [y for k in sorted(out) for y in flatten_outputs(out[k])]
    return [out]


def missing_packages(info: BackendInfo) -> list[str]:
    """Packages this backend needs that are not installed (checked without importing them)."""
    import importlib.util

    needed = [FRAMEWORK_PACKAGE[info.framework], *info.requires]
    return [p for p in needed if importlib.util.find_spec(p) is None]


class LoadedBackend:
    """A backend module as the cell uses it: each member from the module itself or, where the
    module does not define it, from the module it builds on (its `BASE`: an inference runtime
    on its framework's shared runtime, that on the framework's module). A module states only
    what it changes; nothing is re-exported to fill the protocol."""

    def __init__(self, module):
        self.module = module

    def __getattr__(self, name: str):
        module = self.module
        while module is not None:
            if name in vars(module):
                return vars(module)[name]
            module = vars(module).get("BASE")
        raise AttributeError(f"{self.module.__name__} (or what it builds on) has no {name}")


def load(info: BackendInfo) -> BackendModule:
    """The module implementing `info`, completed from its base and checked against the
    BackendModule protocol."""
    import importlib

    module = LoadedBackend(importlib.import_module(info.module))
    if not isinstance(module, BackendModule):
        missing = [name for name in MODULE_ATTRIBUTES if not hasattr(module, name)]
        raise TypeError(f"{info.module} is not a backend module: it lacks {', '.join(missing)}")
    return module


def support(info: BackendInfo, device: str) -> Support:
    """Whether `info` can run on `device` here: its packages first (without importing them),
    then the module's own answer."""
    missing = missing_packages(info)
    if missing:
        return Support.no(f"{' and '.join(missing)} not installed")
    return load(info).support(device)


def for_framework(framework: str) -> list[str]:
    """Names of the backends of one framework."""
    return [name for name, info in BACKENDS.items() if info.framework.value == framework]
