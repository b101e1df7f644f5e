"""Claims and gates: both ask "is A k times B?" of stored samples (statistics in lab.stats).

- `lab check CLAIMS [--run RUN]`: each claim in a claim file (lab.claims) -> supported, refuted
  or inconclusive, with the measured ratio, its interval, the hardware, and the compile cost.
- `lab gate BASELINE CANDIDATE`: each benchmark -> regressed, improved, unchanged,
  inconclusive or missing; exit 1 when one regressed beyond the threshold.
- `lab history`: change points in each benchmark's series of stored runs (lab.history).

Runs are compared through their per-process medians (`lab run --processes N` stores them),
because on these machines the process, not the sample, is the unit that varies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from lab import stats, store
from lab.cli import UsageError

VERDICT_ORDER = ("regressed", "improved", "unchanged", "inconclusive", "missing")
# A two-sided 98% interval: its low end clears 1 by chance 1% of the time on an A/A pair, the
# false-alarm target (docs/verdicts.md, "Calibration").
GATE_CONFIDENCE = 0.98
GATE_FALSE_ALARM = 0.01  # one-sided level of the rank test, the same target


# ---------------------------------------------------------------- runs and cells

def load_run(text: str, out: str | None = None) -> dict:
    """A stored run (folder, results.json or run id) -> its document; UsageError if unusable."""
    from lab.cli import DEFAULT_OUT, find_run

    try:
        return store.load_results(find_run(text, out or DEFAULT_OUT))
    except store.StoreError as exc:
        raise UsageError(str(exc)) from None


def cells_of(doc: dict) -> dict[str, dict]:
    """Benchmark name -> its extra_info plus `samples_s` (None for a cell with no samples)."""
    cells = {}
    for entry in (doc.get("lab") or {}).get("unmeasured") or []:
        if isinstance(entry, dict) and "name" in entry:
            cells[entry["name"]] = {**(entry.get("extra_info") or {}), "samples_s": None}
    for bench in doc["benchmarks"]:
        info = bench.get("extra_info") or {}
        cells[bench["name"]] = {"status": "ok", **info, "samples_s": bench["stats"]["data"]}
    return cells


def process_medians(cell: dict) -> list[float]:
    """Per-process medians of a cell (seconds per step): one per cell process."""
    medians = cell.get("process_medians_s")
    if medians:
        return [float(m) for m in medians]
    return [float(stats.summarize(cell["samples_s"]).median)]


def hardware_label(doc: dict) -> str:
    hw = (doc.get("machine_info") or {}).get("lab_hardware") or {}
    if hw.get("gpus"):
        return f"{hw['gpus'][0]['name']} x{len(hw['gpus'])}"
    if hw:
        return f"{hw.get('cpu_model', '?')}, {hw.get('cpu_count', '?')} cores (CPU)"
    return "unknown hardware"


# ---------------------------------------------------------------- the gate

@dataclass(frozen=True)
class GateRow:
    name: str
    verdict: str
    ratio: float | None = None  # candidate / baseline step time (> 1: slower)
    ci: tuple[float, float] | None = None  # GATE_CONFIDENCE interval
    p_value: float | None = None
    rank_p_value: float | None = None
    min_detectable_ratio: float | None = None
    processes: tuple[int, int] = (0, 0)
    reason: str = ""
    rank_decides: bool = False  # enough processes for the rank test (see gate_decision)
    shift_ratio: float | None = None
    rank_p_slower: float | None = None


def parse_threshold(text: str) -> float:
    """'5%' or '0.05' -> 0.05."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise UsageError(f"--threshold expects a percentage like 5% or a fraction like 0.05, "
                         f"got {text!r}") from None
    if not 0 < value < 1 or not math.isfinite(value):
        raise UsageError(f"--threshold must be between 0% and 100% (exclusive), got {text!r}")
    return value


def gate_statistic(baseline_medians, candidate_medians,
                   floor_sd_log: float | None = None) -> stats.ProcessRatio:
    """What the gate computes for one benchmark (the calibration script calls this too)."""
    floor = stats.RUN_TO_RUN_SD_LOG if floor_sd_log is None else floor_sd_log
    return stats.process_ratio(baseline_medians, candidate_medians, floor_sd_log=floor,
                               confidence=GATE_CONFIDENCE)


