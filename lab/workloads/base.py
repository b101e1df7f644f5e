"""What a workload is: a model plus inputs that can be built for each framework.

A workload knows its default shape per device, its flops per step, and how to build itself for
each framework it supports. Builders return a framework *task* (model, inputs, target, loss);
the backends in `lab.compile` turn a task into timed steps. Builders must be deterministic for a
given seed so eager and compiled sides, and different frameworks, see the same weights and data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

GENERATE_MODE = "generate"  # greedy decoding; only workloads whose builders return GenerateTask
# every mode the lab knows; a workload says which of them it has (`Workload.modes`)
MODES = ("infer", "train", GENERATE_MODE)
STEP_MODES = ("infer", "train")  # what every workload has: one forward, or a training step


@dataclass
class TorchTask:
    """A PyTorch workload instance. `loss_fn(output, target)` is used in train mode."""

    model: Any  # torch.nn.Module
    inputs: tuple  # positional tensors for model(*inputs)
    target: Any = None
    loss_fn: Callable | None = None
    optimizer: str = "sgd"  # the train step's optimizer: "sgd", "adam" or "adamw"
    # the arithmetic the task runs in (a lab.core.precision name) and where: set by the
    # backend's build_task from the precision it is passed, read by its sides
    precision: str = "fp32"
    device: str = "cpu"


@dataclass
class TfTask:
    """A TensorFlow/Keras workload instance."""

    model: Any  # keras.Model or a callable with trainable_variables
    inputs: tuple
    target: Any = None
    loss_fn: Callable | None = None
    optimizer: str = "sgd"
    # dtype -> a fresh TfTask of the same model in that dtype (the float64 accuracy reference)
    rebuild: Callable[[str], TfTask] | None = None
    weights_source: str | None = None  # "torch" (copied), "numpy" or "keras" (its own init)
    # the arithmetic the task runs in (a lab.core.precision name) and where: set by the
    # backend's build_task from the precision it is passed, read by its sides
    precision: str = "fp32"
    device: str = "cpu"


@dataclass
class JaxTask:
    """A JAX workload instance: a pure `apply(params, *inputs)` and its parameters."""

    apply: Callable
    params: Any
    inputs: tuple
    target: Any = None
    loss_fn: Callable | None = None  # loss_fn(output, target) -> scalar
    optimizer: str = "sgd"
    # non-trained state such as BatchNorm running statistics; when set, the model is
    # `apply(params, state, *inputs, train=bool) -> (output, new_state)`
    state: Any = None
    weights_source: str | None = None  # "torch" (copied) or "numpy"
    # the arithmetic the task runs in (a lab.core.precision name) and where: set by the
    # backend's build_task from the precision it is passed, read by its sides
    precision: str = "fp32"
    device: str = "cpu"



@dataclass
class GenerateTask:
    """A greedy decoding workload: `prompt` in, `max_new_tokens` out, with a KV cache.

    `model` is what a backend compiles: a torch module `model(ids, cache) -> logits` of the
    last position, or a pure JAX function `model(params, ids, cache) -> (logits, cache)`. A
    backend calls `lab.workloads.llm.generate.greedy_generate(task, forward)` with `forward` the
    model itself, its compiled version, or (JAX) either with `params` bound; the loop, the cache
    and the argmax are the workload's, so every backend decodes the same way.
    """

    model: Any
    prompt: Any  # (batch, prompt_len) integer token ids
    max_new_tokens: int
    # -> an empty KV cache for prompt_len + max_new_tokens positions; torch caches are reset
    # and reused (their tensors keep their addresses, as CUDA graphs need), JAX ones are new
    new_cache: Callable[[], Any]
    # step(forward, ids, cache) -> (next_ids (batch, 1), cache): one greedy step; the prefill
    # is a step on the whole prompt, each decode step a step on the last new token
    step: Callable
    # next_logits(forward, ids, cache) -> (logits of the last position (batch, vocab), cache):
    # the step before its argmax, for the accuracy check that reads how close a choice was
    next_logits: Callable
    framework: str  # "torch" or "jax"
    params: Any = None  # JAX parameters (torch keeps them in the module)
    sync: Callable = lambda x: x  # waits for a token array to be computed (JAX: block_until_ready)
    weights_source: str | None = None  # "torch" when JAX weights were copied from torch
    # the arithmetic the task runs in (a lab.core.precision name) and where: set by the
    # backend's build_task from the precision it is passed, read by its sides
    precision: str = "fp32"
    device: str = "cpu"


@dataclass
class ShapeCycle:
    """Inputs whose shape changes between steps, as batches of real text do.

    One step of a ShapeCycle workload is the whole cycle: batch i is run with `task`'s model,
    loss and optimizer, for i in order, so the first call holds every compile (or recompile)
    the cycle causes and steady-state samples time the same mix of lengths on every side.
    """

    task: Any  # TorchTask or JaxTask; its inputs/target are the first batch
    batches: list  # [(inputs tuple, target)], in cycle order
    lengths: tuple[int, ...]  # each batch's sequence length as drawn
    padded: tuple[int, ...]  # as run: `lengths` padded up to the bucket (equal when none)


@dataclass(frozen=True)
class Footprint:
    """What one step of a workload holds in memory, counted from its config (a rough model,
    lab.workloads.footprint turns it into bytes): parameters, activations in elements of the
    compute dtype, and elements kept in float32 whatever the precision (an LLM's logits, upcast
    for the loss)."""

    params: int
    activations: float  # train: kept for the backward pass; infer/generate: live at the peak
    float32_elements: float = 0.0
    optimizer: str = "sgd"  # the train step's: "sgd" keeps no state, "adam"/"adamw" two copies


@dataclass(frozen=True)
class Workload:
    name: str
    summary: str
    # shape parameters by device ("cpu", "cuda"); every key can be overridden from the CLI
    default_shape: Callable[[str], dict]
    # flops of one step for a shape and mode (train counts forward + backward, ~3x forward)
    flops: Callable[[dict, str], float]
    # items processed per step for throughput (samples, images or tokens) and their unit
    items_per_step: Callable[[dict], int]
    throughput_unit: str
    # framework name ("torch", "tf", "jax") -> builder(shape, mode, device, dtype, seed) -> task
    builders: dict[str, Callable] = field(default_factory=dict)
    source: str = "builtin"  # "builtin" or the path:factory of a user's workload
    modes: tuple[str, ...] = STEP_MODES  # GENERATE_MODE only where builders give GenerateTask
    # tokens one generate step produces (batch x new tokens), its throughput's items; None
    # for a workload without the generate mode
    generated_items: Callable[[dict], int] | None = None
    # why a shape cannot be built (divisibility, context length, ...), or None; checked when
    # the selection is made, so a bad shape is one line, not a failed cell per backend
    check_shape: Callable[[dict], str | None] | None = None
    # shape keys for which 0 is a setting ("off"), not an error: llama-varlen's bucket
    zero_ok: tuple[str, ...] = ()
    # (shape, mode) -> Footprint: the memory estimate's inputs; None: the lab cannot tell
    footprint: Callable[[dict, str], Footprint] | None = None

    def shape_problem(self, shape: dict) -> str | None:
        """Why this workload cannot take `shape`, in one line, or None."""
        for key, value in shape.items():
            if value == 0 and key in self.zero_ok:
                continue
            if value <= 0:
                return f"--shape {key}={value}: shape values must be positive integers"
        return self.check_shape(shape) if self.check_shape else None

    @property
    def frameworks(self) -> tuple[str, ...]:
        return tuple(self.builders)

    def items(self, shape: dict, mode: str) -> int:
        """Items one step of `mode` processes (train, infer) or produces (generate)."""
        if mode == GENERATE_MODE and self.generated_items is not None:
            return self.generated_items(shape)
        return self.items_per_step(shape)

    def shape_for(self, device: str, overrides: dict | None = None) -> dict:
        shape = dict(self.default_shape(device))
        for key, value in (overrides or {}).items():
            if key not in shape:
                raise ValueError(
                    f"workload {self.name!r} has no shape parameter {key!r} "
                    f"(it has: {', '.join(sorted(shape)) or 'none'})"
                )
            shape[key] = type(shape[key])(value)
        return shape

    def build(self, framework: str, shape: dict, mode: str, device: str, dtype: str, seed: int):
        if framework not in self.builders:
            raise KeyError(f"workload {self.name!r} has no {framework} version")
        return self.builders[framework](shape, mode, device, dtype, seed)


def shape_label(shape: dict) -> str:
    """A short stable label for a shape, used in benchmark names: 'batch=32,seq=128'."""
    return ",".join(f"{k}={shape[k]}" for k in sorted(shape))
