"""A user's own PyTorch model: `--workload path/to/file.py:factory`.

The factory takes no arguments and returns `(module, example_inputs)`; it may also return a
dict with keys `model`, `inputs` and optionally `loss_fn(output) -> scalar` for train mode.
Inputs are a tensor, a tuple of tensors, a dict of keyword tensors (`model(input_ids=...,
attention_mask=...)`, as a Hugging Face model takes them), or a tuple of tensors ending with
such a dict. Outputs may be a tensor, or tuples, lists, dicts and Hugging Face `ModelOutput`s
of tensors: every tensor in them is judged.

Train mode's loss, when the factory gives none (DefaultLoss): the model's own `loss` when its
output holds one (a Hugging Face model given `labels`), otherwise the sum over the output's
floating-point tensors of the mean of their squares, which exercises the whole backward pass
without needing labels. Which one ran is stored in the cell (`loss`).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from .base import TorchTask, Workload


class UserWorkloadError(ValueError):
    """The user's file or factory cannot give a workload; the message is one line."""


def _load_factory(spec: str):
    path_text, sep, factory_name = spec.rpartition(":")
    if not sep or not path_text or not factory_name:
        raise UserWorkloadError(f"workload {spec!r}: expected path/to/file.py:factory")
    path = Path(path_text)
    if not path.is_file():
        raise UserWorkloadError(f"workload file not found: {path_text}")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    module_spec = importlib.util.spec_from_file_location(f"lab_user_workload_{digest}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: any error is theirs to see, on one line
        raise UserWorkloadError(f"workload file {path_text} failed to import: "
                                f"{type(exc).__name__}: {exc}") from exc
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise UserWorkloadError(f"workload file {path_text} has no callable {factory_name!r}")
    return factory


def _call_factory(spec: str):
    import torch

    factory = _load_factory(spec)
    try:
        made = factory()
    except Exception as exc:
        raise UserWorkloadError(
            f"workload factory {spec} raised {type(exc).__name__}: {exc}") from exc
    loss_fn = None
    if isinstance(made, dict):
        model, inputs, loss_fn = made.get("model"), made.get("inputs"), made.get("loss_fn")
    elif isinstance(made, (tuple, list)) and len(made) == 2:
        model, inputs = made
    else:
        raise UserWorkloadError(f"workload factory {spec} must return (module, inputs) "
                                f"or a dict with 'model' and 'inputs'")
    if not isinstance(model, torch.nn.Module):
        raise UserWorkloadError(f"workload factory {spec} returned {type(model).__name__}, "
                                f"not a torch.nn.Module")
    args, kwargs = _split_inputs(torch, inputs, spec)
    if loss_fn is not None and not callable(loss_fn):
        raise UserWorkloadError(f"workload factory {spec} gave a loss_fn that is not callable "
                                f"({type(loss_fn).__name__})")
    return model, args, kwargs, loss_fn


INPUTS_FORMS = ("a tensor, a tuple of tensors, a dict of keyword tensors, or a tuple of "
                "tensors ending with such a dict")


def _split_inputs(torch, inputs, spec: str) -> tuple[tuple, dict]:
    """(positional tensors, keyword tensors) from the factory's inputs (INPUTS_FORMS)."""
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if isinstance(inputs, dict):
        args, kwargs = (), inputs
    elif isinstance(inputs, (tuple, list)) and inputs and isinstance(inputs[-1], dict):
        args, kwargs = tuple(inputs[:-1]), inputs[-1]
    elif isinstance(inputs, (tuple, list)):
        args, kwargs = tuple(inputs), {}
    else:
        args, kwargs = None, {}
    bad = [name for name, value in kwargs.items()
           if not isinstance(name, str) or not isinstance(value, torch.Tensor)]
    if args is None or not (args or kwargs) or bad or \
            not all(isinstance(t, torch.Tensor) for t in args):
        why = f" (keyword {bad[0]!r} is not a tensor)" if bad else ""
        raise UserWorkloadError(f"workload factory {spec} must give tensors as inputs: "
                                f"{INPUTS_FORMS}{why}")
    return args, dict(kwargs)


def _keyword_inputs(torch, model, n_positional: int, names: tuple[str, ...]):
    """`model(*args, **kwargs)` as a module called with positional tensors only: every backend
    calls `model(*inputs)` (torch.jit.trace and AOTInductor's runner take no keywords), so the
    keyword tensors travel after the positional ones and are named again here. Both sides of a
    cell run the same wrapper; torch.compile traces through it."""

    class KeywordInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            named = dict(zip(names, tensors[n_positional:], strict=True))
            return self.model(*tensors[:n_positional], **named)

    return KeywordInputs()


class DefaultLoss:
    """Train mode's loss when the factory gives none (see the module docstring). `used` says
    which of the two ran, for the cell's record."""

    OWN = "the model's own loss (output.loss)"
    SQUARES = "sum over the output's floating-point tensors of the mean of their squares"

    def __init__(self):
        self.used: str | None = None

    def __call__(self, output, target=None):
        import torch
        import torch.utils._pytree as pytree

        own = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
        if isinstance(own, torch.Tensor) and own.ndim == 0 and own.is_floating_point():
            self.used = self.OWN
            return own
        self.used = self.SQUARES
        floats = [t for t in pytree.tree_leaves(output)
                  if isinstance(t, torch.Tensor) and t.is_floating_point()]
        if not floats:
            raise TypeError(f"the model's output ({type(output).__name__}) holds no "
                            f"floating-point tensor to train on; give a loss_fn")
        return sum(t.float().pow(2).mean() for t in floats)


class _GivenLoss:
    """The factory's loss_fn(output), called as the backends call a loss."""

    used = "the factory's loss_fn"

    def __init__(self, loss_fn):
        self.loss_fn = loss_fn

    def __call__(self, output, target=None):
        return self.loss_fn(output)


def user_workload(spec: str, validate: bool = True) -> Workload:
    """Build a Workload from `file.py:factory`; `validate` calls the factory once now, in this
    process (the lab validates in a child process instead: lab.cell.launch.validate_user_workload,
    which runs this module's `main`)."""
    if validate:
        _call_factory(spec)

    def build_torch(shape: dict, mode: str, device: str, dtype: str, seed: int) -> TorchTask:
        import torch

        torch.manual_seed(seed)
        model, args, kwargs, loss_fn = _call_factory(spec)
        dt = getattr(torch, dtype)
        model = model.to(device=device, dtype=dt)
        # infer measures inference: dropout off, batch norm on its running statistics. Left in
        # training mode, dropout makes two eager calls disagree and any accuracy check moot.
        model.train(mode == "train")
        if kwargs:
            model = _keyword_inputs(torch, model, len(args), tuple(kwargs))
        inputs = tuple(t.to(device=device, dtype=dt) if t.is_floating_point() else t.to(device)
                       for t in (*args, *kwargs.values()))
        loss = _GivenLoss(loss_fn) if loss_fn else DefaultLoss()
        return TorchTask(model=model, inputs=inputs, target=None, loss_fn=loss, optimizer="sgd")

    return Workload(
        name=spec,
        summary=f"user workload {spec}",
        default_shape=lambda device: {},
        flops=lambda shape, mode: float("nan"),  # unknown: the lab does not guess
        items_per_step=lambda shape: 1,
        throughput_unit="steps/s",
        builders={"torch": build_torch},
        source=spec,
    )


INVALID_EXIT = 3  # `main`'s exit code for a factory that does not give a valid workload


def main(argv: list[str]) -> int:
    """`python -m lab.workloads.user FILE.py:FACTORY`: call the factory and check what it
    returns; exit 0 when valid, INVALID_EXIT with the reason as the last line on stderr."""
    import sys

    try:
        _call_factory(argv[0])
    except UserWorkloadError as exc:
        print(str(exc).splitlines()[0] if str(exc) else "invalid workload", file=sys.stderr)
        return INVALID_EXIT
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
