"""Claims: is a quoted performance claim supported, refuted or inconclusive on this machine?

Each claim of a claim file (lab.judge.claims) is judged on stored cells: the measured ratio with its
95% interval against the claim's range, with the hardware and the compile cost beside it
(docs/verdicts.md). Running the cells a claim needs is the command's job (lab.commands).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lab.core import precision, stats
from lab.store.reader import cells, process_medians


@dataclass
class CellRatio:
    """One cell's measured ratio for a claim, or why there is none."""

    label: str  # "mlp train"
    ratio: float | None = None
    ci95: tuple[float, float] | None = None
    verdict: str = "inconclusive"
    reason: str = ""
    compile_note: str = ""
    detail: str = ""  # rank-test p value and minimum detectable ratio, where they apply


def judge(claim, lo: float, hi: float) -> str:
    """The claim's interval [low, high] against a measured 95% interval [lo, hi]."""
    high = math.inf if claim.expect == "up_to" else claim.high  # beating "up to X" refutes nothing
    if lo >= claim.low and hi <= high:
        return "supported"
    if hi < claim.low or lo > high:
        return "refuted"
    return "inconclusive"


def _compile_note(cell: dict) -> str:
    if cell.get("compile_s_cold") is None:
        return ""

    def steps(v):
        return "never (not faster)" if v is None else f"{v:,.0f}"

    warm = cell.get("compile_s_warm")
    return (f"{cell['backend']}: compile {cell['compile_s_cold']:.1f} s cold"
            + (f" / {warm:.1f} s warm" if warm is not None else "")
            + f", break-even steps {steps(cell.get('break_even_steps_cold'))} cold"
            + (f" / {steps(cell.get('break_even_steps_warm'))} warm" if warm is not None else ""))


def _unusable(cell: dict | None, what: str) -> str | None:
    if cell is None:
        return f"{what}: not measured"
    if cell.get("status") != "ok":
        return f"{what}: {cell.get('status')} ({cell.get('reason') or 'no reason given'})"
    if not cell.get("samples_s"):
        return f"{what}: no samples"
    return None


def _speedup(cell: dict) -> stats.Ratio | None:
    base = cell.get("baseline_samples_s")
    return stats.ratio_of_medians(base, cell["samples_s"]) if base else None


def _latency_problem(claim, cell: dict, name: str) -> str | None:
    """Why a cell cannot decide a latency claim: not timed per call, or at another shape."""
    if not cell.get("latency"):
        return f"{name}: measured without --latency (its samples average many calls); " \
               f"{LATENCY_RUN_HINT}"
    shape = cell.get("shape") or {}
    other = {k: shape.get(k) for k, v in claim.shape.items() if k in shape and shape[k] != v}
    if other:
        asked = ", ".join(f"{k}={claim.shape[k]}" for k in other)
        found = ", ".join(f"{k}={v}" for k, v in other.items())
        return f"{name}: measured at {found}; the claim is about {asked}"
    return None


def _rss_across_frameworks(cell: dict, other: dict | None, mem: dict, theirs: dict) -> bool:
    """Two cells of different frameworks measured by the CPU's process-RSS probe."""
    from lab.cell.memory import ProcessRss

    rss = ProcessRss.name in (mem.get("probe"), theirs.get("probe"))
    return rss and cell.get("framework") != (other or {}).get("framework")


