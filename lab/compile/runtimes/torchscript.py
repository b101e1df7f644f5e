"""torchscript: the model as a TorchScript module, run by the TorchScript interpreter.

Options: `trace` (default) runs `torch.jit.trace` on the timed inputs, and uses
`torch.jit.script` instead where trace cannot: when tracing raises, or when it warns
(TracerWarning) that it turned a tensor's value into a constant, which may bake in one branch
of data-dependent control flow and make the artifact wrong for other inputs. When script cannot
compile the model either (it rejects much Python that trace accepts), the warned trace is kept:
its answer is still checked on the timed inputs, and the warning is in the record. `script`
compiles the Python source with `torch.jit.script` only. Which one ran, and why, is in the
diagnostics; `convert_s` includes an abandoned attempt, as a user would pay it.

torch 2.13 marks both deprecated (`torch.jit.trace is deprecated. Please switch to
torch.compile or torch.export`); the warning is recorded verbatim in the conversion record.
The TorchScript profiling executor specialises the graph during its first calls; the cell's
warm-up runs until the step time is steady, so samples see the optimised graph.
"""

from __future__ import annotations

import io

from lab.compile.protocol import Support
from lab.compile.runtimes import runtime_torch
from lab.compile.runtimes.conversion import Conversion, timed_step
from lab.compile.runtimes.runtime_torch import (
    ConvertedTorchSide,
    eager_side,
    torch_support,
)
from lab.core.status import CellFailure, Status

BASE = runtime_torch  # what this module does not define, the registry takes from there

OPTIONS = ("trace", "script")
TRACE_WARNED = "trace warned that a tensor value became a constant (TracerWarning)"


def _traced_cleanly(warning_lines: list[str]) -> bool:
    return not any(line.startswith("TracerWarning") for line in warning_lines)


class TorchScriptSide(ConvertedTorchSide):
    def __init__(self, task, mode: str, method: str):
        super().__init__(task, mode)
        if method not in OPTIONS:
            raise ValueError(f"torchscript has no option {method!r}; valid: {', '.join(OPTIONS)}")
        self.method = method
        self.fallback_reason: str | None = None
        self.method_used: str | None = None
        self.script_module = None  # the torch.jit.ScriptModule, once converted

    def convert(self):
        import torch

        model, inputs = self.task.model, self.task.inputs
        version = torch.__version__.split("+")[0]
        scripted, method, warning_lines, seconds = None, self.method, [], 0.0
        traced_module = None
        if method == "trace":
            try:
                with timed_step("torch.jit.trace") as traced, torch.no_grad():
                    # strict=False: dict outputs (a Hugging Face ModelOutput) are traced too;
                    # a model's output structure does not change with its inputs' values
                    scripted = torch.jit.trace(model, inputs, strict=False)
                seconds += traced.seconds
                warning_lines += traced.warnings
                if not _traced_cleanly(traced.warnings):
                    self.fallback_reason = TRACE_WARNED
                    traced_module, scripted = scripted, None
            except Exception as exc:  # trace cannot: script may still (the reason is kept)
                self.fallback_reason = f"trace failed: {str(exc)[:300]}"
            method = "trace" if scripted is not None else "script"
        if scripted is None:
            try:
                with timed_step("torch.jit.script", Status.CONVERT_ERROR) as compiled:
                    scripted = torch.jit.script(model)
                seconds += compiled.seconds
                warning_lines += compiled.warnings
            except CellFailure as failure:
                if traced_module is None:  # neither trace nor script can: it does not convert
                    raise
                seconds += compiled.seconds
                # script cannot either: keep the trace, whose answer the cell checks on the
                # timed inputs; its warnings and script's failure stay in the record
                self.fallback_reason += f"; script failed, trace kept: {failure.reason}"
                scripted, method = traced_module, "trace"
        self.method_used, self.script_module = method, scripted
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)  # the shippable .pt, measured outside convert_s
        conversion = Conversion(
            converter=f"torch.jit.{method} {version}", convert_s=seconds, load_s=None,
            artifact_bytes=buffer.getbuffer().nbytes, artifact_format=".pt (TorchScript)",
            warnings=warning_lines)
        return (lambda: scripted(*inputs)), conversion

    def step(self):
        import torch

        with torch.no_grad():
            return self.converted()()

    def runtime_diagnostics(self) -> dict:
        return {"method_requested": self.method,
                "method_used": self.method_used,
                "fallback_reason": self.fallback_reason,
                "deprecated": any("deprecated" in w for w in
                                  (self.conversion.warnings if self.conversion else []))}


def torchscript_side(task, mode: str, option: str | None) -> TorchScriptSide:
    return TorchScriptSide(task, mode, option or "trace")


SIDES = {"torch-eager": eager_side, "torchscript": torchscript_side}


def support(device: str) -> Support:
    return torch_support(device)


def cache_env(cache_dir: str) -> dict:
    return {}  # TorchScript keeps no compiled code on disk: cold and warm are the same work
