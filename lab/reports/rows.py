"""One row per stored cell, as every output shows it: the terminal table (`lab run`, `lab
show`), the markdown report, the HTML page and the CSV export render this and nothing else, so
a flag or a column cannot be shown by one of them and lost by another.

A `Row` is built once from a cell's stored fields (`lab.store.reader.cells`). It holds the numbers
(for CSV and sorting) and the words (`*_text`, for the tables), each decided here once: the
status with all its flags, the step times, the speedup and its interval, compile seconds, the
break-even and its interval, throughput, memory and the per-call tails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lab.core import precision
from lab.store import reader as results

NONE = "-"  # a field that does not apply to the cell or was not measured


def format_ms(seconds) -> str:
    """Seconds as milliseconds with the digits a table needs; `-` for none."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return NONE
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def _steps(value: float) -> str:
    return f"{value:,.0f}"


def _mib(value) -> str:
    return NONE if value is None else f"{value:,.1f}"


def _pair(value) -> tuple[float, float] | None:
    if isinstance(value, list | tuple) and len(value) == 2 and None not in value:
        return float(value[0]), float(value[1])
    return None


@dataclass(frozen=True)
class BreakEven:
    """Cold compile seconds / the seconds a compiled step saves, with the interval the
    speedup's 95% interval maps to (eager's median step held fixed): saved = eager x (1 -
    1/speedup). `state`: `steps` (the interval lies above 1x), `never` (it lies at or below
    1x: the compile never pays back), `undetermined` (it spans 1x: it may never pay back),
    or `-` (no compile timed, no speedup)."""

    state: str
    steps: float | None = None
    lo: float | None = None  # inf where the interval reaches 1x
    hi: float | None = None

    @property
    def text(self) -> str:
        if self.state != "steps":
            return self.state
        if self.lo is None:
            return _steps(self.steps)
        return f"{_steps(self.steps)} [{_steps(self.lo)}, {_steps(self.hi)}]"

    @property
    def sort_key(self) -> float | None:
        """Finite steps sort by value; never and undetermined after every finite one."""
        return self.steps if self.state == "steps" else math.inf if self.state != NONE else None


def _break_even(cell: dict, speedup, ci) -> BreakEven:
    cold = cell.get("compile_s_cold")
    if cell.get("status") != "ok" or cold is None or speedup is None:
        return BreakEven(NONE)
    if ci is None:  # no interval stored: the point estimate alone decides
        stored = cell.get("break_even_steps_cold")
        return BreakEven("steps", stored) if stored is not None else BreakEven("never")
    lo, hi = ci
    if hi <= 1:
        return BreakEven("never")
    eager = cell.get("baseline_median_s")
    if lo <= 1:
        low = cold / (eager * (1 - 1 / hi)) if eager else None
        return BreakEven("undetermined", None, low, math.inf)
    stored = cell.get("break_even_steps_cold")
    if not eager:
        return BreakEven("steps", stored) if stored is not None else BreakEven(NONE)
    steps = stored if stored is not None else cold / (eager * (1 - 1 / speedup))
    return BreakEven("steps", steps, cold / (eager * (1 - 1 / hi)),
                     cold / (eager * (1 - 1 / lo)))


