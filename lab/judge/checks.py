"""Judging stored runs for the commands and the Python API alike: claims judged on a run's cells
(and on cells measured now for what it lacks), and the gate between two runs. `claims_json` and
`gate_json` are the one schema that `lab check/gate --json` prints, `lab.api` returns and
`lab report --claims/--gate` reads back (docs/report.md)."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from lab.core.errors import UsageError
from lab.judge import diff, verdict
from lab.judge import gate as regression
from lab.store import provenance
from lab.store import reader as results


def finite(value):
    """JSON has no inf or NaN (strict parsers such as jq refuse them): None stands for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def _run_for_claims(todo: list[tuple], device: str, out: str,
                    progress=print) -> tuple[dict, str | None]:
    """Run the cells the claims need through the one run loop; (key -> cell, run folder)."""
    from lab.judge.scaling import parse_label
    from lab.running import executors
    from lab.running import loop as session

    planned, refused = {}, {}
    for key, workload, backend, mode, precision, shape, latency in todo:
        # a data-parallel cell (`torch-eager+ddp@2`) is its backend's cell at --ranks N
        ranked = parse_label(backend)
        try:  # the selection's own checks (shape constraints, memory) refuse one cell here
            cells, _ = session.plan(session.Selection(
                workloads=[workload], backends=[ranked[0] if ranked else backend], modes=[mode],
                device=device, precision=precision, shape=shape, latency=latency,
                stored_runs=out, ranks=ranked[2] if ranked else None,
                parallel=[ranked[1]] if ranked else None))
        except UsageError as exc:
            refused[key] = {"status": "skipped", "reason": str(exc)}
            continue
        planned[key] = cells[0]
    if not planned:
        return refused, None

    def on_start(cell):
        progress(f"running: {cell.spec.workload} {cell.spec.mode} {cell.choice.label}")

    result = session.run_cells(list(planned.values()), out=out, label=f"check-{device}",
                               argv=sys.argv[1:], executor=executors.get("local"),
                               on_start=on_start)
    found = verdict.index(results.load(result.path), device)
    return ({**refused, **{key: found[key] for key in planned if key in found}},
            str(result.run_dir))


def _refuse_other_machine(run: str, doc: dict) -> None:
    """Cells measured here beside a stored run's from another machine would make one verdict
    of two machines' numbers (labelled with one of them): refused, both machine ids named."""
    here = provenance.machine_id()
    there = sorted(regression.run_machines(doc)) or [results.machine_id(doc)]
    if there != [here]:
        raise UsageError(f"run {run} was measured on {', '.join(there)} and the cells it lacks "
                         f"would be measured on this machine, {here}: a claim is judged on one "
                         f"machine (--stored-only judges the run's own cells)")


@dataclass
class ClaimCheck:
    """Claims judged on one device: the verdicts, and the run the missing cells went into."""

    results: list  # verdict.ClaimResult, in the claim file's order
    device: str
    hardware: str
    run: str | None  # the stored run read (--run), or the one made for missing cells


def judge_claims(claims_path: str, run: str | None = None, stored_only: bool = False,
                 out: str = "profiles", progress=print) -> ClaimCheck:
    """Judge a claim file on a stored run's cells and, unless `stored_only`, on cells run now
    (through the one run loop) for what the run lacks."""
    from lab.judge import claims as claim_files
    from lab.judge import suite_claims
    from lab.running.loop import resolve_device

    try:
        claims = claim_files.load(claims_path)
    except claim_files.ClaimError as exc:
        raise UsageError(str(exc)) from None
    if run:
        doc = results.load_run(run, out)
        machines = regression.run_machines(doc)
        if len(machines) > 1:  # a verdict names one machine; a mixed cluster run has several
            raise UsageError(f"run {run} was timed on {len(machines)} kinds of machine "
                             f"({', '.join(sorted(machines))}); a claim is judged on one")
        devices = {c.get("device") for c in results.cells(doc)}
        device = "cuda" if "cuda" in devices else "cpu"
        (hw,) = machines.values() if machines else [None]
        hardware = results.describe_hardware(hw) if hw else results.hardware_label(doc)
        stored = verdict.index(doc, device)
        suite_cells = suite_claims.index(results.cells(doc), device)  # both sizes of a model
    else:
        device = resolve_device("auto")
        hardware = results.describe_hardware(provenance.hardware())
        stored, suite_cells = {}, None
    todo, skipped = verdict.missing_cells(claims, stored, device)
    new_run = None
    if run and todo and not stored_only:
        _refuse_other_machine(run, doc)
    if not stored_only:
        ran, new_run = _run_for_claims(todo, device, out, progress)
        stored = {**skipped, **ran, **stored}
    return ClaimCheck(verdict.check(claims, stored, device, hardware, suite_cells), device,
                      hardware, new_run or run)


