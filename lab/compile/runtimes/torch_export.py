"""torch-export: `torch.export` to an ExportedProgram, compiled ahead of time by AOTInductor into
a `.pt2` package, loaded back with `aoti_load_package` and run: the deployment path torch
recommends in place of TorchScript.

Two steps, two statuses: `torch.export.export` failing (data-dependent control flow, an
unsupported construct) is the model not converting, `convert_error` with export's own
message; AOTInductor failing to build the exported graph is a compiler failure,
`compile_error`. On the CPU AOTInductor compiles and links C++ (tens of seconds on 2 cores);
its on-disk caches are Inductor's, pointed at the cell's cache folder like torch.compile's, so
the warm pass measures a warm build.
"""

from __future__ import annotations

import os

from lab.compile import torch as torch_backend
from lab.compile.protocol import Support
from lab.compile.runtimes import runtime_torch
from lab.compile.runtimes.conversion import Conversion, artifact_folder, artifact_size, timed_step
from lab.compile.runtimes.runtime_torch import (
    ConvertedTorchSide,
    eager_side,
    torch_support,
)
from lab.core.status import Status

BASE = runtime_torch  # what this module does not define, the registry takes from there


class ExportedSide(ConvertedTorchSide):
    def __init__(self, task, mode: str):
        super().__init__(task, mode)
        # the package lives as long as the side; the folder goes with the cell's scratch folder
        self._folder = artifact_folder("lab-aoti-")
        self.export_s: float | None = None
        self.aoti_compile_s: float | None = None

    def convert(self):
        import torch
        import torch._inductor

        model, inputs = self.task.model, self.task.inputs
        version = torch.__version__.split("+")[0]
        with timed_step("torch.export.export") as exported, torch.no_grad():
            program = torch.export.export(model, inputs)
        path = os.path.join(self._folder, "model.pt2")
        with timed_step("AOTInductor (aoti_compile_and_package)", Status.COMPILE_ERROR) as built:
            package = torch._inductor.aoti_compile_and_package(program, package_path=path)
        with timed_step("aoti_load_package", Status.RUN_ERROR) as loaded:
            runner = torch._inductor.aoti_load_package(package)
        self.export_s, self.aoti_compile_s = exported.seconds, built.seconds
        conversion = Conversion(
            converter=f"torch.export.export + aoti_compile_and_package {version}",
            convert_s=exported.seconds + built.seconds, load_s=loaded.seconds,
            artifact_bytes=artifact_size(package), artifact_format=".pt2 (AOTInductor package)",
            warnings=exported.warnings + built.warnings)
        return (lambda: runner(*inputs)), conversion

    def step(self):
        import torch

        with torch.no_grad():
            return self.converted()()

    def runtime_diagnostics(self) -> dict:
        return {"export_s": self.export_s, "aoti_compile_s": self.aoti_compile_s}


def export_side(task, mode: str, option: str | None) -> ExportedSide:
    return ExportedSide(task, mode)


SIDES = {"torch-eager": eager_side, "torch-export": export_side}


def support(device: str) -> Support:
    torch_ok = torch_support(device)
    if not torch_ok.ok:
        return torch_ok
    if device == "cpu":
        from torch._inductor import cpp_builder

        try:  # Inductor's own search (config.cpp.cxx, then g++); it raises when none is found
            cpp_builder.get_cpp_compiler()
        except Exception as exc:
            return Support.no(f"AOTInductor needs a C++ compiler: {str(exc).splitlines()[0]}")
    return Support.yes()


def cache_env(cache_dir: str) -> dict:
    return torch_backend.cache_env(cache_dir)  # AOTInductor builds through Inductor's caches
