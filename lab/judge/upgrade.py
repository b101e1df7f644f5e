"""The gate between two framework environments (docs/upgrades.md): which cells of which run are
the baseline and which the candidate, when the runs were measured with `lab run --env`.

- `lab gate RUN --env old,new`: both sides from one run, its `old` cells against its `new`
  ones (the same cells, measured in one run on one machine, interleaved in time);
- `lab gate RUN_A RUN_B --env old,new`: RUN_A's `old` cells against RUN_B's `new` ones;
- `lab gate RUN_A RUN_B` where each run holds the cells of one environment (and nothing else),
  under different names: those two are compared, as if `--env` named them;
- otherwise the runs are gated as stored: a nightly run with environments `old` and `new`
  against yesterday's compares `old` with `old` and `new` with `new`, by key.

The verdicts are the gate's own (wall time, and counts where both sides counted), and the
table names the versions that differ between the two sides, as the cell processes read them.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.core.errors import UsageError
from lab.store import envs as naming


@dataclass
class Sides:
    base: dict
    cand: dict
    base_label: str
    cand_label: str
    envs: tuple[str, str] | None  # the environments compared, or None (runs as stored)
    note: str = ""  # the versions that differ between the two sides


def parse_envs(text: str | None) -> tuple[str, str] | None:
    """`old,new` -> ("old", "new"); None when not given."""
    if text is None:
        return None
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 2 or not all(parts):
        raise UsageError(f"--env expects two environment names, BASELINE,CANDIDATE "
                         f"(e.g. old,new), got {text!r}")
    for part in parts:
        naming.check_name(part)
    if parts[0] == parts[1]:
        raise UsageError(f"--env {text}: a gate compares two environments; the names are the "
                         f"same")
    return parts[0], parts[1]


def sides(base: dict, cand: dict, base_label: str, cand_label: str,
          envs: tuple[str, str] | None) -> Sides:
    """The two sides the gate compares (see the module's docstring)."""
    if envs is None:
        held_b, held_c = naming.envs_of(base), naming.envs_of(cand)
        if len(held_b) == 1 and len(held_c) == 1 and held_b != held_c \
                and _only_env_cells(base) and _only_env_cells(cand):
            envs = (held_b[0], held_c[0])
        else:
            return Sides(base, cand, base_label, cand_label, None)
    old, new = envs
    b, c = naming.select(base, old, "baseline"), naming.select(cand, new, "candidate")
    changed = naming.version_changes(naming.versions_of(base, old),
                                     naming.versions_of(cand, new))
    return Sides(b, c, f"{base_label} (env {old})", f"{cand_label} (env {new})", envs,
                 describe(changed))


def describe(changed: list[tuple[str, object, object]]) -> str:
    """The versions that differ, in one line: those both sides have first (the upgrade itself:
    `torch 2.13.0+cpu -> 2.14.1+cu130`), then the packages only one side has, by name."""
    if not changed:
        return "no package version differs between the two environments"
    both = [f"{k} {b} -> {c}" for k, b, c in changed if b is not None and c is not None]
    parts = ["versions " + ", ".join(both)] if both else []
    for side, names in (("baseline", [k for k, b, c in changed if c is None]),
                        ("candidate", [k for k, b, c in changed if b is None])):
        if names:
            parts.append(f"only in the {side}'s environment: {', '.join(names)}")
    return "; ".join(parts)


def _only_env_cells(doc: dict) -> bool:
    from lab.store.reader import cells

    return all(naming.env_of(c) for c in cells(doc))
