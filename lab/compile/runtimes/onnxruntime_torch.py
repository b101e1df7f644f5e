"""onnxruntime: a PyTorch model exported with `torch.onnx.export(..., dynamo=True)` (the
torch.export-based exporter, which needs onnxscript) and run by ONNX Runtime. Its baseline is
torch-eager on the same model and inputs. The Keras route (tf2onnx) is the separate backend
`onnxruntime-tf`, because a backend has one framework and one eager baseline.

Conversion = export + optimisation + writing the `.onnx` file; load = creating the
InferenceSession (which runs ONNX Runtime's own graph optimisations). A model torch.export
cannot capture ends `convert_error` with the exporter's message and its cause's.
"""

from __future__ import annotations

import contextlib
import io
import os

from lab.compile.protocol import Support
from lab.compile.runtimes import ort_session, runtime_torch
from lab.compile.runtimes.conversion import Conversion, artifact_folder, artifact_size, timed_step
from lab.compile.runtimes.runtime_torch import (
    ConvertedTorchSide,
    eager_side,
    to_numpy,
    torch_support,
)
from lab.compile.torch import versions as torch_versions
from lab.core.status import Status

BASE = runtime_torch  # what this module does not define, the registry takes from there


class OnnxTorchSide(ConvertedTorchSide):
    def __init__(self, task, mode: str, option: str | None):
        super().__init__(task, mode)
        self.option = option or "default"
        self.device = "cuda" if task.inputs[0].is_cuda else "cpu"
        ort_session.providers(self.device, self.option)  # skip now if this build lacks them
        self._folder = artifact_folder("lab-onnx-")
        self.runner: ort_session.Runner | None = None

    def convert(self):
        import torch

        model, inputs = self.task.model, self.task.inputs
        path = os.path.join(self._folder, "model.onnx")
        # the exporter prints its progress to stdout; the cell's log is not the place for it
        with timed_step("torch.onnx.export(dynamo=True)") as exported, \
                contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            program = torch.onnx.export(model, inputs, dynamo=True, verbose=False)
            program.save(path)
        with timed_step("onnxruntime.InferenceSession", Status.CONVERT_ERROR) as loaded:
            sess = ort_session.session(path, self.device, self.option, torch.get_num_threads())
        arrays = [t.detach().cpu().numpy() for t in inputs]
        self.runner = ort_session.Runner(sess, arrays, self.device,
                                         torch_inputs=inputs if self.device == "cuda" else None)
        conversion = Conversion(
            converter=f"torch.onnx.export(dynamo=True) {torch.__version__.split('+')[0]}",
            convert_s=exported.seconds, load_s=loaded.seconds,
            artifact_bytes=artifact_size(self._folder), artifact_format=".onnx",
            warnings=exported.warnings + loaded.warnings)
        return self.runner, conversion

    def outputs(self):
        self.converted()
        return [to_numpy(a) for a in self.runner.host_outputs()]

    def runtime_diagnostics(self) -> dict:
        return self.runner.diagnostics() if self.runner else {}


def onnx_side(task, mode: str, option: str | None) -> OnnxTorchSide:
    return OnnxTorchSide(task, mode, option)


SIDES = {"torch-eager": eager_side, "onnxruntime": onnx_side}


def support(device: str) -> Support:
    torch_ok = torch_support(device)
    if torch_ok.ok and device == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return Support.no("this onnxruntime build has no CUDAExecutionProvider "
                              "(onnxruntime-gpu)")
    return torch_ok


def versions() -> dict:
    import onnx
    import onnxscript

    return {**torch_versions(), "onnxruntime": ort_session.version(),
            "onnx": onnx.__version__, "onnxscript": onnxscript.__version__}


def cache_env(cache_dir: str) -> dict:
    return {}  # the exporter and ONNX Runtime keep nothing on disk between processes
