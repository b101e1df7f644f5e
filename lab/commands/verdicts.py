"""`lab check`, `lab gate` and `lab history`: verdicts on claims, runs and series."""

from __future__ import annotations

import sys
from pathlib import Path

from lab import gate, history, results, store, verdict
from lab.errors import UsageError


def _run_for_claims(todo: list[tuple], device: str, out: str) -> tuple[dict, str | None]:
    """Run the cells the claims need through the one run loop; (key -> cell, run folder)."""
    from lab import executors, session

    planned = {}
    for key, workload, backend, mode, dtype, shape in todo:
        cells, _ = session.plan(session.Selection(
            workloads=[workload], backends=[backend], modes=[mode], device=device, dtype=dtype,
            shape=shape))
        planned[key] = cells[0]
    if not planned:
        return {}, None

    def on_start(cell):
        print(f"running: {cell.spec.workload} {cell.spec.mode} {cell.choice.label}", flush=True)

    result = session.run_cells(list(planned.values()), out=out, label=f"check-{device}",
                               argv=sys.argv[1:], executor=executors.get("local"),
                               on_start=on_start)
    found = verdict.index(results.load(result.path), device)
    return {key: found[key] for key in planned if key in found}, str(result.run_dir)


def cmd_check(args) -> int:
    from lab import claims as claim_files
    from lab.session import resolve_device

    try:
        claims = claim_files.load(args.claims)
    except claim_files.ClaimError as exc:
        raise UsageError(str(exc)) from None
    if args.run:
        doc = results.load_run(args.run, args.out)
        devices = {c.get("device") for c in results.cells(doc)}
        device = "cuda" if "cuda" in devices else "cpu"
        hardware = results.hardware_label(doc)
        stored = verdict.index(doc, device)
    else:
        device = resolve_device("auto")
        hardware = results.describe_hardware(store.hardware())
        stored = {}
    todo, skipped = verdict.missing_cells(claims, stored, device)
    new_run = None
    if not args.stored_only:
        ran, new_run = _run_for_claims(todo, device, args.out)
        stored = {**skipped, **ran, **stored}
    print(verdict.format_results(verdict.check(claims, stored, device, hardware)), end="")
    if new_run:
        print(f"cells run for these claims are stored in {new_run}")
    return 0


def cmd_gate(args) -> int:
    threshold = gate.parse_threshold(args.threshold)
    base = results.load_run(args.baseline)
    cand = results.load_run(args.candidate)
    mismatch = gate.machine_mismatch(base, cand)
    note = ""
    if mismatch:
        if not args.force:
            raise UsageError(f"runs come from different machines ({mismatch}); timings are not "
                             f"comparable (--force compares them anyway)")
        note = f"**forced across machines**: {mismatch}"
    rows = gate.compare_runs(base, cand, threshold, args.noise_floor)
    if not rows:
        raise UsageError("neither run has any benchmark to compare")
    text = gate.gate_markdown(rows, threshold, args.baseline, args.candidate, note)
    print(text, end="")
    if args.markdown:
        store.atomic_write_text(Path(args.markdown), text)
    return 1 if any(r.verdict == "regressed" for r in rows) else 0


def cmd_history(args) -> int:
    out = Path(args.out)
    machine = args.machine or store.machine_id()
    root = out / machine
    if not root.is_dir():
        known = sorted(p.name for p in out.glob("*") if p.is_dir()) if out.is_dir() else []
        raise UsageError(f"no stored runs for machine {machine!r} under {out}"
                         + (f" (machines there: {', '.join(known)})" if known else ""))
    run_ids, series, skipped = history.load_series(root)
    if args.benchmark:
        if args.benchmark not in series:
            raise UsageError(f"no benchmark {args.benchmark!r} in the runs of {machine}")
        series = {args.benchmark: series[args.benchmark]}
    print(f"{machine}: {len(run_ids)} runs" + (f" ({skipped} unreadable, skipped)"
                                                 if skipped else ""))
    for name, points in sorted(series.items()):
        found = history.changes(points)
        if found is None:
            print(f"  {name}: {len(points)} runs (needs {history.MIN_RUNS} for a change point)")
        elif not found:
            print(f"  {name}: {len(points)} runs, no change point")
        for change in found or []:
            print(f"  {name}: change at run {change.run_id}: {change.ratio:.3f}x "
                  f"({'slower' if change.ratio > 1 else 'faster'}; {change.runs_before} runs "
                  f"before, {change.runs_after} after)")
    return 0