def gate_decision(pr: stats.ProcessRatio, threshold: float,
                  alpha: float = GATE_FALSE_ALARM) -> str:
    """One benchmark's verdict (docs/verdicts.md, "The gate").

    With enough processes for a rank test to reach `alpha` (5 and 5, or 4 and 5), regressed
    means a one-sided Mann-Whitney p < alpha on the process medians and a Hodges-Lehmann
    slowdown beyond the threshold: distribution-free, so heavy-tailed noise from neighbours
    cannot raise the false-alarm rate above alpha. With fewer, the t interval (with the noise
    floor) must clear 1 and its estimate the threshold. improved mirrors it; unchanged: the
    whole interval within +-threshold; inconclusive: anything else.
    """
    lo, hi = pr.ci
    if pr.rank_min_p < alpha:
        if pr.rank_p_slower < alpha and pr.shift_ratio > 1 + threshold:
            return "regressed"
        if pr.rank_p_faster < alpha and pr.shift_ratio < 1 / (1 + threshold):
            return "improved"
    else:
        if lo > 1 and pr.ratio > 1 + threshold:
            return "regressed"
        if hi < 1 and pr.ratio < 1 / (1 + threshold):
            return "improved"
    if lo >= 1 / (1 + threshold) and hi <= 1 + threshold:
        return "unchanged"
    return "inconclusive"


def machine_mismatch(base: dict, cand: dict) -> str | None:
    """Why two runs are not comparable (different hardware fingerprints), or None."""
    hb = (base.get("machine_info") or {}).get("lab_hardware")
    hc = (cand.get("machine_info") or {}).get("lab_hardware")
    if hb is None or hc is None:
        return "a run lacks machine_info.lab_hardware (not a lab run?)"
    diffs = [f"{k}: {hb.get(k)!r} vs {hc.get(k)!r}" for k in sorted(set(hb) | set(hc))
             if hb.get(k) != hc.get(k)]
    return "; ".join(diffs) if diffs else None


def compare_runs(base: dict, cand: dict, threshold: float,
                 floor_sd_log: float | None = None) -> list[GateRow]:
    base_cells, cand_cells = cells_of(base), cells_of(cand)
    rows = []
    for name in sorted(set(base_cells) | set(cand_cells)):
        b, c = base_cells.get(name), cand_cells.get(name)
        missing = [f"{side}: {'absent' if cell is None else cell.get('status')}"
                   for side, cell in (("baseline", b), ("candidate", c))
                   if cell is None or cell.get("status") != "ok" or not cell.get("samples_s")]
        broke = (b is not None and b.get("status") == "ok" and c is not None
                 and c.get("status") not in ("ok", "skipped"))
        if broke:  # worked before, fails now (wrong answer, crash, OOM): worse than slower
            rows.append(GateRow(name, "regressed",
                                reason=f"candidate {c.get('status')}: {c.get('reason')} "
                                       f"(baseline ok)"))
            continue
        if missing:
            rows.append(GateRow(name, "missing", reason="; ".join(missing)))
            continue
        pr = gate_statistic(process_medians(b), process_medians(c), floor_sd_log)
        rows.append(GateRow(name, gate_decision(pr, threshold), pr.ratio, pr.ci, pr.p_value,
                            pr.rank_p_value, pr.min_detectable_ratio,
                            (pr.n_baseline, pr.n_candidate),
                            rank_decides=pr.rank_min_p < GATE_FALSE_ALARM,
                            shift_ratio=pr.shift_ratio, rank_p_slower=pr.rank_p_slower))
    return rows