def _memory_ratio(claim, out: CellRatio, cell: dict, other: dict | None) -> CellRatio:
    """Step memory, eager's over the backend's in one process, or versus's over the
    backend's across two cells. Memory is nearly deterministic and measured once per side,
    so the ratio is a point value (its interval is the point) with the probe named."""
    from lab.cell.memory import ProcessRss, unresolved_memory_ratio

    mem = cell.get("memory") or {}
    theirs_mem = {}
    if not mem:
        out.reason = f"{claim.backend}: no memory recorded (a run from before memory was " \
                     f"measured)"
        return out
    mine = mem.get("step_peak_above_resident_mib")
    if claim.versus:
        theirs_mem = (other or {}).get("memory") or {}
        theirs = theirs_mem.get("step_peak_above_resident_mib")
        if _rss_across_frameworks(cell, other, mem, theirs_mem):
            out.reason = (f"no memory ratio: {claim.versus} and {claim.backend} are two "
                          f"frameworks, and the CPU's RSS probe sees what each allocator keeps, "
                          f"not the step's working set (CUDA's allocator peaks compare)")
            return out
        resettable = bool(mem.get("resettable")) and bool(theirs_mem.get("resettable"))
        names = (claim.versus, claim.backend)
        probe = "; ".join(dict.fromkeys(filter(None, [mem.get("probe"),
                                                      theirs_mem.get("probe")])))
    else:
        theirs = mem.get("baseline_step_peak_above_resident_mib")
        resettable, names = bool(mem.get("resettable")), ("eager", claim.backend)
        probe = mem.get("probe")
    why = unresolved_memory_ratio(theirs, mine, resettable, names)
    if why:
        out.reason = f"no memory ratio: {why}"
        return out
    out.ratio = theirs / mine
    out.detail = f"{names[0]} {theirs:,.1f} MiB / {names[1]} {mine:,.1f} MiB per step above " \
                 f"resident; point value, probe: {probe}"
    if ProcessRss.name in (mem.get("probe"), theirs_mem.get("probe")):
        # one resident-set reading per side moves between runs with what the allocators keep
        # (1.56 on one run, supported on another): no interval, so it neither supports nor
        # refutes; the ratio is shown
        out.reason = ("one process-RSS reading per side, no interval: a point value that "
                      "moves between runs cannot decide (CUDA's allocator peaks do)")
        return out
    # an allocator's peak is a byte count the same program reproduces: the point decides
    out.ci95 = (out.ratio, out.ratio)
    out.verdict = judge(claim, *out.ci95)
    return out


def cell_ratio(claim, label: str, cell: dict | None, other: dict | None) -> CellRatio:
    """The claim's ratio for one (workload, mode): in-process speedup (of p50 latency for a
    latency claim), across processes where the claim names `versus`, or memory's point ratio."""
    out = CellRatio(label)
    names = [_cell_label(claim, b) if b and getattr(claim, "ranks", None) else b
             for b in (claim.backend, claim.versus)]
    problems = [p for p in (_unusable(cell, names[0]),
                            _unusable(other, names[1]) if claim.versus else None) if p]
    if problems:
        out.reason = "; ".join(problems)
        return out
    if claim.metric == "memory":
        return _memory_ratio(claim, out, cell, other)
    if claim.metric == "scaling":  # data-parallel cells (lab.judge.scaling)
        from lab.judge import scaling

        out.ratio, out.ci95, out.reason, out.detail = scaling.ratio(claim, cell, other)
        if out.ci95 is not None:
            out.verdict = judge(claim, *out.ci95)
        return out
    if claim.metric == "latency":
        problem = _latency_problem(claim, cell, claim.backend) or \
            (_latency_problem(claim, other, claim.versus) if claim.versus else None)
        if problem:
            out.reason = problem
            return out
    if claim.metric == "speedup" or (claim.metric == "latency" and not claim.versus):
        # from the raw samples: the compiled side's and its interleaved eager baseline's
        # (a --latency cell's samples are single calls, so this ratio is of p50 latencies)
        mine = _speedup(cell)
        if mine is None:
            out.reason = f"{claim.backend}: no in-process eager baseline samples"
            return out
        parts = [(mine.ratio, mine.ci95)]
        out.compile_note = _compile_note(cell)
        out.detail = f"p {mine.p_value:.2g}, detects >= {mine.min_detectable_ratio:.3f}x"
        if claim.versus:
            theirs = _speedup(other)
            if theirs is None:
                out.reason = f"{claim.versus}: no in-process eager baseline samples"
                return out
            lo_o, hi_o = theirs.ci95
            parts.append((1 / theirs.ratio, (1 / hi_o, 1 / lo_o)))
            out.detail = ""
            out.compile_note = "; ".join(filter(None, [out.compile_note, _compile_note(other)]))
            # two speedups from two processes: widen by the run-to-run spread of each (an upper
            # bound: a paired in-process speedup drifts less than a raw step time does)
            out.ratio, out.ci95 = stats.combine_log_intervals(
                *parts, extra_sd_log=math.sqrt(2) * stats.RUN_TO_RUN_SD_LOG)
            out.reason = "across processes: interval widened by run-to-run variance"
        else:
            out.ratio, out.ci95 = parts[0][0], parts[0][1]
    else:  # throughput, time or latency of backend against versus, always across processes
        pr = stats.process_ratio(process_medians(cell), process_medians(other))
        lo, hi = pr.ci
        # pr.ratio = time(versus) / time(backend) = throughput(backend) / throughput(versus)
        # latency: versus's p50 per call over backend's (> 1: backend answers sooner)
        out.ratio, out.ci95 = (pr.ratio, (lo, hi)) if claim.metric in ("throughput", "latency") \
            else (1 / pr.ratio, (1 / hi, 1 / lo))
        out.reason = (f"across processes ({pr.n_baseline} vs {pr.n_candidate}): interval "
                      f"includes run-to-run variance")
    out.verdict = judge(claim, *out.ci95)
    busy = [c.get("backend") for c in (cell, other) if c and c.get("machine_busy")]
    if busy:
        out.reason = "; ".join(filter(None, [out.reason, f"machine busy while "
                                              f"{' and '.join(busy)} ran"]))
        if out.reason.startswith("across processes ("):
            # two processes' step times, one of them slowed by neighbours: the gate's rule
            # (lab.judge.gate), shown, not decided; a paired in-process ratio (eager and
            # compiled interleaved in one process) shares the load and keeps its verdict
            out.verdict = "inconclusive"
            out.reason += " (busy: step times of two processes are not compared)"
    return out


