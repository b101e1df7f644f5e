"""What a backend is: the explicit interface every backend module implements.

A backend module (lab/compile/<family>.py) turns a workload into timed steps in one
framework. "Can it run here?" is answered by a `Support(ok, reason)` value, never by probing
attributes; every module defines every function below, so the cell never needs `hasattr`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Support:
    ok: bool
    reason: str = ""  # why not, in one line; empty when ok

    @classmethod
    def yes(cls) -> Support:
        return cls(True)

    @classmethod
    def no(cls, reason: str) -> Support:
        return cls(False, reason)


@runtime_checkable
class Side(Protocol):
    """One side of a comparison (eager or compiled) of one cell."""

    def step(self) -> Any:
        """Launch one step; return a handle that `sync` completes."""

    def sync(self, out: Any) -> Any:
        """Complete a step's handle (a no-op for synchronous frameworks)."""

    def outputs(self) -> list:
        """What accuracy is judged on, as numpy arrays: infer outputs, or loss and gradients."""

    def reference_fp64(self) -> list:
        """The same outputs from a float64 copy of the model on the same inputs."""

    def diagnostics(self) -> dict:
        """What the backend saw (graphs, breaks, recompiles, conversion); JSON-ready."""

    def mark_first_call_done(self) -> None:
        """Called after the timed first call, so later compiles count as recompiles."""

    @property
    def accuracy_tolerance(self) -> dict | None:
        """{"rtol", "atol", "why"} where this side is judged with a stated tolerance other
        than its precision's (a quantized runtime); None otherwise."""


class SideBase:
    """Defaults for the optional parts of a side: nothing to report, nothing to complete."""

    @staticmethod
    def sync(out):
        return out

    def diagnostics(self) -> dict:
        return {}

    def mark_first_call_done(self) -> None:
        pass

    accuracy_tolerance = None


def in_precision(task, precision: str, device: str):
    """`task` (or the task a ShapeCycle wraps) tagged with the arithmetic it runs in."""
    for t in (task, getattr(task, "task", None)):
        if t is not None and hasattr(t, "precision"):
            t.precision, t.device = precision, device
    return task


SideFactory = Callable[[Any, str, "str | None"], Side]  # (task, mode, option) -> side


@runtime_checkable
class BackendModule(Protocol):
    """A module of lab/compile: the backends of one framework family. A module may name the
    module it builds on as `BASE`; the registry (lab.compile.load) takes from there what the
    module does not define."""

    SIDES: dict[str, SideFactory]  # backend name -> factory

    def support(self, device: str) -> Support:
        """Whether this family can run on `device` on this machine (packages are checked
        before the module is imported)."""

    def build_task(self, workload, shape: dict, mode: str, device: str, precision: str,
                   seed: int, backend_name: str) -> Any:
        """The workload built for this framework in `precision` (a lab.core.precision name:
        its storage dtype for weights and inputs): model, inputs, target, loss. The task
        carries the precision to the sides, which run their steps in it."""

    def set_threads(self, threads: int) -> None:
        """Apply the cell's thread count to the framework (before its first op)."""

    def versions(self) -> dict:
        """The framework's versions and effective settings, read back from it."""

    def apply_precision(self, precision: str, device: str) -> dict:
        """Set the framework's precision switches for `precision` (a lab.core.precision name),
        before the workload is built; return them as the framework reports them afterwards.
        Raises CellFailure(SKIPPED, reason) where the framework cannot run that precision."""

    def process_env(self, threads: int, device: str) -> dict:
        """Environment variables the cell process needs before the framework loads."""

    def cache_env(self, cache_dir: str) -> dict:
        """Environment that points the compiler's on-disk caches at `cache_dir`."""


# the members of BackendModule, named for the error that lists what a module lacks
MODULE_ATTRIBUTES = ("SIDES", "support", "build_task", "set_threads", "versions",
                     "apply_precision", "process_env", "cache_env")
