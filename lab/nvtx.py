"""NVTX ranges (domain `lab`) around every phase of a cell; safe on every build.

Range names are constants (`setup`, `first_call`, `warmup`, `sample`, `accuracy`, `profile`)
so a profiler groups them; the cell's identity is the range's *category* (registered once per
cell) and the sample index its payload. With no profiler attached, the `nvtx` package's calls
cost well under a microsecond and are outside the timed region. `torch.cuda.nvtx` is not used:
it raises on CPU-only builds. When the `nvtx` package is absent every range is a no-op.

For torch.profiler traces the same phases can also be emitted as `record_function` ranges
(named `lab::<phase>`), which Chrome-trace tools such as Holistic Trace Analysis list.
"""

from __future__ import annotations

import contextlib

PHASES = ("setup", "first_call", "warmup", "sample", "accuracy", "profile")

try:
    import nvtx as _nvtx
except ImportError:  # the lab runs without it; ranges become no-ops
    _nvtx = None


class Ranges:
    """Phase ranges for one cell."""

    def __init__(self, cell_label: str, record_function: bool = False):
        self.cell_label = cell_label
        self._record_function = None
        if record_function:
            from torch.profiler import record_function as rf

            self._record_function = rf
        if _nvtx is not None:
            self._domain = _nvtx.get_domain("lab")
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
        rf = self._record_function(f"lab::{name}") if self._record_function else None
        if rf is not None:
            rf.__enter__()
        try:
            yield
        finally:
            if rf is not None:
                rf.__exit__(None, None, None)
            if domain is not None:
                domain.pop_range()