@dataclass(frozen=True)
class Row:
    """Everything a user can see of one cell. Times in seconds, memory in MiB, latency tails
    in ms (as stored: `{"p50": [value, lo, hi], ...}`)."""

    cell: dict = field(repr=False)  # the stored fields, for the CSV's pass-through columns
    name: str
    workload: str
    mode: str
    backend: str
    framework: str | None
    device: str | None
    precision: str | None
    shape: str
    status: str
    reason: str | None
    flags: tuple[str, ...]  # ok cells: noisy, busy, cut by the budget, a cycle's graphs
    samples: int
    compiled: bool  # measured beside its own framework's eager baseline
    median_s: float | None  # the backend's own median step
    eager_s: float | None  # eager's median step (the cell's own for an eager backend)
    step_s: float | None  # the compiled backend's median step
    speedup: float | None
    speedup_ci95: tuple[float, float] | None
    compile_s_cold: float | None
    compile_s_warm: float | None
    break_even: BreakEven
    throughput: float | None
    throughput_ci95: tuple[float, float] | None
    throughput_unit: str | None
    memory: dict  # the cell's stored memory fields (lab.cell.memory)
    latency_ms: dict | None
    baseline_latency_ms: dict | None
    busy: bool
    other_load_cores: float | None
    noisy: bool
    graphs: int | None  # a shape cycle's graphs and recompiles (llama-varlen)
    recompiles: int | None
    # the counts pass (lab run --counts): instructions and estimated cycles per step
    counts: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    # ---------------------------------------------------------------- words

    @property
    def status_text(self) -> str:
        if self.ok:
            return f"ok ({', '.join(self.flags)})" if self.flags else "ok"
        return f"{self.status}: {self.reason}" if self.reason else self.status

    @property
    def eager_ms_text(self) -> str:
        return format_ms(self.eager_s)

    @property
    def step_ms_text(self) -> str:
        return format_ms(self.step_s)

    @property
    def speedup_text(self) -> str:
        if not self.ok or self.speedup is None or self.speedup_ci95 is None:
            return NONE
        lo, hi = self.speedup_ci95
        return f"{self.speedup:.2f}x [{lo:.2f}, {hi:.2f}]"

    @property
    def compile_text(self) -> str:
        if self.compile_s_cold is None:
            return NONE
        warm = NONE if self.compile_s_warm is None else f"{self.compile_s_warm:.1f}"
        return f"{self.compile_s_cold:.1f} / {warm}"

    @property
    def throughput_text(self) -> str:
        if not self.throughput:
            return NONE
        unit = self.throughput_unit or "/s"
        value = self.throughput
        return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.1f} {unit}"

    @property
    def memory_text(self) -> str:
        """The step's peak above what was resident; for a compiled backend eager's beside it
        (eager / compiled is the compression ratio, shown where both are measurable)."""
        mine = self.memory.get("step_peak_above_resident_mib")
        if mine is None:
            return NONE
        eager = self.memory.get("baseline_step_peak_above_resident_mib")
        if eager is None:
            return _mib(mine)
        ratio = self.memory.get("ratio_eager_over_candidate")
        return f"{_mib(eager)} / {_mib(mine)}" + (f" ({ratio:.2f}x)" if ratio is not None
                                                  else "")

    @property
    def counts_text(self) -> str:
        """Millions of instructions / estimated cycles per step (lab.counts), or why none."""
        if not self.counts:
            return NONE
        if self.counts.get("status") != "ok":
            return str(self.counts.get("status") or NONE)
        cycles = self.counts.get("cycles_per_step")
        return f"{self.counts['ir_per_step'] / 1e6:.3f} / " + (
            NONE if cycles is None else f"{cycles / 1e6:.3f}")

    @staticmethod
    def _tails(latency: dict | None) -> str:
        if not latency:
            return NONE
        return " / ".join(format_ms(latency[p][0] / 1e3) for p in ("p90", "p99"))

    @property
    def tails_text(self) -> str:
        """p90 / p99 ms per call (--latency); the p50 is the median already shown."""
        return self._tails(self.latency_ms)

    @property
    def eager_tails_text(self) -> str:
        return self._tails(self.baseline_latency_ms)


def _comm_flag(cell: dict) -> str:
    """A data-parallel cell's communication share per rank, or why its profiler shows none."""
    from lab.distributed.comm import cell_fields

    # a cell stored before the share was a field of its own: from its ranks' diagnostics
    fields = cell if "comm_share_per_rank" in cell or "comm_share_reason" in cell else \
        cell_fields(cell.get("diagnostics"))
    shares = fields.get("comm_share_per_rank") or []
    if any(x is not None for x in shares):
        return "comm " + "/".join("-" if x is None else f"{x:.2f}" for x in shares)
    return f"comm: {fields.get('comm_share_reason') or 'not measured'}"


