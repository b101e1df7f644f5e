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

    def phase(self, name: str, payload: int | None = None) -> _Phase:
        """A context manager around one phase (a class, not a generator: contextlib's
        generator machinery costs several times the NVTX calls themselves)."""
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}; phases: {', '.join(PHASES)}")
        return _Phase(self, name, payload)


class _Phase:
    __slots__ = ("_ranges", "_name", "_payload", "_annotation")

    def __init__(self, ranges: Ranges, name: str, payload: int | None):
        self._ranges, self._name, self._payload = ranges, name, payload
        self._annotation = None

    def __enter__(self):
        ranges = self._ranges
        domain = ranges._domain
        if domain is not None:
            attrs = ranges._attrs[self._name] if self._payload is None else \
                domain.get_event_attributes(message=self._name, category=ranges._category,
                                            payload=self._payload)
            domain.push_range(attrs)
        if ranges._annotation is not None:
            self._annotation = ranges._annotation(f"lab::{self._name}")
            self._annotation.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._annotation is not None:
            self._annotation.__exit__(None, None, None)
        if self._ranges._domain is not None:
            self._ranges._domain.pop_range()
