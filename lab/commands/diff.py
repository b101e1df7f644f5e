"""`lab diff A B`: what changed between two stored runs, benchmark by benchmark (lab.judge.diff).

`run_diff` is also what the gate calls for the benchmarks that regressed or improved.
"""

from __future__ import annotations

import json
from pathlib import Path

from lab.core.errors import UsageError
from lab.judge import diff
from lab.store import reader as results


def load_with_folder(text: str, root: str = results.DEFAULT_ROOT) -> tuple[dict, Path]:
    """A stored run (folder, results.json or run id) and the folder its profiles sit in."""
    path = results.find_run(text, root)
    return results.load(path), results.resolve(path).parent


def run_diff(baseline: str, candidate: str, names: list[str] | None = None,
             root: str = results.DEFAULT_ROOT) -> diff.RunDiff:
    base, base_dir = load_with_folder(baseline, root)
    cand, cand_dir = load_with_folder(candidate, root)
    return diff.diff_runs(base, base_dir, cand, cand_dir, baseline, candidate, names)


def cmd_diff(args) -> int:
    from lab.store import identity

    names = [identity.canonical(b) for b in args.benchmark] if args.benchmark else None
    found = run_diff(args.baseline, args.candidate, names, args.out)
    if not found.benchmarks:
        wanted = f" named {', '.join(args.benchmark)}" if args.benchmark else ""
        raise UsageError(f"the runs share no benchmark{wanted}: nothing to diff")
    if args.json:
        print(json.dumps(diff.to_json(found), indent=1, default=str))
    else:
        print(diff.markdown(found), end="")
    return 0
