"""Registry of backends: how a workload becomes a timed step in each framework.

Names are `family-variant[:option]`, e.g. `torch-compile:max-autotune`. An unknown name or
option is an error that lists the valid ones; nothing falls back silently. Every compiled
backend names the eager backend of its own framework as its baseline, so its speedup is always
over its own framework's eager mode, measured in the same process.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Framework(StrEnum):
    TORCH = "torch"
    TF = "tf"
    JAX = "jax"


@dataclass(frozen=True)
class BackendInfo:
    name: str
    framework: Framework
    module: str  # lab.backends.<module> implements it
    summary: str
    baseline: str | None = None  # eager backend of the same framework; None for eager itself
    options: tuple[str, ...] = ()  # valid values after ':'; the first is the default
    requires: tuple[str, ...] = ()  # importable modules it needs beyond its framework

    @property
    def compiles(self) -> bool:
        return self.baseline is not None


BACKENDS: dict[str, BackendInfo] = {
    b.name: b
    for b in (
        BackendInfo("torch-eager", Framework.TORCH, "lab.backends.torch", "PyTorch eager"),
        BackendInfo("torch-compile", Framework.TORCH, "lab.backends.torch",
                    "torch.compile (Inductor)", baseline="torch-eager",
                    options=("default", "reduce-overhead", "max-autotune",
                             "max-autotune-no-cudagraphs")),
        BackendInfo("torch-triton", Framework.TORCH, "lab.backends.triton",
                    "PyTorch eager with the lab's Triton kernels swapped in",
                    baseline="torch-eager", requires=("triton",)),
        BackendInfo("tf-eager", Framework.TF, "lab.backends.tf", "TensorFlow eager execution"),
        BackendInfo("tf-graph", Framework.TF, "lab.backends.tf", "tf.function (graph)",
                    baseline="tf-eager"),
        BackendInfo("tf-xla", Framework.TF, "lab.backends.tf",
                    "tf.function(jit_compile=True) (XLA)", baseline="tf-eager"),
        BackendInfo("jax-eager", Framework.JAX, "lab.backends.jax", "JAX op-by-op dispatch"),
        BackendInfo("jax-jit", Framework.JAX, "lab.backends.jax", "jax.jit (XLA)",
                    baseline="jax-eager"),
    )
}

FRAMEWORK_PACKAGE = {Framework.TORCH: "torch", Framework.TF: "tensorflow", Framework.JAX: "jax"}


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
