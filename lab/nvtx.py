"""NVTX ranges (domain `lab`) around every phase of a cell; safe on every build.

Range names are constants (`setup`, `first_call`, `warmup`, `sample`, `accuracy`, `profile`)
so a profiler groups them; the cell's identity is the range's *category* (registered once per
cell) and the sample index its payload. With no profiler attached, a range costs a few hundred
nanoseconds (`bench/bench_nvtx.py` measures it) and sits outside the timed region.
`torch.cuda.nvtx` is not used: it raises on CPU-only builds. When the `nvtx` package is absent
every range is a no-op.

For framework profilers the same phases can also be emitted as the framework's own trace
annotations, named `lab::<phase>`, so a Chrome trace shows which events belong to which
measured step: torch `record_function`, `jax.profiler.TraceAnnotation`, or
`tf.profiler.experimental.Trace`. Only the tracing pass turns these on; they cost more than NVTX.
"""

from __future__ import annotations

import contextlib

PHASES = ("setup", "first_call", "warmup", "sample", "accuracy", "profile")
DOMAIN = "lab"
ANNOTATORS = ("torch", "jax", "tf")

try:
    import nvtx as _nvtx
except ImportError:  # the lab runs without it; ranges become no-ops
    _nvtx = None


def _annotation_factory(framework: str):
    """The framework's trace annotation: a context manager taking the range's name."""
    if framework == "torch":
        from torch.profiler import record_function

        return record_function
    if framework == "jax":
        import jax.profiler

        return jax.profiler.TraceAnnotation
    if framework == "tf":
        import tensorflow as tf

        return tf.profiler.experimental.Trace
    raise ValueError(f"unknown annotator {framework!r}; valid: {', '.join(ANNOTATORS)}")


class Ranges:
    """Phase ranges for one cell.

    `annotate` names a framework ("torch", "jax", "tf") whose trace annotations mirror the NVTX
    ranges; `record_function=True` is the older spelling of `annotate="torch"`.
    """

    def __init__(self, cell_label: str, record_function: bool = False,
                 annotate: str | None = None):
        self.cell_label = cell_label
        framework = annotate or ("torch" if record_function else None)
        self._annotation = _annotation_factory(framework) if framework else None
        if _nvtx is not None:
            self._domain = _nvtx.get_domain(DOMAIN)
            self._category = self._domain.get_category_id(cell_label)
            self._attrs = {name: self._domain.get_event_attributes(message=name,
                                                                   category=self._category)
                           for name in PHASES}
        else:
            self._domain = None

    @contextlib.contextmanager
    def phase(self, name: str, payload: int | None = None):
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}; phases: {', '.join(PHASES)}")
        domain = self._domain
        if domain is not None:
            attrs = self._attrs[name] if payload is None else domain.get_event_attributes(
                message=name, category=self._category, payload=payload)
            domain.push_range(attrs)
        annotation = self._annotation(f"lab::{name}") if self._annotation else None
        if annotation is not None:
            annotation.__enter__()
        try:
            yield
        finally:
            if annotation is not None:
                annotation.__exit__(None, None, None)
            if domain is not None:
                domain.pop_range()
