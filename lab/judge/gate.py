"""The regression gate: is a candidate run slower than its baseline, benchmark by benchmark?

Runs are compared through their per-process medians (`lab run --processes N` stores them),
because on these machines the process, not the sample, is the unit that varies. Each
benchmark ends regressed, improved, unchanged, inconclusive or missing (docs/verdicts.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lab.core import stats
from lab.core.errors import UsageError
from lab.store import identity
from lab.store.reader import cells_by_name, process_medians

VERDICT_ORDER = ("regressed", "improved", "unchanged", "inconclusive", "missing")
# A two-sided 98% interval: its low end clears 1 by chance 1% of the time on an A/A pair, the
# false-alarm target (docs/verdicts.md, "Calibration").
GATE_CONFIDENCE = 0.98
GATE_FALSE_ALARM = 0.01  # one-sided level of the rank test, the same target


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
    dropped: bool = False  # measured in the baseline, not in the candidate
    # the runs ("baseline", "candidate") whose cell of this benchmark was timed while other
    # work used the machine: its ratio is shown, never decided on (docs/verdicts.md)
    busy: tuple[str, ...] = ()
    # "counts" when both runs counted the benchmark (lab.counts.gate): the verdict is then the
    # counts' and `wall_verdict` the wall time's, shown beside it
    decided_by: str = "wall time"
    wall_verdict: str | None = None
    counts_ratio: float | None = None
    cycles_ratio: float | None = None
    dram_ratio: float | None = None  # GPU counts (ncu): DRAM bytes, shown beside
    counts_tool: str | None = None  # "callgrind" or "ncu"
    counts_threshold: float | None = None
    # how many processes per side the wanted change needs, from these runs' noise
    # (lab.judge.power.Plan; wall-time rows only)
    plan: object = None

    @property
    def processes_needed(self) -> int | None:
        return None if self.plan is None else self.plan.needed

    @property
    def label(self) -> str:
        """The verdict as every output shows it: `inconclusive (busy)` for a busy row; a row
        decided on counts is not busy (load does not move counts)."""
        return f"{self.verdict} (busy)" if self.busy and self.decided_by != "counts" \
            else self.verdict

    def note(self) -> str:
        """What decided the row, in words that cannot contradict its verdict: the rank test's
        shift and p; in the t regime the interval's side of 1 for a decided row, otherwise the
        slowdown it finds with 80% power (a smaller one is found less often, not never)."""
        if self.ratio is None:
            return self.reason
        if self.decided_by == "counts":
            from lab.counts import gate as counts_gate

            return counts_gate.note(self)
        if self.busy:
            return self.reason
        if self.rank_decides:
            return f"rank test: shift {self.shift_ratio:.3f}x, p(slower) {self.rank_p_slower:.3g}"
        if self.verdict in ("regressed", "improved"):
            side = "above" if self.verdict == "regressed" else "below"
            return f"t interval: {GATE_CONFIDENCE:.0%} interval wholly {side} 1"
        return f"t interval: finds >= {self.min_detectable_ratio:.2f}x with 80% power"


# per-cell settings that change what a step costs: runs that differ in them are not comparable
SETTINGS = ("threads", "precision", "dtype", "device", "latency")  # latency: per call or averaged


def unusable(base: dict, cand: dict) -> str | None:
    """Why two runs cannot be gated at all, or None: an incomplete candidate (interrupted, or
    still running: its missing cells would pass unseen), or no benchmark in common."""
    lab = cand.get("lab") or {}
    if lab.get("complete") is False:
        return (f"the candidate run {lab.get('run_id', '?')} is incomplete (interrupted or "
                f"still running); gate a run that finished")
    shared = set(cells_by_name(base)) & set(cells_by_name(cand))
    if not shared:
        return "the runs share no benchmark: nothing to compare"
    return None


def settings_mismatch(base: dict, cand: dict) -> str | None:
    """The first setting (threads, precision, dtype, device) that differs between the two
    runs' cells of one benchmark, said in one line; None when every shared cell agrees."""
    base_cells, cand_cells = cells_by_name(base), cells_by_name(cand)
    for name in sorted(set(base_cells) & set(cand_cells)):
        b, c = base_cells[name], cand_cells[name]
        for key in SETTINGS:
            if key in b and key in c and b[key] != c[key]:
                return f"{key} {b[key]!r} vs {c[key]!r} in {name}"
    return None


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


