"""PyTorch backends: eager, and torch.compile (Inductor) with a selectable mode.

Eager and compiled sides share one model (torch.compile wraps it without copying weights), so
both run on identical parameters; each side has its own optimizer for train mode. Train mode
compiles the model (forward and, through AOTAutograd, backward); the optimizer step runs eagerly
on both sides, so the comparison isolates what the compiler does to the model.

Precision (lab.precision): `apply_precision` sets the TF32 switches of matmuls and cuDNN before
the model is built; the storage dtype comes from the workload builder; mixed precision runs the
forward and the loss of every step under `torch.autocast`, on both sides and in the accuracy
check, with the backward outside it (as autocast's documentation prescribes). No GradScaler:
the other frameworks scale no loss either, so every framework does the same arithmetic.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np

from lab import precision as precisions
from lab.backends import flatten_outputs
from lab.backends.protocol import SideBase, Support
from lab.workloads.base import TorchTask

# what apply_precision set in this process: {"precision": name, "device": device}
_PRECISION: dict = {}


def _autocast(torch):
    """The context a step's forward runs in: autocast to the precision's compute dtype for
    mixed precision, nothing otherwise (or before apply_precision was called)."""
    if not _PRECISION or not precisions.policy(_PRECISION["precision"]).autocast:
        return contextlib.nullcontext()
    dtype = getattr(torch, precisions.policy(_PRECISION["precision"]).compute_dtype)
    return torch.autocast("cuda" if _PRECISION["device"] == "cuda" else "cpu", dtype=dtype)


def _optimizer(torch, params, kind: str):
    if kind == "adam":
        return torch.optim.Adam(params, lr=1e-4, foreach=True)
    return torch.optim.SGD(params, lr=1e-3)


class TorchSide(SideBase):
    """One side (eager or compiled) of a torch cell: step(), outputs() and diagnostics()."""

    def __init__(self, task: TorchTask, mode: str, fn=None):
        import torch

        self.torch = torch
        self.task = task
        self.mode = mode
        self.fn = fn if fn is not None else task.model
        self.optimizer = (_optimizer(torch, task.model.parameters(), task.optimizer)
                          if mode == "train" else None)

    def step(self):
        torch, task = self.torch, self.task
        if self.mode == "infer":
            with torch.no_grad(), _autocast(torch):
                return self.fn(*task.inputs)
        with _autocast(torch):
            loss = task.loss_fn(self.fn(*task.inputs), task.target)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def outputs(self) -> list[np.ndarray]:
        """What accuracy is judged on: infer outputs, or train loss and every gradient."""
        return _outputs(self.torch, self.fn, self.task, self.mode, _autocast(self.torch))

    def diagnostics(self) -> dict:
        return {"precision": _model_precision(self.torch, self.task)}

    def reference_fp64(self) -> list[np.ndarray]:
        """The same outputs from a float64 copy of the model, on the same inputs."""
        torch, task = self.torch, self.task
        model64 = copy.deepcopy(task.model).double()
        inputs64 = tuple(t.double() if t.is_floating_point() else t for t in task.inputs)
        target = task.target
        if target is not None and target.is_floating_point():
            target = target.double()
        return _outputs(torch, model64, TorchTask(model64, inputs64, target, task.loss_fn),
                        self.mode, contextlib.nullcontext())


def _model_precision(torch, task: TorchTask) -> dict:
    """The dtypes the model really holds and the autocast its steps really run under."""
    params = {str(p.dtype).removeprefix("torch.") for p in task.model.parameters()}
    inputs = {str(t.dtype).removeprefix("torch.") for t in task.inputs
              if hasattr(t, "is_floating_point") and t.is_floating_point()}
    return {"parameter_dtypes": sorted(params), "input_dtypes": sorted(inputs),
            "step_autocast_dtype": _step_autocast_dtype(torch)}


def _step_autocast_dtype(torch) -> str | None:
    """The autocast dtype torch reports inside a step's context; None when autocast is off."""
    device_type = "cuda" if _PRECISION.get("device") == "cuda" else "cpu"
    with _autocast(torch):
        if not torch.is_autocast_enabled(device_type):
            return None
        return str(torch.get_autocast_dtype(device_type)).removeprefix("torch.")


def _to_numpy(t) -> np.ndarray:
    return t.detach().float().cpu().numpy().astype(np.float64) if t.is_floating_point() \
        else t.detach().cpu().numpy()


def _outputs(torch, fn, task: TorchTask, mode: str, autocast) -> list[np.ndarray]:
    model = task.model
    if mode == "infer":
        with torch.no_grad(), autocast:
            return [_to_numpy(t) for t in flatten_outputs(fn(*task.inputs))]
    for p in model.parameters():
        p.grad = None
    with autocast:
        loss = task.loss_fn(fn(*task.inputs), task.target)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    result = [_to_numpy(loss)] + [_to_numpy(g) for g in grads]
    for p in model.parameters():
        p.grad = None
    return result


