"""PyTorch backends: eager, and torch.compile (Inductor) with a selectable mode.

Eager and compiled sides share one model (torch.compile wraps it without copying weights), so
both run on identical parameters; each side has its own optimizer for train mode. Train mode
compiles the model (forward and, through AOTAutograd, backward); the optimizer step runs eagerly
on both sides, so the comparison isolates what the compiler does to the model.

torch-compile's options: the compile modes, and `dynamic` / `static` (the default mode with
`dynamic=True` / `dynamic=False`), which matter where shapes change between steps
(`llama-varlen`: its ShapeCycle runs through lab.compile.cycle). A generate cell compiles the
model's forward (prefill and one-token decode step) and times the whole greedy loop
(lab.compile.generation).

Precision (lab.core.precision): `apply_precision` sets the TF32 switches of matmuls and cuDNN before
the model is built; the storage dtype comes from the workload builder; mixed precision runs the
forward and the loss of every step under `torch.autocast`, on both sides and in the accuracy
check, with the backward outside it (as autocast's documentation prescribes). No GradScaler:
the other frameworks scale no loss either, so every framework does the same arithmetic.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np

from lab.compile.cycle import CycleSide
from lab.compile.generation import GenerateSide
from lab.compile.protocol import SideBase, Support, in_precision
from lab.core import precision as precisions
from lab.workloads.base import GenerateTask, ShapeCycle, TorchTask


def _autocast(torch, precision: str, device: str):
    """The context a step's forward runs in: autocast to the precision's compute dtype for
    mixed precision, nothing otherwise."""
    policy = precisions.policy(precision)
    if not policy.autocast:
        return contextlib.nullcontext()
    dtype = getattr(torch, policy.compute_dtype)
    return torch.autocast("cuda" if device == "cuda" else "cpu", dtype=dtype)


OPTIMIZERS = ("sgd", "adam", "adamw")
ADAMW_WEIGHT_DECAY = 0.01  # lab.compile.jax applies the same decoupled decay


def _optimizer(torch, params, kind: str):
    """The train step's optimizer; an unknown name is an error, never a silent SGD."""
    if kind == "adam":
        return torch.optim.Adam(params, lr=1e-4, foreach=True)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=1e-4, weight_decay=ADAMW_WEIGHT_DECAY,
                                 foreach=True)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=1e-3)
    raise ValueError(f"unknown optimizer {kind!r}; valid: {', '.join(OPTIMIZERS)}")


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
            with torch.no_grad(), _autocast(torch, task.precision, task.device):
                return self.fn(*task.inputs)
        with _autocast(torch, task.precision, task.device):
            loss = task.loss_fn(self.fn(*task.inputs), task.target)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def outputs(self) -> list[np.ndarray]:
        """What accuracy is judged on: infer outputs, or train loss and every gradient."""
        task = self.task
        return _outputs(self.torch, self.fn, task, self.mode,
                        _autocast(self.torch, task.precision, task.device))

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
            "step_autocast_dtype": _step_autocast_dtype(torch, task.precision, task.device)}


def _step_autocast_dtype(torch, precision: str, device: str) -> str | None:
    """The autocast dtype torch reports inside a step's context; None when autocast is off."""
    device_type = "cuda" if device == "cuda" else "cpu"
    with _autocast(torch, precision, device):
        if not torch.is_autocast_enabled(device_type):
            return None
        return str(torch.get_autocast_dtype(device_type)).removeprefix("torch.")


def _to_numpy(t) -> np.ndarray:
    return t.detach().float().cpu().numpy().astype(np.float64) if t.is_floating_point() \
        else t.detach().cpu().numpy()


def output_tensors(out) -> list:
    """Every tensor of a model's output (tuples, lists, dicts, Hugging Face ModelOutputs) in
    the order torch.utils._pytree flattens it, which is the order torch.export and the ONNX
    exporter give a converted model's outputs: output i of a runtime is output i of eager.
    Leaves that are not tensors (None, a number, an object pytree cannot open such as a KV
    cache class it does not know) hold no answer to compare and are left out."""
    import torch
    import torch.utils._pytree as pytree

    return [x for x in pytree.tree_leaves(out) if isinstance(x, torch.Tensor)]


def _outputs(torch, fn, task: TorchTask, mode: str, autocast) -> list[np.ndarray]:
    model = task.model
    if mode == "infer":
        with torch.no_grad(), autocast:
            return [_to_numpy(t) for t in output_tensors(fn(*task.inputs))]
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


