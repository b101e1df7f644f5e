"""`llama-graph-break`: the Llama-style decoder behind a data-dependent branch.

Training code often guards against loss spikes by checking its logits for NaN/inf. In Python
that is `if not torch.isfinite(logits).all(): ...`, a branch on a tensor's value, which Dynamo
cannot trace: it ends the graph before the check and resumes in a new one after it. The check
never fires on these inputs, so compiled and eager outputs agree; what changes is that
torch.compile runs two graphs with a return to Python between them. `recompiles.dynamo_summary`
reads where the graph broke and why; `recompiles.explain_graph_breaks` gives the source line.
"""

from __future__ import annotations

from ..base import TorchTask, Workload
from . import config as cfg


def _guarded_class():
    import torch
    import torch.nn as nn

    class NonFiniteGuard(nn.Module):
        """LogitsOnly with a NaN/inf check: the data-dependent branch that breaks the graph."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, ids):
            logits = self.inner(ids)
            if not torch.isfinite(logits).all():  # the graph breaks here
                raise FloatingPointError("non-finite logits")
            return logits

    return NonFiniteGuard


def build_torch(shape: dict, mode: str, device: str, dtype: str, seed: int) -> TorchTask:
    from . import torch_lm

    if mode not in ("infer", "train"):
        raise ValueError(f"llama-graph-break has no {mode!r} mode")
    task = torch_lm.build_task(cfg.LLAMA, shape, mode, device, dtype, seed)
    task.model = _guarded_class()(task.model)
    return task


WORKLOAD = Workload(
    name="llama-graph-break",
    summary="llama with a NaN check on its logits (a data-dependent branch): one graph break",
    default_shape=lambda device: cfg.default_shape(cfg.LLAMA, device),
    flops=lambda shape, mode: cfg.flops(cfg.LLAMA, shape, mode),
    items_per_step=lambda shape: cfg.tokens_per_step(shape, "train"),
    throughput_unit="tokens/s",
    builders={"torch": build_torch},
    check_shape=lambda shape: cfg.shape_problem(cfg.LLAMA, shape),
    footprint=lambda shape, mode: cfg.footprint(cfg.LLAMA, shape, mode),
)
