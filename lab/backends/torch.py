"""PyTorch backends: eager, and torch.compile (Inductor) with a selectable mode.

Eager and compiled sides share one model (torch.compile wraps it without copying weights), so
both run on identical parameters; each side has its own optimizer for train mode. Train mode
compiles the model (forward and, through AOTAutograd, backward); the optimizer step runs eagerly
on both sides, so the comparison isolates what the compiler does to the model.
"""

from __future__ import annotations

import copy

import numpy as np

from lab.backends import flatten_outputs
from lab.backends.protocol import SideBase, Support
from lab.workloads.base import TorchTask


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
            with torch.no_grad():
                return self.fn(*task.inputs)
        loss = task.loss_fn(self.fn(*task.inputs), task.target)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def outputs(self) -> list[np.ndarray]:
        """What accuracy is judged on: infer outputs, or train loss and every gradient."""
        return _outputs(self.torch, self.fn, self.task, self.mode)

    def reference_fp64(self) -> list[np.ndarray]:
        """The same outputs from a float64 copy of the model, on the same inputs."""
        torch, task = self.torch, self.task
        model64 = copy.deepcopy(task.model).double()
        inputs64 = tuple(t.double() if t.is_floating_point() else t for t in task.inputs)
        target = task.target
        if target is not None and target.is_floating_point():
            target = target.double()
        return _outputs(torch, model64, TorchTask(model64, inputs64, target, task.loss_fn),
                        self.mode)


def _to_numpy(t) -> np.ndarray:
    return t.detach().float().cpu().numpy().astype(np.float64) if t.is_floating_point() \
        else t.detach().cpu().numpy()


def _outputs(torch, fn, task: TorchTask, mode: str) -> list[np.ndarray]:
    model = task.model
    if mode == "infer":
        with torch.no_grad():
            return [_to_numpy(t) for t in flatten_outputs(fn(*task.inputs))]
    for p in model.parameters():
        p.grad = None
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
        breaks = dict(counters.get("graph_break", {}))
        graphs = self._unique_graphs()
        first = self._graphs_after_first_call
        return {
            "compile_mode": self.compile_mode,
            "graph_count": graphs,
            "graph_breaks": int(sum(breaks.values())),
            "graph_break_reasons": sorted(str(k) for k in breaks)[:20],
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


def process_env(threads: int, device: str) -> dict:
    """torch sizes its pools from OMP_NUM_THREADS, which the runner sets for every cell."""
    return {}


def cache_env(cache_dir: str) -> dict:
    """Point Inductor's on-disk caches (FX graph, AOTAutograd, C++ and Triton builds) at
    `cache_dir`: an empty folder gives a cold compile, the same folder again a warm one."""
    import os

    return {"TORCHINDUCTOR_CACHE_DIR": cache_dir,
            "TRITON_CACHE_DIR": os.path.join(cache_dir, "triton")}
