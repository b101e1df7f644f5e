"""A user's own PyTorch model: `--workload path/to/file.py:factory`.

The factory takes no arguments and returns `(module, example_inputs)`, where example_inputs is
a tensor or a tuple of tensors; it may also return a dict with keys `model`, `inputs` and
optionally `loss_fn(output) -> scalar` for train mode (default: mean of the squared output,
which exercises the whole backward pass without needing labels).
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
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise UserWorkloadError(f"workload factory {spec} must give tensors as inputs")
    if loss_fn is not None and not callable(loss_fn):
        raise UserWorkloadError(f"workload factory {spec} gave a loss_fn that is not callable "
                                f"({type(loss_fn).__name__})")
    return model, inputs, loss_fn


def _squared_mean_loss(output, target=None):
    return output.float().pow(2).mean()


def user_workload(spec: str, validate: bool = True) -> Workload:
    """Build a Workload from `file.py:factory`; `validate` calls the factory once now, in this
    process (the lab validates in a child process instead: lab.runner.validate_user_workload,
    which runs this module's `main`)."""
    if validate:
        _call_factory(spec)

    def build_torch(shape: dict, mode: str, device: str, dtype: str, seed: int) -> TorchTask:
        import torch

        torch.manual_seed(seed)
        model, inputs, loss_fn = _call_factory(spec)
        dt = getattr(torch, dtype)
        model = model.to(device=device, dtype=dt)
        # infer measures inference: dropout off, batch norm on its running statistics. Left in
        # training mode, dropout makes two eager calls disagree and any accuracy check moot.
        model.train(mode == "train")
        inputs = tuple(t.to(device=device, dtype=dt) if t.is_floating_point() else t.to(device)
                       for t in inputs)
        loss = (lambda out, _target: loss_fn(out)) if loss_fn else _squared_mean_loss
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