def build(cell: dict) -> Row:
    """One stored cell (as `lab.store.reader.cells` gives it) as the row every output shows."""
    samples = len(cell.get("samples_s") or [])
    status = str(cell.get("status") or ("ok" if samples else "?"))
    compiled = cell.get("baseline_backend") is not None
    sampling = cell.get("sampling") or {}
    # a shape cycle (llama-varlen): how many graphs the cycle's lengths cost the compiler
    cycle = (cell.get("diagnostics") or {}).get("cycle") or {}
    flags = []
    if status == "ok":
        if cell.get("noisy"):
            flags.append("noisy")
        if cell.get("machine_busy"):  # other work used the cores while it ran (machine_load)
            flags.append("busy")
        if sampling.get("cut_by_budget"):
            flags.append(f"{sampling.get('rounds')} of {sampling.get('rounds_planned')} "
                         f"samples: budget")
        if cell.get("scaling_efficiency") is not None:  # a data-parallel cell (--ranks)
            flags.append(f"{cell.get('ranks')} ranks: scaling {cell['scaling_efficiency']:.2f}")
            flags.append(_comm_flag(cell))
        if "graphs" in cycle:
            flags.append(f"{cycle['graphs']} graphs, {cycle['recompiles']} recompiles over "
                         f"the cycle")
    speedup = cell.get("speedup")
    ci = _pair(cell.get("speedup_ci95"))
    shape = cell.get("shape")
    return Row(
        cell=cell, name=str(cell.get("name", "?")), workload=str(cell.get("workload", "?")),
        mode=str(cell.get("mode", "?")), backend=str(cell.get("backend", "?")),
        framework=cell.get("framework"), device=cell.get("device"),
        precision=precision.of_cell(cell),
        shape=", ".join(f"{k}={v}" for k, v in shape.items()) if isinstance(shape, dict)
        else str(shape or ""),
        status=status, reason=cell.get("reason"), flags=tuple(flags), samples=samples,
        compiled=compiled, median_s=cell.get("median_s"),
        eager_s=cell.get("baseline_median_s") if compiled else cell.get("median_s"),
        step_s=cell.get("median_s") if compiled else None,
        speedup=speedup, speedup_ci95=ci,
        compile_s_cold=cell.get("compile_s_cold"), compile_s_warm=cell.get("compile_s_warm"),
        break_even=_break_even({**cell, "status": status}, speedup, ci),
        throughput=cell.get("throughput"), throughput_ci95=_pair(cell.get("throughput_ci95")),
        throughput_unit=cell.get("throughput_unit"), memory=cell.get("memory") or {},
        latency_ms=cell.get("latency_ms"), baseline_latency_ms=cell.get("baseline_latency_ms"),
        busy=bool(cell.get("machine_busy")), other_load_cores=cell.get("other_load_cores"),
        noisy=bool(cell.get("noisy")), graphs=cycle.get("graphs"),
        recompiles=cycle.get("recompiles"), counts=cell.get("counts") or {})


def of_run(doc: dict, workload: str | None = None) -> list[Row]:
    """A stored run's rows in run order (one workload's, or all)."""
    return [build(c) for c in results.cells(doc) if not workload or c.get("workload") == workload]


def is_profile_run(doc: dict) -> bool:
    """A `lab profile` run: cells traced instead of timed, so it has no numbers to table."""
    return (doc.get("lab") or {}).get("kind") == "profile"


def start_load_warning(doc: dict) -> str | None:
    """The 1-minute load average read at the run's start, above half the cores: a warning
    only for a run whose cells carry no load of their own. The average lags by a minute
    (work that had just ended still counts in it), while each cell's sample
    (lab.running.machine_load: `other_load_cores`, `machine_busy`) says what ran beside it."""
    lab = doc.get("lab") or {}
    hardware = (doc.get("machine_info") or {}).get("lab_hardware") or {}
    load, cores = lab.get("load_avg_1m_at_start"), hardware.get("cpu_count")
    if load is None or not cores or load <= 0.5 * cores:
        return None
    if any("other_load_cores" in cell for cell in results.cells(doc)):
        return None
    return (f"the machine was busy when the run started (load {load:.1f} on {cores} cores): "
            f"CPU timings are suspect")
