"""A cell's memory, estimated before it runs, from the workload's config (a rough model).

bytes = weights + gradients + optimizer state + activations + float32 logits, where

- weights: parameters x the precision's storage bytes (4 for fp32, tf32 and the amp
  precisions, whose weights stay float32; 2 for bf16 and fp16);
- gradients (train): as many as the weights;
- optimizer state (train): Adam and AdamW keep two copies of the weights, SGD none; each side
  of a cell has its own optimizer (lab.compile.torch), so a compiled cell holds two;
- activations: the workload's count (`Workload.footprint`) x the compute dtype's bytes;
- logits: an LLM's tokens x vocabulary in float32.

Eager and compiled sides share the model's weights. What the estimate leaves out: the
framework itself (a few hundred MiB once imported), a compiler's workspace, and the float64
copy the accuracy check makes when a compiled answer misses the precision's tolerance. It is
meant to tell a cell that fits from one that cannot, within a factor of about two.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.core import precision as precisions

from .base import Workload

DTYPE_BYTES = {"float32": 4, "tfloat32": 4, "bfloat16": 2, "float16": 2}
STATE_COPIES = {"sgd": 0, "adam": 2, "adamw": 2}  # optimizer state, in copies of the weights
GIB = 1024**3


@dataclass(frozen=True)
class Estimate:
    parts: dict[str, float]  # bytes: weights, gradients, optimizer state, activations, logits

    @property
    def total_bytes(self) -> float:
        return sum(self.parts.values())

    def describe(self) -> str:
        """The parts in GiB, those that round to 0.0 left out."""
        shown = [f"{name} {value / GIB:.1f}" for name, value in self.parts.items()
                 if value >= 0.05 * GIB]
        return ", ".join(shown) or "every part under 0.05 GiB"


def estimate(workload: Workload, shape: dict, mode: str, precision: str,
             sides: int = 1) -> Estimate | None:
    """The estimate for one cell with `sides` optimizers (2 for a compiled backend beside its
    eager baseline); None for a workload that does not say (a user's factory)."""
    if workload.footprint is None:
        return None
    fp = workload.footprint(shape, mode)
    policy = precisions.policy(precision)
    stored, computed = DTYPE_BYTES[policy.storage_dtype], DTYPE_BYTES[policy.compute_dtype]
    parts = {"weights": fp.params * stored}
    if mode == "train":
        parts["gradients"] = fp.params * stored
        parts["optimizer state"] = sides * STATE_COPIES[fp.optimizer] * fp.params * stored
    parts["activations"] = fp.activations * computed
    if fp.float32_elements:
        parts["logits"] = fp.float32_elements * 4
    return Estimate(parts)