def run_machines(doc: dict) -> dict[str, dict]:
    """Machine id -> hardware of every machine that timed one of the run's measured cells. A
    cell run on a cluster names its node's (`machine_id`, `node.fingerprint.hardware`); a cell
    that names none ran on the run's own machine (machine_info)."""
    info = doc.get("machine_info") or {}
    machines = {}
    for cell in cells_by_name(doc).values():
        if not cell.get("samples_s"):  # skipped or failed: timed nowhere
            continue
        node_hardware = ((cell.get("node") or {}).get("fingerprint") or {}).get("hardware")
        machine = cell.get("machine_id") or info.get("lab_machine_id", "?")
        machines[machine] = node_hardware or info.get("lab_hardware")
    return machines


def machine_mismatch(base: dict, cand: dict) -> str | None:
    """Why two runs are not comparable, or None: a run whose cells were timed on different
    kinds of machine (a mixed cluster), or two runs on different hardware."""
    hardware = []
    for side, doc in (("baseline", base), ("candidate", cand)):
        if (doc.get("machine_info") or {}).get("lab_hardware") is None:
            return "a run lacks machine_info.lab_hardware (not a lab run?)"
        machines = run_machines(doc)
        if len(machines) > 1:
            return f"the {side} mixes machines: {', '.join(sorted(machines))}"
        hardware.append(next(iter(machines.values()), None)
                        or doc["machine_info"]["lab_hardware"])
    hb, hc = hardware
    diffs = identity.hardware_differences(hb, hc)
    return "; ".join(diffs) if diffs else None


def compare_runs(base: dict, cand: dict, threshold: float,
                 floor_sd_log: float | None = None,
                 counts_threshold: float | None = None,
                 detect: float | None = None) -> list[GateRow]:
    """One row per benchmark. `detect`: the slowdown the process-count guidance plans for
    (lab.judge.power; default twice the threshold)."""
    from lab.counts import gate as counts_gate
    from lab.judge import power

    base_cells, cand_cells = cells_by_name(base), cells_by_name(cand)
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
            measured_before = (b is not None and b.get("status") == "ok"
                               and bool(b.get("samples_s")))
            rows.append(GateRow(name, "missing", reason="; ".join(missing),
                                dropped=measured_before))
            continue
        pr = gate_statistic(process_medians(b), process_medians(c), floor_sd_log)
        # a cell timed while other work held the cores measured the neighbours as much as the
        # code: its ratio is shown, the verdict is inconclusive (as `lab check` says of it)
        busy = tuple(side for side, cell in (("baseline", b), ("candidate", c))
                     if cell.get("machine_busy"))
        why = (f"{' and '.join(busy)} timed while other work used the machine (ok (busy)); "
               f"measure it again on a quiet machine") if busy else ""
        row = GateRow(name, "inconclusive" if busy else gate_decision(pr, threshold),
                      pr.ratio, pr.ci, pr.p_value,
                      pr.rank_p_value, pr.min_detectable_ratio,
                      (pr.n_baseline, pr.n_candidate), reason=why,
                      rank_decides=pr.rank_min_p < GATE_FALSE_ALARM,
                      shift_ratio=pr.shift_ratio, rank_p_slower=pr.rank_p_slower,
                      busy=busy,
                      plan=power.plan(process_medians(b), process_medians(c),
                                      detect or 2 * threshold, threshold, floor_sd_log))
        rows.append(counts_gate.decide(row, b, c, counts_threshold))  # counts, where both have
    return rows


