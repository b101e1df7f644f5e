"""tensorrt: a PyTorch model compiled ahead of time by Torch-TensorRT (`torch.export`, then
`torch_tensorrt.dynamo.compile` into TensorRT engines) and run from torch on CUDA, with
torch-eager as its baseline. Elsewhere the cell is `skipped: needs CUDA and torch-tensorrt`.

Precision follows the model and inputs (`use_explicit_typing=True`, Torch-TensorRT's
recommended setting): a float32 cell builds float32 engines, so accuracy is judged with the
dtype's usual tolerance. Ops TensorRT cannot take stay in torch (Torch-TensorRT partitions the
graph); the number of TensorRT engines is read back into the diagnostics.

TensorRT's timing cache is pointed at the cell's cache folder (LAB_TENSORRT_CACHE_DIR, from
cache_env), so the cold pass starts without one and the warm pass reuses it.
"""

from __future__ import annotations

import os

from lab.compile.protocol import Support
from lab.compile.runtimes import runtime_torch
from lab.compile.runtimes.conversion import Conversion, artifact_folder, artifact_size, timed_step
from lab.compile.runtimes.runtime_torch import (
    ConvertedTorchSide,
    eager_side,
)
from lab.compile.torch import versions as torch_versions

BASE = runtime_torch  # what this module does not define, the registry takes from there

NEEDS = "needs CUDA and torch-tensorrt"
CACHE_VARIABLE = "LAB_TENSORRT_CACHE_DIR"


class TensorRtSide(ConvertedTorchSide):
    def __init__(self, task, mode: str):
        super().__init__(task, mode)
        self._folder = artifact_folder("lab-trt-")
        self.engines: int | None = None

    def convert(self):
        import torch
        import torch_tensorrt

        model, inputs = self.task.model, self.task.inputs
        settings = {"arg_inputs": list(inputs), "use_explicit_typing": True}
        cache_dir = os.environ.get(CACHE_VARIABLE)
        if cache_dir:
            settings["timing_cache_path"] = os.path.join(cache_dir, "timing_cache.bin")
        # both steps are the model becoming TensorRT engines: a failure in either is the
        # model not converting (an unsupported op, a shape TensorRT cannot take)
        with timed_step("torch.export + torch_tensorrt.dynamo.compile") as built, \
                torch.no_grad():
            program = torch.export.export(model, inputs)
            engine_module = torch_tensorrt.dynamo.compile(program, **settings)
        self.engines = sum(1 for name, _ in engine_module.named_children()
                           if "_run_on_acc" in name)
        path = os.path.join(self._folder, "model.ep")
        try:  # the shippable artifact; its size is informative, its failure not fatal
            torch_tensorrt.save(engine_module, path, arg_inputs=list(inputs))
            size = artifact_size(path)
        except Exception:
            size = None
        conversion = Conversion(
            converter=f"torch_tensorrt.dynamo.compile {torch_tensorrt.__version__}",
            convert_s=built.seconds, load_s=None, artifact_bytes=size,
            artifact_format=".ep (ExportedProgram with TensorRT engines)",
            warnings=built.warnings)
        return (lambda: engine_module(*inputs)), conversion

    def step(self):
        import torch

        with torch.no_grad():
            return self.converted()()

    def runtime_diagnostics(self) -> dict:
        return {"tensorrt_engines": self.engines}


def tensorrt_side(task, mode: str, option: str | None) -> TensorRtSide:
    return TensorRtSide(task, mode)


SIDES = {"torch-eager": eager_side, "tensorrt": tensorrt_side}


def support(device: str) -> Support:
    import importlib.util

    import torch

    lacking = []
    if device != "cuda" or not torch.cuda.is_available():
        lacking.append("no CUDA device" if device == "cuda" else f"device is {device}")
    if importlib.util.find_spec("torch_tensorrt") is None:
        lacking.append("torch_tensorrt not installed")
    if lacking:
        return Support.no(f"{NEEDS} ({'; '.join(lacking)})")
    return Support.yes()


def versions() -> dict:
    import torch_tensorrt

    return {**torch_versions(), "torch_tensorrt": torch_tensorrt.__version__}


def cache_env(cache_dir: str) -> dict:
    return {CACHE_VARIABLE: cache_dir}
