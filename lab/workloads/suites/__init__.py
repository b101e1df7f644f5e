"""Model suites: many real models under one name (`lab run --suite hf`), each a workload named
`SUITE/MODEL` (`hf/bert`). A suite says what a compiler does over the models people run,
where the lab's own workloads say it for five; lab.judge.scorecard summarizes a suite's cells.

Sizes: `real` (the models' published sizes) and `tiny` (a cell in seconds on a CPU), the shape
key `tiny` of every suite workload (0 or 1), so the size is part of each benchmark's name.
"""

from __future__ import annotations

import importlib

# name -> module with ENTRIES and workload(entry)
SUITES = {"hf": "lab.workloads.suites.hf", "keras": "lab.workloads.suites.keras"}
SIZES = ("real", "tiny")


class UnknownSuite(ValueError):
    pass


def _module(suite: str):
    if suite not in SUITES:
        raise UnknownSuite(f"unknown suite {suite!r}; valid: {', '.join(SUITES)}")
    return importlib.import_module(SUITES[suite])


def suite_of(workload: str) -> str | None:
    """The suite a workload name belongs to (`hf/bert` -> `hf`), or None."""
    head, sep, _ = workload.partition("/")
    return head if sep and head in SUITES else None


def entries(suite: str) -> list:
    return list(_module(suite).ENTRIES)


def names(suite: str) -> list[str]:
    """The suite's workload names, in the registry's order."""
    return [e.workload_name for e in entries(suite)]


def entry(workload: str):
    suite = suite_of(workload)
    return _module(suite).BY_NAME.get(workload) if suite else None


def get(workload: str):
    """The Workload of a suite model, or None when `workload` names none."""
    found = entry(workload)
    return _module(suite_of(workload)).workload(found) if found else None


def size_shape(size: str) -> dict:
    """The shape keys a --size sets on every suite workload."""
    if size not in SIZES:
        raise UnknownSuite(f"unknown size {size!r}; valid: {', '.join(SIZES)}")
    return {"tiny": int(size == "tiny")}


def check_size_and_seq(name: str, max_seq: int, shape: dict) -> str | None:
    """What every suite model refuses: a `tiny` key other than 0/1, a sequence its config cannot
    take. None when the shape is fine."""
    if shape.get("tiny") not in (0, 1):
        return f"--shape tiny={shape.get('tiny')}: 0 (the real size) or 1 (tiny)"
    if shape.get("seq", 0) > max_seq:
        return f"{name} takes sequences of at most {max_seq}"
    return None