def nothing_compared(rows: list[GateRow], allow_missing: bool = False) -> str | None:
    """Why the gate has no answer, or None: no benchmark was timed ok in both runs on a quiet
    machine, and nothing failed. A gate that passed there would turn CI green with nothing
    measured (every cell failed in both runs, or every one ran busy)."""
    if failed(rows, allow_missing) or any(
            r.ratio is not None and (not r.busy or r.decided_by == "counts") for r in rows):
        return None
    busy = sum(bool(r.busy) for r in rows)
    unmeasured = sum(r.ratio is None for r in rows)
    parts = ([f"{unmeasured} benchmark(s) not measured ok in both runs"] if unmeasured else []) \
        + ([f"{busy} timed while the machine was busy"] if busy else [])
    return f"nothing to compare: {', '.join(parts)}; the gate needs benchmarks measured ok " \
           f"in both runs on a quiet machine"


def failed(rows: list[GateRow], allow_missing: bool = False) -> bool:
    """The gate fails on a regression, and on a benchmark the candidate no longer measures
    unless that is allowed (a cell dropped from a run must not pass unseen)."""
    return any(r.verdict == "regressed" or (r.dropped and not allow_missing) for r in rows)


def gate_markdown(rows: list[GateRow], threshold: float, base_label: str, cand_label: str,
                  note: str = "", allow_missing: bool = False) -> str:
    counts = {v: sum(r.verdict == v for r in rows) for v in VERDICT_ORDER}
    failed_gate = failed(rows, allow_missing)
    by = any(r.decided_by == "counts" for r in rows)  # the column appears with counts only
    lines = [f"## lab gate: {'FAIL' if failed_gate else 'pass'} (threshold {threshold:.0%})",
             "",
             f"baseline `{base_label}`, candidate `{cand_label}`" + (f"; {note}" if note else ""),
             "", f"| benchmark | verdict | candidate/baseline | {GATE_CONFIDENCE:.0%} CI | p "
             f"| processes | note |" + (" decided by |" if by else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if by else "")]
    for r in sorted(rows, key=lambda r: (VERDICT_ORDER.index(r.verdict), r.name)):
        name = r.name.replace("|", "\\|")  # benchmark names hold '|'; a table cell may not
        if r.ratio is None:
            lines.append(f"| `{name}` | {r.label} | - | - | - | - | {r.reason} |"
                         + (" - |" if by else ""))
            continue
        lines.append(f"| `{name}` | {r.label} | {r.ratio:.3f}x | "
                     f"{r.ci[0]:.3f}-{r.ci[1]:.3f} | {r.p_value:.3g} | "
                     f"{r.processes[0]} vs {r.processes[1]} | {r.note()} |"
                     + (f" {r.decided_by} |" if by else ""))
    busy = sum(bool(r.busy) and r.decided_by != "counts" for r in rows)
    lines += ["", ", ".join(f"{counts[v]} {v}" + (f" ({busy} busy)" if busy and
                                                  v == "inconclusive" else "")
                            for v in VERDICT_ORDER)]
    dropped = sum(r.dropped for r in rows)
    if dropped:
        lines.append(f"{dropped} benchmark(s) measured in the baseline are missing from the "
                     f"candidate: " + ("allowed (--allow-missing)" if allow_missing
                                       else "the gate fails (--allow-missing accepts that)"))
    if busy:
        lines.append("inconclusive (busy): a run's cell was timed while other work used the "
                     "machine; such a row neither fails nor passes the gate")
    if by:
        lines.append("decided by counts: both runs counted the benchmark (lab run --counts); "
                     "instructions per step decide, the wall-time verdict is in the note "
                     "(docs/counts.md)")
    planned = [r for r in rows if r.plan is not None and r.decided_by == "wall time"
               and not r.busy]
    if planned:
        lines.append("processes: " + "; ".join(r.plan.text(r.name) for r in planned))
    if any(r.verdict == "inconclusive" and not r.busy for r in rows):
        lines.append("inconclusive: the interval is too wide to decide; store more processes "
                     "per run (`lab run --processes N`)")
    return "\n".join(lines) + "\n"