@dataclass
class ClaimResult:
    claim: object
    verdict: str
    cells: list[CellRatio]
    reason: str = ""
    hardware: str = ""
    precision: str = ""  # the arithmetic the cells ran in (lab.core.precision), "" when none ran


def decide(claim, cells: list[CellRatio], hardware: str) -> ClaimResult:
    judged = [c for c in cells if c.ratio is not None]
    if not judged:
        reasons = "; ".join(dict.fromkeys(c.reason for c in cells if c.reason)) or "no cells"
        return ClaimResult(claim, "inconclusive", cells, reasons, hardware)
    if claim.aggregate == "best":
        best = max(judged, key=lambda c: c.ratio)
        return ClaimResult(claim, best.verdict, cells, f"best case: {best.label}", hardware)
    verdicts = {c.verdict for c in judged}
    verdict = ("refuted" if "refuted" in verdicts else
               "supported" if verdicts == {"supported"} else "inconclusive")
    left_out = len(cells) - len(judged)
    reason = f"{len(judged)} of {len(cells)} cells judged" if left_out else ""
    return ClaimResult(claim, verdict, cells, reason, hardware)


def _backend_label(name: str) -> str:
    from lab import compile as backends

    return backends.resolve(name).label


def _cell_label(claim, name: str) -> str:
    """The label of the cells a claim reads for a backend: its data-parallel cells'
    (`torch-eager+ddp@2`) for a claim that names ranks."""
    if getattr(claim, "ranks", None):
        from lab.judge import scaling

        return scaling.ranked_label(name, claim.ranks, claim.strategy)
    return _backend_label(name)


def workload_modes(claim) -> list[tuple[str, str]]:
    """(workload, mode) pairs of a claim that exist: a workload without a mode (mlp has no
    generate) has no cell to plan, measure or list."""
    from lab import workloads

    pairs = []
    for w in claim.workloads:
        try:
            having = workloads.get(w, validate_user=False).modes
        except ValueError:  # unknown here: missing_cells says why, once per cell
            having = claim.modes
        pairs += [(w, m) for m in claim.modes if m in having]
    return pairs


def _wanted(claim, device: str) -> list[tuple[str, str, str]]:
    """(workload, backend label, mode) cells the claim needs."""
    backends = [claim.backend] + ([claim.versus] if claim.versus else [])
    return [(w, _cell_label(claim, b), m) for w, m in workload_modes(claim) for b in backends]


def claim_precision(claim, device: str) -> str:
    """The precision a claim's cells run in on `device` ("default": the device's own)."""
    from lab.judge.claims import DEFAULT_PRECISION

    if claim.precision == DEFAULT_PRECISION:
        return precision.default_for(device).value
    return claim.precision


def index(doc: dict, device: str) -> dict:
    """(workload, backend, mode, precision) -> cell of a stored run on `device`; a cell stored
    before precisions existed has its dtype's (float32 -> fp32)."""
    found = {}
    for cell in cells(doc):
        if cell.get("device") == device:
            key = (cell.get("workload"), cell.get("backend"), cell.get("mode"),
                   precision.of_cell(cell))
            found[key] = cell
    return found


def _needs_gpu(claim, device: str) -> bool:
    return claim.device == "cuda" and device != "cuda"


LATENCY_RUN_HINT = ("needs per-call samples: lab run --latency (with the claim's shape, e.g. "
                    "--batch 1), then lab check --run RUN")