def claims_json(check: ClaimCheck) -> dict:
    """`lab check --json`: one object per claim, each with its judged cells."""
    def claim(r) -> dict:
        c = r.claim
        return {"id": c.id, "quote": c.quote, "verdict": r.verdict, "metric": c.metric,
                "backend": c.backend, "versus": c.versus, "low": finite(float(c.low)),
                "high": finite(float(c.high)), "expectation": c.describe_expectation(),
                "reason": r.reason, "hardware": r.hardware, "precision": r.precision or None,
                "cells": [{"label": cell.label, "ratio": finite(cell.ratio),
                           "ci95": finite(list(cell.ci95)) if cell.ci95 else None,
                           "verdict": cell.verdict, "reason": cell.reason,
                           "compile": cell.compile_note, "detail": cell.detail}
                          for cell in r.cells],
                # a claim over a suite (lab.judge.suite_claims): which, and what is judged there
                **({"suite": c.suite, "suite_aggregate": c.suite_kind,
                    "metric": "pass_rate" if c.suite_kind == "pass_rate" else c.metric,
                    "at": c.at} if getattr(c, "suite", None) else {}),
                # a claim over data-parallel cells (lab.judge.scaling)
                **({"ranks": c.ranks, "strategy": list(c.strategy)}
                   if getattr(c, "ranks", None) else {})}

    return {"command": "check", "device": check.device, "hardware": check.hardware,
            "run": check.run, "claims": [claim(r) for r in check.results]}


@dataclass
class GateResult:
    """A gate between two stored runs: a verdict per benchmark, and whether the gate fails."""

    rows: list  # gate.GateRow, one per benchmark of either run
    threshold: float
    baseline: str
    candidate: str
    notes: list[str]  # what --force let through
    allow_missing: bool
    failed: bool
    markdown: str
    changes: object = None  # lab.judge.diff.RunDiff of the benchmarks that moved, or None
    envs: tuple[str, str] | None = None  # the framework environments compared (lab run --env)


def gate_runs(baseline: str, candidate: str, threshold: str = "5%", force: bool = False,
              noise_floor: float | None = None, allow_missing: bool = False,
              counts_threshold: str | None = None, envs: str | None = None,
              detect: str | None = None) -> GateResult:
    """Compare a candidate run with a baseline run; UsageError for runs that cannot be
    compared (different machines or settings, unless `force`). `envs` ("old,new"): compare
    those two framework environments (lab.judge.upgrade), of one run when `candidate` is
    None."""
    from lab.judge import upgrade

    limit = regression.parse_threshold(threshold)
    pair = upgrade.parse_envs(envs)
    if candidate is None and pair is None:
        raise UsageError("lab gate needs a candidate run, or --env OLD,NEW to compare two "
                         "environments of one run")
    base = results.load_run(baseline)
    cand = base if candidate is None else results.load_run(candidate)
    candidate = baseline if candidate is None else candidate
    chosen = upgrade.sides(base, cand, baseline, candidate, pair)
    base, cand = chosen.base, chosen.cand
    problem = regression.unusable(base, cand)
    if problem:
        raise UsageError(problem)
    mismatch = regression.machine_mismatch(base, cand)
    notes = []
    if mismatch:
        if not force:
            raise UsageError(f"runs come from different machines ({mismatch}); timings are not "
                             f"comparable (--force compares them anyway)")
        notes.append(f"**forced across machines**: {mismatch}")
    settings = regression.settings_mismatch(base, cand)
    if settings:
        if not force:
            raise UsageError(f"runs were measured with different settings ({settings}); "
                             f"timings are not comparable (--force compares them anyway)")
        notes.append(f"**forced across settings**: {settings}")
    rows = regression.compare_runs(
        base, cand, limit, noise_floor,
        None if counts_threshold is None else regression.parse_threshold(counts_threshold),
        None if detect is None else regression.parse_threshold(detect))
    nothing = regression.nothing_compared(rows, allow_missing)
    if nothing:  # a pass here would turn CI green with nothing measured
        raise UsageError(nothing)
    if chosen.note:
        notes.append(chosen.note)
    text = regression.gate_markdown(rows, limit, chosen.base_label, chosen.cand_label,
                                    "; ".join(notes), allow_missing=allow_missing)
    # lab diff reads the runs by their stored keys: between environments the versions above
    # are what changed
    changes = None if chosen.envs else _what_changed(rows, baseline, candidate)
    if changes is not None:
        text += "\n" + diff.markdown(changes, title="## What changed (lab diff)")
    return GateResult(rows, limit, baseline, candidate, notes, allow_missing,
                      regression.failed(rows, allow_missing), text, changes, chosen.envs)


def _what_changed(rows: list, baseline: str, candidate: str):
    """lab diff of the benchmarks that regressed or improved: the evidence beside the verdict
    (profiles, compile, memory, versions), so a red gate says where to look."""
    moved = [r.name for r in rows if r.verdict in ("regressed", "improved")]
    return diff.run_diff(baseline, candidate, moved) if moved else None


def gate_json(result: GateResult) -> dict:
    """`lab gate --json`: one object per benchmark; ratio is candidate / baseline step time."""
    return {"command": "gate", "baseline": result.baseline, "candidate": result.candidate,
            "threshold": result.threshold, "failed": result.failed, "notes": result.notes,
            "allow_missing": result.allow_missing,
            "envs": list(result.envs) if result.envs else None,
            "verdicts": [{"name": r.name, "verdict": r.verdict, "busy": list(r.busy),
                          "note": r.note(), "ratio": finite(r.ratio),
                          "ci": finite(list(r.ci)) if r.ci else None,
                          "p_value": finite(r.p_value), "rank_p_value": finite(r.rank_p_value),
                          "min_detectable_ratio": finite(r.min_detectable_ratio),
                          "processes": list(r.processes), "dropped": r.dropped,
                          "decided_by": r.decided_by, "wall_verdict": r.wall_verdict,
                          "counts_ratio": finite(r.counts_ratio),
                          "processes_needed": r.processes_needed,
                          "cycles_ratio": finite(r.cycles_ratio),
                          "reason": r.reason} for r in result.rows],
            "diff": diff.to_json(result.changes) if result.changes is not None else None}