def eager_side(task: TorchTask, mode: str, option=None) -> TorchSide:
    return TorchSide(task, mode)


class CompiledTorchSide(TorchSide):
    """torch.compile of the model; diagnostics come from Dynamo's counters."""

    def __init__(self, task: TorchTask, mode: str, compile_mode: str):
        import torch

        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        self.compile_mode = compile_mode
        super().__init__(task, mode, fn=torch.compile(task.model, mode=compile_mode))
        self._graphs_after_first_call = None

    def mark_first_call_done(self) -> None:
        self._graphs_after_first_call = self._unique_graphs()

    def _unique_graphs(self) -> int:
        return int(self.torch._dynamo.utils.counters["stats"].get("unique_graphs", 0))

    def diagnostics(self) -> dict:
        counters = self.torch._dynamo.utils.counters
        # Dynamo counts graph breaks under "graph_break" in older releases; torch 2.13 leaves
        # that empty and counts them (with the reason as key) under "unimplemented", so a
        # data-dependent branch showed 2 graphs and 0 breaks. Read both, count the larger.
        breaks = dict(counters.get("graph_break", {}))
        unimplemented = dict(counters.get("unimplemented", {}))
        count = max(sum(breaks.values()), sum(unimplemented.values()))
        reasons = {(str(k).strip().splitlines() or [""])[0] for k in (*breaks, *unimplemented)}
        graphs = self._unique_graphs()
        first = self._graphs_after_first_call
        return {
            **super().diagnostics(),
            "compile_mode": self.compile_mode,
            "graph_count": graphs,
            "graph_breaks": int(count),
            "graph_break_reasons": sorted(reasons)[:20],
            # graphs compiled after the first call are recompilations (guards failed)
            "recompiles": max(0, graphs - first) if first is not None else None,
        }


def compiled_side(task: TorchTask, mode: str, option: str | None) -> CompiledTorchSide:
    return CompiledTorchSide(task, mode, option or "default")


SIDES = {"torch-eager": eager_side, "torch-compile": compiled_side}


def build_task(workload, shape, mode, device, dtype, seed, backend_name: str):
    return workload.build("torch", shape, mode, device, dtype, seed)


def support(device: str) -> Support:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        return Support.no("no CUDA device")
    return Support.yes()


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def versions() -> dict:
    import torch

    return {"torch": torch.__version__, "cuda": torch.version.cuda}


def apply_precision(precision: str, device: str) -> dict:
    """TF32 on or off for float32 matmuls (torch's matmul precision and the CUDA flag) and
    cuDNN convolutions alike, which torch's defaults do not (matmuls off, cuDNN on); mixed
    precision keeps its float32 ops strict. Autocast itself is entered per step."""
    import torch

    policy = precisions.policy(precision)
    torch.backends.cuda.matmul.allow_tf32 = policy.tf32
    torch.backends.cudnn.allow_tf32 = policy.tf32
    torch.set_float32_matmul_precision("high" if policy.tf32 else "highest")
    _PRECISION.update(precision=precisions.resolve(precision).value, device=device)
    return precision_settings(torch, device)


def precision_settings(torch, device: str) -> dict:
    """The precision switches as torch reports them, and the autocast a step runs under."""
    settings = {
        "precision": _PRECISION.get("precision"),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "autocast_dtype": _step_autocast_dtype(torch),
    }
    # torch >= 2.9 also keeps a per-backend float32 precision ("ieee", "tf32", or "none" for
    # inherit); oneDNN's is the one that can matter on a CPU
    for name, path in (("cuda_matmul_fp32_precision", ("cuda", "matmul")),
                       ("cudnn_conv_fp32_precision", ("cudnn", "conv")),
                       ("mkldnn_matmul_fp32_precision", ("mkldnn", "matmul"))):
        holder = torch.backends
        for part in path:
            holder = getattr(holder, part, None)
        value = getattr(holder, "fp32_precision", None)
        if value is not None:
            settings[name] = str(value)
    if device == "cuda":
        major, minor = torch.cuda.get_device_capability()
        settings["gpu_capability"] = f"{major}.{minor}"
        settings["tf32_hardware"] = major >= 8  # TF32 tensor cores: Ampere and later
    else:
        settings["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return settings


def process_env(threads: int, device: str) -> dict:
    """torch sizes its pools from OMP_NUM_THREADS, which the runner sets for every cell."""
    return {}


def cache_env(cache_dir: str) -> dict:
    """Point Inductor's on-disk caches (FX graph, AOTAutograd, C++ and Triton builds) at
    `cache_dir`: an empty folder gives a cold compile, the same folder again a warm one."""
    import os

    return {"TORCHINDUCTOR_CACHE_DIR": cache_dir,
            "TRITON_CACHE_DIR": os.path.join(cache_dir, "triton")}