def gate_markdown(rows: list[GateRow], threshold: float, base_label: str, cand_label: str,
                  note: str = "") -> str:
    counts = {v: sum(r.verdict == v for r in rows) for v in VERDICT_ORDER}
    failed = counts["regressed"] > 0
    lines = [f"## lab gate: {'FAIL' if failed else 'pass'} (threshold {threshold:.0%})", "",
             f"baseline `{base_label}`, candidate `{cand_label}`" + (f"; {note}" if note else ""),
             "", f"| benchmark | verdict | candidate/baseline | {GATE_CONFIDENCE:.0%} CI | p "
             f"| processes | note |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (VERDICT_ORDER.index(r.verdict), r.name)):
        name = r.name.replace("|", "\\|")  # benchmark names hold '|'; a table cell may not
        if r.ratio is None:
            lines.append(f"| `{name}` | {r.verdict} | - | - | - | - | {r.reason} |")
            continue
        mde = (f"rank test: shift {r.shift_ratio:.3f}x, p(slower) {r.rank_p_slower:.3g}"
               if r.rank_decides else f"t interval: detects >= {r.min_detectable_ratio:.2f}x")
        lines.append(f"| `{name}` | {r.verdict} | {r.ratio:.3f}x | "
                     f"{r.ci[0]:.3f}-{r.ci[1]:.3f} | {r.p_value:.3g} | "
                     f"{r.processes[0]} vs {r.processes[1]} | {mde} |")
    lines += ["", ", ".join(f"{counts[v]} {v}" for v in VERDICT_ORDER)]
    if any(r.verdict == "inconclusive" for r in rows):
        lines.append("inconclusive: the interval is too wide to decide; store more processes "
                     "per run (`lab run --processes N`)")
    return "\n".join(lines) + "\n"


def cmd_gate(args) -> int:
    threshold = parse_threshold(args.threshold)
    base = load_run(args.baseline)
    cand = load_run(args.candidate)
    mismatch = machine_mismatch(base, cand)
    note = ""
    if mismatch:
        if not args.force:
            raise UsageError(f"runs come from different machines ({mismatch}); timings are not "
                             f"comparable (--force compares them anyway)")
        note = f"**forced across machines**: {mismatch}"
    rows = compare_runs(base, cand, threshold, getattr(args, "noise_floor", None))
    if not rows:
        raise UsageError("neither run has any benchmark to compare")
    text = gate_markdown(rows, threshold, args.baseline, args.candidate, note)
    print(text, end="")
    if args.markdown:
        store.atomic_write_text(Path(args.markdown), text)
    return 1 if any(r.verdict == "regressed" for r in rows) else 0


# ---------------------------------------------------------------- claims

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


def cell_ratio(claim, label: str, cell: dict | None, other: dict | None) -> CellRatio:
    """The claim's ratio for one (workload, mode): in-process speedup, or across processes."""
    out = CellRatio(label)
    problems = [p for p in (_unusable(cell, claim.backend),
                            _unusable(other, claim.versus) if claim.versus else None) if p]
    if problems:
        out.reason = "; ".join(problems)
        return out
    if claim.metric == "speedup":
        # from the raw samples: the compiled side's and its interleaved eager baseline's
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
    else:  # throughput or time of backend against versus, always across processes
        pr = stats.process_ratio(process_medians(cell), process_medians(other))
        lo, hi = pr.ci
        # pr.ratio = time(versus) / time(backend) = throughput(backend) / throughput(versus)
        out.ratio, out.ci95 = (pr.ratio, (lo, hi)) if claim.metric == "throughput" \
            else (1 / pr.ratio, (1 / hi, 1 / lo))
        out.reason = (f"across processes ({pr.n_baseline} vs {pr.n_candidate}): interval "
                      f"includes run-to-run variance")
    out.verdict = judge(claim, *out.ci95)
    return out


@dataclass
class ClaimResult:
    claim: object
    verdict: str
    cells: list[CellRatio]
    reason: str = ""
    hardware: str = ""


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
    from lab import backends

    return backends.resolve(name).label


def _wanted(claim, device: str) -> list[tuple[str, str, str]]:
    """(workload, backend label, mode) cells the claim needs."""
    backends = [claim.backend] + ([claim.versus] if claim.versus else [])
    return [(w, _backend_label(b), m) for w in claim.workloads for m in claim.modes
            for b in backends]


def _index(doc: dict, device: str) -> dict:
    """(workload, backend, mode, dtype) -> cell of a stored run on `device`."""
    found = {}
    for cell in cells_of(doc).values():
        if cell.get("device") == device:
            key = (cell.get("workload"), cell.get("backend"), cell.get("mode"), cell.get("dtype"))
            found[key] = cell
    return found


def _needs_gpu(claim, device: str) -> bool:
    return claim.device == "cuda" and device != "cuda"


def _run_missing(claims, stored: dict, device: str, out: str) -> tuple[dict, str | None]:
    """Run the cells that the claims need and `stored` lacks; returns (cells, run folder)."""
    import sys

    from lab import backends
    from lab import runner, workloads
    from lab.cell import CellSpec
    from lab.cli import DEFAULT_REPEATS, DEFAULT_TIMEOUT_S, default_threads

    todo, cells = [], {}
    for claim in claims:
        if claim.metric == "memory" or _needs_gpu(claim, device) or \
                (claim.device not in ("any", device)):
            continue
        for w, b, m in _wanted(claim, device):
            key = (w, b, m, claim.dtype)
            if key in stored or key in cells or any(key == t[0] for t in todo):
                continue
            try:
                workload = workloads.get(w)
            except (workloads.UnknownWorkload, ValueError) as exc:
                cells[key] = {"status": "skipped", "reason": f"{exc}".split(";")[0]}
                continue
            choice = backends.resolve(b)
            if choice.info.framework.value not in workload.frameworks:
                cells[key] = {"status": "skipped",
                              "reason": f"workload {w} has no {choice.info.framework.value} "
                                        f"version"}
                continue
            shape = workload.shape_for(device, {k: v for k, v in claim.shape.items()
                                                if k in workload.shape_for(device)})
            spec = CellSpec(workload=workload.name, backend=choice.info.name,
                            option=choice.option, mode=m, shape=shape, dtype=claim.dtype,
                            device=device, threads=default_threads(), repeats=DEFAULT_REPEATS)
            todo.append((key, spec, choice, workload))
    if not todo:
        return cells, None
    fp = store.fingerprint(threads=default_threads())
    run_dir = Path(out) / store.machine_id(fp["hardware"]) / store.new_run_id(f"check-{device}")
    recorder = runner.RunRecorder(run_dir, fp, sys.argv[1:])
    for i, (_key, spec, choice, workload) in enumerate(todo, 1):
        print(f"running {i}/{len(todo)}: {spec.workload} {spec.mode} {choice.label}", flush=True)
        outcome = runner.run_cell(spec, choice.label, DEFAULT_TIMEOUT_S)
        recorder.add(outcome, workload)
    path = recorder.save(complete=True)
    for key, cell in _index(store.load_results(path), device).items():
        cells.setdefault(key, cell)
    return cells, str(run_dir)


def check(claims, doc: dict | None, device: str, hardware: str, out: str,
          run_missing: bool = True) -> tuple[list[ClaimResult], str | None]:
    stored = _index(doc, device) if doc else {}
    new_run = None
    if run_missing:
        ran, new_run = _run_missing(claims, stored, device, out)
        stored = {**ran, **stored}
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
        if claim.metric == "memory":
            results.append(ClaimResult(claim, "inconclusive", [],
                                       "not measured: the lab does not record memory yet",
                                       hardware))
            continue
        cells = []
        for w in claim.workloads:
            for m in claim.modes:
                def get(b, w=w, m=m, dtype=claim.dtype):
                    return stored.get((w, _backend_label(b), m, dtype))

                other = get(claim.versus) if claim.versus else None
                cells.append(cell_ratio(claim, f"{w} {m}", get(claim.backend), other))
        results.append(decide(claim, cells, hardware))
    return results, new_run


def format_results(results: list[ClaimResult]) -> str:
    lines = []
    for r in results:
        c = r.claim
        lines.append(f"{r.verdict.upper():13s}{c.id}: \"{c.quote}\"")
        what = f"{c.metric} of {c.backend}" + (f" over {c.versus}" if c.versus else "")
        lines.append(f"    claim: {what}, {c.describe_expectation()}; measured on {r.hardware}")
        for cell in r.cells:
            if cell.ratio is None:
                lines.append(f"    {cell.label}: no verdict: {cell.reason}")
                continue
            lines.append(f"    {cell.label}: {cell.ratio:.3f}x [95% CI {cell.ci95[0]:.3f}-"
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


def cmd_check(args) -> int:
    from lab import claims as claim_files
    from lab.cli import resolve_device

    try:
        claims = claim_files.load(args.claims)
    except claim_files.ClaimError as exc:
        raise UsageError(str(exc)) from None
    if args.run:
        doc = load_run(args.run, args.out)
        devices = {c.get("device") for c in cells_of(doc).values()}
        device = "cuda" if "cuda" in devices else "cpu"
    else:
        doc, device = None, resolve_device("auto")
    hardware = hardware_label(doc) if doc else hardware_label(
        {"machine_info": {"lab_hardware": store.hardware()}})
    results, new_run = check(claims, doc, device, hardware, args.out,
                             run_missing=not getattr(args, "stored_only", False))
    print(format_results(results), end="")
    if new_run:
        print(f"cells run for these claims are stored in {new_run}")
    return 0


# ---------------------------------------------------------------- history

def cmd_history(args) -> int:
    from lab import history

    return history.cmd_history(args)