def missing_cells(claims, stored: dict, device: str) -> tuple[list[tuple], dict]:
    """The cells the claims need that `stored` lacks, as (key, workload, backend, mode,
    precision, shape overrides, latency) to run, where `latency` says the cell must be timed
    one call per sample (a latency claim's); and the ones that cannot run, key -> a skipped
    cell."""
    from lab import compile as backends
    from lab import workloads

    todo, skipped = [], {}
    for claim in claims:
        if _needs_gpu(claim, device) or (claim.device not in ("any", device)):
            continue
        wanted = claim_precision(claim, device)
        for w, b, m in _wanted(claim, device):
            key = (w, b, m, wanted)
            if key in stored or key in skipped or any(key == t[0] for t in todo):
                continue
            try:
                workload = workloads.get(w)
            except (workloads.UnknownWorkload, ValueError) as exc:
                skipped[key] = {"status": "skipped", "reason": f"{exc}".split(";")[0]}
                continue
            framework = backends.BACKENDS[_backend_name(b)].framework.value
            if framework not in workload.frameworks:
                skipped[key] = {"status": "skipped",
                                "reason": f"workload {w} has no {framework} version"}
                continue
            known = workload.shape_for(device)
            shape = {k: v for k, v in claim.shape.items() if k in known}
            todo.append((key, w, b, m, wanted, shape, claim.metric == "latency"))
    return todo, skipped


def _backend_name(label: str) -> str:
    """The backend of a cell label, a data-parallel cell's (`torch-eager+ddp@2`) included."""
    from lab import compile as backends
    from lab.judge import scaling

    ranked = scaling.parse_label(label)
    return backends.resolve(ranked[0] if ranked else label).info.name


def check(claims, stored: dict, device: str, hardware: str,
          suite_cells: dict | None = None) -> list[ClaimResult]:
    """Each claim judged on `stored` cells ((workload, backend, mode, precision) -> cell);
    suite claims also on `suite_cells` (lab.judge.suite_claims.index: both sizes of a model
    where a run holds both)."""
    results = []
    for claim in claims:
        if _needs_gpu(claim, device):
            results.append(ClaimResult(claim, "inconclusive", [],
                                       "needs GPU (the claim is about CUDA hardware)", hardware))
            continue
        if claim.device not in ("any", device):
            results.append(ClaimResult(claim, "inconclusive", [],
                                       f"claim is about {claim.device}; run is on {device}",
                                       hardware))
            continue
        cells = []
        wanted = claim_precision(claim, device)
        if claim.suite:  # a distribution over the suite's models, one figure per mode
            ratios, note = suite_ratios(claim, stored, wanted, suite_cells)
            result = decide(claim, ratios, hardware)
            result.reason = "; ".join(filter(None, [result.reason, note]))
            result.precision = wanted
            results.append(result)
            continue
        for w, m in workload_modes(claim):
            def get(b, w=w, m=m, wanted=wanted, claim=claim):
                return stored.get((w, _cell_label(claim, b), m, wanted))

            other = get(claim.versus) if claim.versus else None
            cells.append(cell_ratio(claim, f"{w} {m}", get(claim.backend), other))
        result = decide(claim, cells, hardware)
        result.precision = wanted
        if getattr(claim, "ranks", None):  # what a data-parallel verdict rests on
            from lab.judge import scaling

            used = [stored.get((w, _cell_label(claim, b), m, wanted))
                    for w, m in workload_modes(claim)
                    for b in filter(None, (claim.backend, claim.versus))]
            result.reason = "; ".join(filter(None, [result.reason, scaling.rests_on(
                claim, used, hardware, device)]))
        results.append(result)
    return results


