"""torch-triton: a torch workload with the lab's Triton kernels in place of its eager ops.

Workloads that call their ops through an `ops` namespace (the transformer block) run their
own forward with `lab.kernels.nn.ops()` swapped in, on the same parameters as the eager
baseline, so the comparison is kernel against kernel and nothing else. On the CPU, Triton runs
only under its interpreter (TRITON_INTERPRET=1): correct, but far too slow to say anything
about speed, so a CPU cell runs only when the interpreter is asked for explicitly.
"""

from __future__ import annotations

import os

from lab.compile import torch as torch_backend
from lab.compile.protocol import Support
from lab.compile.torch import (
    TorchSide,
    eager_side,
)
from lab.core.status import CellFailure, Status

BASE = torch_backend  # what this module does not define, the registry takes from there


class TritonKernelSide(TorchSide):
    def __init__(self, task, mode: str):
        model = task.model
        if not hasattr(model, "ops"):
            raise CellFailure(Status.SKIPPED, f"{type(model).__name__} has no swappable ops "
                                         f"(torch-triton runs the transformer block)")
        from lab.kernels import nn as kernel_nn

        kernel_ops = kernel_nn.ops()

        def forward(*inputs):
            eager_ops, model.ops = model.ops, kernel_ops
            try:
                return model(*inputs)
            finally:
                model.ops = eager_ops

        super().__init__(task, mode, fn=forward)

    def diagnostics(self) -> dict:
        return {"triton_interpreter": os.environ.get("TRITON_INTERPRET") == "1"}


SIDES = {"torch-eager": eager_side,
         "torch-triton": lambda task, mode, option: TritonKernelSide(task, mode)}


def support(device: str) -> Support:
    import torch

    if device == "cuda":
        return Support.yes() if torch.cuda.is_available() else Support.no("no CUDA device")
    if os.environ.get("TRITON_INTERPRET") == "1":
        return Support.yes()
    return Support.no("needs CUDA (on the CPU Triton runs only under TRITON_INTERPRET=1, "
                      "for correctness, not speed)")
