"""`lab diff A B`: what changed between two stored runs, benchmark by benchmark (lab.judge.diff).
"""

from __future__ import annotations

import json

from lab.core.errors import UsageError
from lab.judge import diff


def cmd_diff(args) -> int:
    from lab.store import identity

    names = [identity.canonical(b) for b in args.benchmark] if args.benchmark else None
    found = diff.run_diff(args.baseline, args.candidate, names, args.out)
    if not found.benchmarks:
        wanted = f" named {', '.join(args.benchmark)}" if args.benchmark else ""
        raise UsageError(f"the runs share no benchmark{wanted}: nothing to diff")
    if args.json:
        print(json.dumps(diff.to_json(found), indent=1, default=str))
    else:
        print(diff.markdown(found), end="")
    return 0