def suite_ratios(claim, stored: dict, wanted: str,
                 suite_cells: dict | None = None) -> tuple[list[CellRatio], str]:
    """A suite claim's figure per mode (lab.judge.suite_claims) over the models of the claim's
    size, judged as a cell's ratio is; and a note on what the verdict rests on (tiny models)
    or on the other size the run holds, which does not decide it."""
    from lab.judge import suite_claims

    size = suite_claims.claim_size(claim)
    sized = suite_claims.by_size(stored, suite_cells)
    backend = _backend_label(claim.backend)
    out, notes = [], []
    for mode in claim.modes:
        held = suite_claims.sizes_held(sized, claim.workloads, backend, mode, wanted)

        def fig_of(s, mode=mode):
            return suite_claims.figure(claim.suite_kind, claim.at, suite_claims.cells_of_size(
                sized, claim.workloads, backend, mode, wanted, s))

        fig = fig_of(size)
        ratio = CellRatio(f"{claim.suite} {mode}, {size} models", fig.value, fig.ci95,
                          reason=fig.detail)
        if fig.ci95 is not None:
            ratio.verdict = judge(claim, *fig.ci95)
        others = [s for s in held if s != size]
        if fig.models == 0 and others:  # only another size held: never decided on it
            ratio.reason = suite_claims.other_size_reason(
                size, others[0], fig_of(others[0]), claim.suite_kind, claim.suite)
        elif others:
            notes.append(f"{mode}: the run's {others[0]} models are not judged by this claim "
                         f"(a claim with size = \"{others[0]}\" judges them)")
        out.append(ratio)
    if size == "tiny" and any(r.ratio is not None for r in out):
        notes.insert(0, f"the verdict rests on {suite_claims.TINY_NOTE}")
    return out, "; ".join(notes)


def _what(claim) -> str:
    """The ratio a claim is judged on, in words (> 1 favours the claim's backend)."""
    if claim.suite:
        what = {"geomean": f"geomean speedup of {claim.backend} over eager",
                "share": f"share of models with {claim.backend} at >= {claim.at or 0:g}x",
                "pass_rate": f"share of models {claim.backend} runs ok"}[claim.suite_kind]
        return f"{what}, suite {claim.suite} ({len(claim.workloads)} models)"
    reference = claim.versus or "eager"
    if claim.metric == "scaling":
        what = f"scaling efficiency at {claim.ranks} ranks of {_cell_label(claim, claim.backend)}"
        return what + (f" over {_cell_label(claim, claim.versus)}'s" if claim.versus else "")
    if getattr(claim, "ranks", None):
        return f"{claim.metric} of {_cell_label(claim, claim.backend)} over " \
               f"{_cell_label(claim, claim.versus)}"
    if claim.metric == "memory":
        return f"step memory of {reference} / {claim.backend}"
    if claim.metric == "latency":
        return f"p50 latency per call of {reference} / {claim.backend}"
    return f"{claim.metric} of {claim.backend}" + (f" over {claim.versus}" if claim.versus else "")


def format_results(results: list[ClaimResult]) -> str:
    lines = []
    for r in results:
        c = r.claim
        lines.append(f"{r.verdict.upper():13s}{c.id}: \"{c.quote}\"")
        what = _what(c)
        lines.append(f"    claim: {what}, {c.describe_expectation()}; measured on {r.hardware}"
                     + (f", precision {r.precision}" if r.precision else ""))
        for cell in r.cells:
            if cell.ratio is None:
                lines.append(f"    {cell.label}: no verdict: {cell.reason}")
                continue
            x = getattr(c, "unit", "x")
            if cell.ci95 is None:  # a point value that cannot decide (memory on the CPU)
                lines.append(f"    {cell.label}: {cell.ratio:.3f}{x} (point value) -> "
                             f"{cell.verdict} ({cell.reason})"
                             + (f" [{cell.detail}]" if cell.detail else ""))
                continue
            if getattr(c, "suite_kind", None) in ("share", "pass_rate"):  # a fraction
                lines.append(f"    {cell.label}: {100 * cell.ratio:.0f}% [95% CI "
                             f"{100 * cell.ci95[0]:.0f}-{100 * cell.ci95[1]:.0f}%] -> "
                             f"{cell.verdict} ({cell.reason})")
                continue
            lines.append(f"    {cell.label}: {cell.ratio:.3f}{x} [95% CI {cell.ci95[0]:.3f}-"
                         f"{cell.ci95[1]:.3f}] -> {cell.verdict}"
                         + (f" ({cell.reason})" if cell.reason else "")
                         + (f" [{cell.detail}]" if cell.detail else ""))
            if cell.compile_note:
                lines.append(f"      {cell.compile_note}")
        if r.reason:
            lines.append(f"    {r.reason}")
    counts = {v: sum(r.verdict == v for r in results)
              for v in ("supported", "refuted", "inconclusive")}
    gpu = [r.claim.id for r in results if r.reason.startswith("needs GPU")]
    lines.append(", ".join(f"{n} {v}" for v, n in counts.items())
                 + (f"; needs GPU: {', '.join(gpu)}" if gpu else ""))
    return "\n".join(lines) + "\n"


