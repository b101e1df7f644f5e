"""What a cell process is asked (`CellSpec`) and what it answers (`CellResult`).

The contract between the parent (lab.cell.launch launches
`python -m lab.cell.main SPEC RESULT`) and the cell process (lab.cell.main): both sides are JSON
files, so each type knows its own round trip.
Knows no framework.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum

from lab.cell.measure import DEFAULT_MIN_SAMPLE_S
from lab.core import precision as precisions
from lab.core.status import Status
from lab.store import identity
from lab.workloads.base import shape_label


class CellPass(StrEnum):
    """Which pass of a cell a process runs."""

    TIMED = "timed"  # first call, accuracy, warm-up, interleaved samples
    FIRST_CALL = "first_call"  # only the first call: the warm-cache compile pass
    TRACE = "trace"  # the profiling pass: traces instead of timings (lab.profiling.trace_pass)
    COUNTS = "counts"  # under callgrind: instructions of counted steps (lab.counts)


@dataclass
class CellSpec:
    workload: str
    backend: str  # backend name without option, e.g. "torch-compile"
    option: str | None
    mode: str
    shape: dict
    precision: str  # the arithmetic, a lab.core.precision name; the storage dtype follows
    device: str
    threads: int
    repeats: int
    seed: int = 0
    min_sample_s: float = DEFAULT_MIN_SAMPLE_S
    warmup_steps: int = 3
    warmup_seconds: float = 1.0  # outlasts start-up transients seen after a compile
    # seconds from the cell process's start within which it should finish; warm-up and
    # sampling shrink to fit (None: no budget). Set below the timeout, so a valid cell that
    # is slow ends with fewer samples, said so, rather than `timeout`
    budget_s: float | None = None
    cold_l2: bool = False
    cuda_graphs: bool = False
    # infer cells timed as a server sees them: one call per sample, nothing averaged,
    # for per-call percentiles (lab.core.stats.latency_percentiles)
    latency: bool = False
    cell_pass: CellPass = CellPass.TIMED
    profile_dir: str | None = None  # where the TRACE pass writes
    extra: dict = field(default_factory=dict)
    # `lab run --env NAME=PYTHON` (lab.running.envs): {"name", "python": the interpreter the
    # cell's processes run, "packages": whose versions the process reports}; None: the lab's own
    env: dict | None = None

    def __post_init__(self):
        self.precision = precisions.resolve(self.precision).value  # `float32` means fp32

    @property
    def dtype(self) -> str:
        """The storage dtype of weights and inputs: the precision's."""
        return precisions.policy(self.precision).storage_dtype

    @classmethod
    def from_json(cls, text: str) -> CellSpec:
        data = json.loads(text)
        dtype = data.pop("dtype", None)  # a spec written before precisions existed
        data.setdefault("precision", dtype)
        data["cell_pass"] = CellPass(data.get("cell_pass", CellPass.TIMED))
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def replace(self, **changes) -> CellSpec:
        return CellSpec(**{**asdict(self), **changes})


@dataclass
class CellResult:
    """Everything a cell process reports. `phases_s` is the wall time of each phase inside
    the process; the parent adds the process's own start-up and import time."""

    status: Status = Status.OK
    reason: str | None = None
    versions: dict | None = None
    # the precision switches as the framework reports them after apply_precision
    precision_settings: dict | None = None
    first_call_s: float | None = None
    baseline_first_call_s: float | None = None
    accuracy: dict | None = None
    diagnostics: dict | None = None
    warmup: dict | None = None
    timer: str | None = None
    inner_steps: int | None = None
    samples_s: list[float] | None = None
    baseline_samples_s: list[float] | None = None
    phases_s: dict[str, float] = field(default_factory=dict)
    sampling: dict | None = None  # rounds planned and taken, and whether the budget cut them
    memory: dict | None = None  # peak memory per phase and side (lab.cell.memory)
    profile: dict | None = None  # the TRACE pass's captures
    loss: str | None = None  # train: which loss the step ran, where the workload says
    counts: dict | None = None  # the COUNTS pass: which steps were counted (lab.counts.inner)
    traceback: str | None = None
    log_tail: str | None = None
    # how the parent started the process: "fresh", or "forked" from a process that had
    # imported the framework (lab.cell.fork); set by the parent, not by the cell
    started: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CellResult:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:  # a cell process of another version of the lab: say so, do not guess
            raise ValueError(f"cell result has unknown fields: {', '.join(unknown)}")
        return cls(**{**data, "status": Status(data.get("status", Status.RUN_ERROR))})

    @classmethod
    def failed(cls, status: Status | str, reason: str, **more) -> CellResult:
        return cls(status=Status(status), reason=reason, **more)


@dataclass
class CellOutcome:
    """What the parent knows of a cell once its processes are done: the spec, the passes'
    results, the wall time of each process."""
    spec: CellSpec
    label: str  # backend label as asked for, e.g. "torch-compile:max-autotune"
    result: CellResult
    wall_s: float
    warm: CellResult | None = None  # the warm-cache first-call pass
    # wall seconds of each cell process, start to exit: with the phases the processes report,
    # this is the cell's cost breakdown (what is not a phase is start-up and imports)
    process_wall_s: list[float] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def status(self) -> Status:
        return self.result.status


def benchmark_name(spec, label: str) -> str:
    """The cell's name: workload[backend|mode|device|precision|shape]. The precision names
    the arithmetic (fp32, amp-bf16, ...; lab.core.precision), where runs stored before it existed
    named the dtype (float32). A user's workload is named by its key (lab.store.identity), not by
    the path as typed."""
    shape = shape_label(spec.shape)
    workload = identity.workload_key(spec.workload)
    return f"{workload}[{label}|{spec.mode}|{spec.device}|{spec.precision}|{shape}]"