# torch-compile options that set `dynamic` rather than the mode (the mode is then "default")
DYNAMIC_OPTIONS = {"dynamic": True, "static": False}


def compile_settings(option: str | None) -> tuple[str, bool | None]:
    """(mode, dynamic) of a torch-compile option; dynamic None is torch.compile's default
    (static for the first shape, dynamic once a dimension changes)."""
    if option in DYNAMIC_OPTIONS:
        return "default", DYNAMIC_OPTIONS[option]
    return option or "default", None


class _Compiler:
    """torch.compile of a model with fresh Dynamo state; what Dynamo did, from its counters."""

    def __init__(self, torch, model, option: str | None):
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        self.torch = torch
        self.compile_mode, self.dynamic = compile_settings(option)
        self.fn = torch.compile(model, mode=self.compile_mode, dynamic=self.dynamic)
        self._graphs_after_first_call = None

    def mark_first_call_done(self) -> None:
        self._graphs_after_first_call = self._unique_graphs()

    def _unique_graphs(self) -> int:
        return int(self.torch._dynamo.utils.counters["stats"].get("unique_graphs", 0))

    def diagnostics(self) -> dict:
        from lab.workloads.llm.recompiles import dynamo_summary

        # torch 2.13 counts graph breaks under "unimplemented" (with the reason) and where the
        # graph resumed under "resumes", not under "graph_break": dynamo_summary reads all three
        summary = dynamo_summary(self.torch._dynamo.utils.counters)
        first = self._graphs_after_first_call
        return {
            "compile_mode": self.compile_mode, "dynamic": self.dynamic,
            "graph_count": summary["graphs"], "graph_breaks": summary["graph_breaks"],
            "graph_break_reasons": summary["graph_break_reasons"],
            "graph_resumed_at": summary["resumed_at"],  # function:line after each break
            # graphs compiled after the first call are recompilations (guards failed)
            "recompiles": max(0, summary["graphs"] - first) if first is not None else None,
        }


class CompiledTorchSide(TorchSide):
    """torch.compile of the model; diagnostics come from Dynamo's counters."""

    def __init__(self, task: TorchTask, mode: str, option: str | None):
        import torch

        self.compiler = _Compiler(torch, task.model, option)
        self.compile_mode = self.compiler.compile_mode
        super().__init__(task, mode, fn=self.compiler.fn)

    def mark_first_call_done(self) -> None:
        self.compiler.mark_first_call_done()

    def diagnostics(self) -> dict:
        return {**super().diagnostics(), **self.compiler.diagnostics()}


def _under_autocast(torch, fn, task: GenerateTask):
    """fn(ids, cache) run in the task's precision's autocast, as a step's forward is."""
    def forward(ids, cache):
        with _autocast(torch, task.precision, task.device):
            return fn(ids, cache)

    return forward


def _generate_side(task: GenerateTask, compiler: _Compiler | None) -> GenerateSide:
    import torch

    eager = _under_autocast(torch, task.model, task)
    tie = precisions.tolerance(task.precision)
    if compiler is None:
        return GenerateSide(task, eager, eager, tie)
    return GenerateSide(task, _under_autocast(torch, compiler.fn, task), eager, tie,
                        diagnostics=compiler.diagnostics,
                        first_call_done=compiler.mark_first_call_done)


def eager_side(task, mode: str, option=None):
    if isinstance(task, GenerateTask):
        return _generate_side(task, None)
    if isinstance(task, ShapeCycle):
        return CycleSide(task, TorchSide(task.task, mode))
    return TorchSide(task, mode)


def compiled_side(task, mode: str, option: str | None):
    import torch

    if isinstance(task, GenerateTask):
        return _generate_side(task, _Compiler(torch, task.model, option))
    if isinstance(task, ShapeCycle):
        return CycleSide(task, CompiledTorchSide(task.task, mode, option))
    return CompiledTorchSide(task, mode, option)


SIDES = {"torch-eager": eager_side, "torch-compile": compiled_side}


def build_task(workload, shape, mode, device, precision, seed, backend_name: str):
    dtype = precisions.policy(precision).storage_dtype
    return in_precision(workload.build("torch", shape, mode, device, dtype, seed),
                        precisions.resolve(precision).value, device)


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
    return precision_settings(torch, precisions.resolve(precision).value, device)


def precision_settings(torch, precision: str, device: str) -> dict:
    """The precision switches as torch reports them, and the autocast a step runs under."""
    settings = {
        "precision": precision,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "autocast_dtype": _step_autocast_dtype(torch, precision, device),
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
