"""Conversion as a phase of its own: what every inference runtime shares, framework-free.

An inference runtime (TorchScript, AOTInductor, ONNX Runtime, LiteRT, TensorRT) first turns the
framework's model into an artifact, then loads that artifact into its own runtime, then runs
it. Each step is timed apart and kept in the side's diagnostics:

- `convert_s`: export / trace / convert, the work a user pays once per model version;
- `load_s`: loading the artifact into the runtime (a session, an interpreter, a package);
- `artifact_bytes`: the size of what a user would ship.

Conversion happens on the side's first call, not in its construction: the cell times the first
call alone, so conversion + load + first run is the runtime's "compile" in the table (what a
user waits for before the first answer, and what break-even steps are computed from), and
`convert_s` / `load_s` say how that time splits. A model that does not convert ends the cell
`convert_error` with the converter's own message; the run goes on to the next cell.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from lab.compile.protocol import SideBase
from lab.core.status import CellFailure, Status

INFERENCE_ONLY = "inference runtime"  # the skip reason for train cells
MAX_MESSAGE_CHARS = 400  # a converter's message is kept to one readable line
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the ONNX exporter colours its messages


@dataclass
class Conversion:
    """How one model became a runtime artifact. Seconds and bytes, JSON-ready via as_dict."""

    converter: str  # what converted, with its version, e.g. "torch.onnx.export(dynamo=True) 2.13"
    convert_s: float = 0.0  # export/trace/convert, apart from loading and the first run
    load_s: float | None = None  # artifact -> runtime (session, interpreter, loaded package)
    artifact_bytes: int | None = None  # size of the serialized artifact a user would ship
    artifact_format: str | None = None  # ".onnx", ".tflite", ".pt2 (AOTInductor)", ...
    # the converter's own warnings, first line each (deprecations, tracer warnings): a trace
    # that specialised on one branch says so here, not silently
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def first_line(exc: BaseException) -> str:
    """The exception's message as one line, with the first line of its cause when the
    converter wraps the real reason (torch.onnx's TorchExportError wraps torch.export's)."""
    def line(e: BaseException) -> str:
        text = _ANSI.sub("", str(e)).strip()
        head = text.splitlines()[0].strip() if text else ""
        return f"{type(e).__name__}: {head}" if head else type(e).__name__

    message = line(exc)
    cause = exc.__cause__
    if cause is not None and line(cause) not in message:
        message = f"{message} (cause: {line(cause)})"
    return message[:MAX_MESSAGE_CHARS]


@dataclass
class _Timed:
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


@contextmanager
def timed_step(what: str, status: Status = Status.CONVERT_ERROR) -> Iterator[_Timed]:
    """Time one conversion step and keep its warnings; any exception ends the cell with
    `status` and `what: <the converter's first line>`."""
    timed = _Timed()
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield timed
        except CellFailure:
            raise
        except Exception as exc:
            raise CellFailure(status, f"{what}: {first_line(exc)}") from exc
        finally:
            timed.seconds = time.perf_counter() - start
    seen: list[str] = []
    for w in caught:
        text = f"{w.category.__name__}: {str(w.message).strip().splitlines()[0]}" \
            if str(w.message).strip() else w.category.__name__
        if text not in seen:
            seen.append(text)
    timed.warnings = seen


def artifact_size(path: str) -> int:
    """Bytes of a file, or of every file under a folder (a SavedModel, ONNX external data)."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _dirs, files in os.walk(path) for name in files)


def artifact_folder(prefix: str) -> str:
    """A folder for a converted artifact, alive as long as the cell process. It is made in the
    process's temp folder, which lab.cell.launch points inside the cell's scratch folder and removes
    on every path (a `convert_error`, a crash, a signal): the cell process exits without
    teardown, so nothing here could rely on a finalizer to remove it."""
    return tempfile.mkdtemp(prefix=prefix)


def refuse_autocast(precision: str) -> None:
    """Mixed precision is skipped: the eager side enters autocast per step, but a converted
    artifact runs in the dtype it was exported in, so the two would not compute the same."""
    from lab.core import precision as precisions

    if precisions.policy(precision).autocast:
        raise CellFailure(Status.SKIPPED, f"{precision}: inference runtimes run the converted "
                                          f"model in its stored dtype, not under autocast")


def require_infer(mode: str) -> None:
    """Inference runtimes have no training step: a train cell is skipped, not failed."""
    if mode != "infer":
        raise CellFailure(Status.SKIPPED, INFERENCE_ONLY)


class ConvertedSide(SideBase):
    """A side that runs a converted model. Subclasses implement `convert()`, which returns the
    zero-argument call that runs one step on the timed inputs and the Conversion record, plus
    `outputs()` / `reference_fp64()` for their framework.

    The conversion runs on the first `step()` (see the module docstring for why)."""

    def __init__(self, mode: str):
        require_infer(mode)
        self.mode = mode
        self.conversion: Conversion | None = None
        self._run: Callable[[], Any] | None = None

    def convert(self) -> tuple[Callable[[], Any], Conversion]:
        raise NotImplementedError

    def converted(self) -> Callable[[], Any]:
        """The runtime's step, converting first if that has not happened yet."""
        if self._run is None:
            self._run, self.conversion = self.convert()
        return self._run

    def step(self):
        return self.converted()()

    @staticmethod
    def sync(out):
        # every runtime here returns finished results (host arrays, or torch tensors that the
        # cell's CUDA events order after the work)
        return out

    def mark_first_call_done(self) -> None:
        pass  # no recompilation to watch for: the artifact is fixed once converted

    def runtime_diagnostics(self) -> dict:
        """What this runtime saw (providers, delegate, method); overridden per runtime."""
        return {}

    def diagnostics(self) -> dict:
        return {"conversion": self.conversion.as_dict() if self.conversion else None,
                **self.runtime_diagnostics()}
