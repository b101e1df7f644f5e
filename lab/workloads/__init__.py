"""Registry of workloads: built-in families by name, or a user's `file.py:factory`."""

from __future__ import annotations

import importlib

from .base import GENERATE_MODE, MODES, Workload, shape_label  # noqa: F401

# name -> module defining WORKLOAD; modules import no framework at import time
_BUILTIN = {
    "mlp": "lab.workloads.mlp",
    "transformer": "lab.workloads.transformer",
    "resnet50": "lab.workloads.resnet",
    "gpt2": "lab.workloads.llm.gpt2",
    "llama": "lab.workloads.llm.llama",
    "llama-varlen": "lab.workloads.llm.varlen",
    "llama-graph-break": "lab.workloads.llm.graph_break",
}


class UnknownWorkload(ValueError):
    pass


def names() -> list[str]:
    return list(_BUILTIN)


def get(name: str, validate_user: bool = True) -> Workload:
    """The workload called `name`, or a user workload when `name` looks like file.py:factory."""
    if name in _BUILTIN:
        return importlib.import_module(_BUILTIN[name]).WORKLOAD
    from . import suites  # `hf/bert`: a model of a suite (lab.workloads.suites)

    if suites.suite_of(name):
        found = suites.get(name)
        if found is None:
            raise UnknownWorkload(f"unknown workload {name!r}: suite {suites.suite_of(name)} "
                                  f"has {', '.join(suites.names(suites.suite_of(name)))}")
        return found
    if ":" in name or name.endswith(".py"):
        from .user import user_workload

        return user_workload(name, validate=validate_user)
    raise UnknownWorkload(
        f"unknown workload {name!r}; valid: {', '.join(names())} or path/to/file.py:factory"
    )
