"""What every inference runtime fed from a PyTorch model shares: the task (infer only), the
accuracy outputs, the float64 reference and the torch-eager baseline.

The converted side and the torch-eager baseline share one model and one set of input tensors,
so accuracy is judged on exactly the inputs that are timed, against the eager answer.
"""

from __future__ import annotations

import numpy as np

from lab.compile import torch as torch_backend
from lab.compile.protocol import Support
from lab.compile.runtimes.conversion import ConvertedSide, refuse_autocast, require_infer

BASE = torch_backend  # what this module does not define, the registry takes from there



def build_task(workload, shape, mode, device, precision, seed, backend_name: str):
    require_infer(mode)  # before building: a train cell has nothing to convert
    return torch_backend.build_task(workload, shape, mode, device, precision, seed, backend_name)


def to_numpy(value) -> np.ndarray:
    """A runtime's output (torch tensor or numpy array) as float64 numpy, like the eager side's."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        value = value.double() if value.is_floating_point() else value
        return value.numpy()
    array = np.asarray(value)
    return array.astype(np.float64) if np.issubdtype(array.dtype, np.floating) else array


class ConvertedTorchSide(ConvertedSide):
    """A converted torch model; `task` is the TorchTask the eager baseline runs too."""

    def __init__(self, task, mode: str):
        super().__init__(mode)
        self.task = task

    def outputs(self) -> list[np.ndarray]:
        import torch

        with torch.no_grad():
            return [to_numpy(t) for t in torch_backend.output_tensors(self.converted()())]

    def reference_fp64(self) -> list[np.ndarray]:
        # the converted model has no float64 version; the reference is the eager model in
        # float64, the same one torch.compile's accuracy falls back to
        return torch_backend.TorchSide(self.task, self.mode).reference_fp64()


def eager_side(task, mode: str, option=None):
    return torch_backend.eager_side(task, mode, option)


def torch_support(device: str) -> Support:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        return Support.no("no CUDA device")
    return Support.yes()


def apply_precision(precision: str, device: str) -> dict:
    """The framework's switches, set as for its eager baseline (mixed precision refused)."""
    refuse_autocast(precision)
    return torch_backend.apply_precision(precision, device)
