"""How a cell ends: exactly one status, and the exception that ends a cell early with one.

The values are the strings stored in results.json (`extra_info.status`), so a `Status` compares
equal to the text it was stored as.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    OK = "ok"
    FAIL_ACCURACY = "fail_accuracy"  # a fast wrong answer: no speedup is reported
    EAGER_NONDETERMINISTIC = "eager_nondeterministic"  # two eager runs disagree: no reference
    COMPILE_ERROR = "compile_error"
    CONVERT_ERROR = "convert_error"  # an inference runtime could not convert the model
    RUN_ERROR = "run_error"
    TIMEOUT = "timeout"
    OOM = "oom"
    LOST = "lost"  # the node running the cell went away (distributed executors)
    SKIPPED = "skipped"  # always with a reason

    @property
    def failed(self) -> bool:
        """A status that makes `lab run` exit 1: the cell was meant to run and did not pass."""
        return self not in (Status.OK, Status.SKIPPED)


# what allocators say when memory runs out: CUDA's and XLA's "out of memory", torch's CPU
# allocator "DefaultCPUAllocator: can't allocate memory", Windows' "not enough memory"; the
# cell matches its exception against these, the runner a dead cell's log
OOM_MARKERS = ("out of memory", "can't allocate memory", "not enough memory",
               "resource_exhausted")


class CellFailure(Exception):
    """Raised inside a cell process to end the cell with `status` and a one-line reason."""

    def __init__(self, status: Status | str, reason: str):
        super().__init__(reason)
        self.status, self.reason = Status(status), reason
