"""`lab check`, `lab gate` and `lab history`: arguments in, verdicts printed. The judging is
lab.judge.checks (`judge_claims`, `gate_runs`), which the Python API calls too; `history_json`
is the schema of `lab history --json`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from lab.core.errors import UsageError
from lab.judge import history, verdict
from lab.judge.checks import claims_json, finite, gate_json, gate_runs, judge_claims
from lab.store import identity, outputs, provenance


def print_json(document: dict) -> None:
    print(json.dumps(document, indent=1, allow_nan=False))


def append_markdown(path: str, text: str) -> None:
    """Append, never replace: `$GITHUB_STEP_SUMMARY` keeps what earlier steps wrote there.
    Through lab.store.outputs: never into a stored run, a folder or anything but a file, a device
    or a pipe."""
    earlier = os.path.isfile(path) and os.path.getsize(path) > 0
    outputs.write(path, ("\n" if earlier else "") + text, "--markdown", append=True)


def cmd_check(args) -> int:
    as_json = getattr(args, "json", False)

    def progress(line: str) -> None:  # with --json, stdout is the JSON document alone
        print(line, file=sys.stderr if as_json else sys.stdout, flush=True)

    check = judge_claims(args.claims, args.run, args.stored_only, args.out, progress)
    if as_json:
        print_json(claims_json(check))
        return 0
    print(verdict.format_results(check.results), end="")
    if check.run and check.run != args.run:
        print(f"cells run for these claims are stored in {check.run}")
    return 0


def cmd_gate(args) -> int:
    if args.markdown:
        outputs.target(args.markdown, "--markdown")  # refused before the gate prints
    result = gate_runs(args.baseline, args.candidate, args.threshold, args.force,
                       args.noise_floor, getattr(args, "allow_missing", False),
                       getattr(args, "counts_threshold", None), getattr(args, "env", None),
                       getattr(args, "detect", None))
    if getattr(args, "json", False):
        print_json(gate_json(result))
    else:
        print(result.markdown, end="")
    if args.markdown:
        append_markdown(args.markdown, result.markdown)
    return 1 if result.failed else 0


def _history_verdict(found) -> str:
    return "too_few_runs" if found is None else "changed" if found else "unchanged"


def cmd_history(args) -> int:
    out = Path(args.out)
    machine = args.machine or provenance.machine_id()
    root = out / machine
    if not root.is_dir():
        known = sorted(p.name for p in out.glob("*") if p.is_dir()) if out.is_dir() else []
        raise UsageError(f"no stored runs for machine {machine!r} under {out}"
                         + (f" (machines there: {', '.join(known)})" if known else ""))
    found_history = history.load(root)
    run_ids, series, skipped = found_history.run_ids, found_history.series, found_history.skipped
    key_of, marks = found_history.benchmark, found_history.setting_changes
    if args.benchmark:  # by its key: an older version's name finds today's series too
        wanted = identity.canonical(args.benchmark)
        series = {label: points for label, points in series.items() if key_of[label] == wanted}
        if not series:
            raise UsageError(f"no benchmark {args.benchmark!r} in the runs of {machine}")
    if getattr(args, "json", False):  # one object per benchmark, its change points in it
        found = {name: history.changes(points) for name, points in sorted(series.items())}
        print_json({"command": "history", "machine": machine, "runs": run_ids,
                    "unreadable_runs": skipped, "min_runs": history.MIN_RUNS,
                    "benchmarks": [
                        {"name": name, "benchmark": key_of[name], "runs": len(series[name]),
                         "verdict": _history_verdict(changes),
                         "setting_changes": [{"run_id": m.run_id, "what": m.what}
                                             for m in marks[key_of[name]]],
                         "changes": [{"run_id": c.run_id, "ratio": finite(c.ratio),
                                      "direction": "slower" if c.ratio > 1 else "faster",
                                      "runs_before": c.runs_before,
                                      "runs_after": c.runs_after} for c in changes or []]}
                        for name, changes in found.items()]})
        return 0
    print(f"{machine}: {len(run_ids)} runs" + (f" ({skipped} unreadable, skipped)"
                                                 if skipped else ""))
    marked = set()
    for name, points in sorted(series.items()):
        for mark in marks[key_of[name]] if key_of[name] not in marked else []:
            print(f"  {key_of[name]}: setting changed at run {mark.run_id}: {mark.what} "
                  f"(a series of its own)")
        marked.add(key_of[name])
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
