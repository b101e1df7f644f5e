"""How a framework environment (`lab run --env NAME=PYTHON`) is named in stored runs, and how
one environment's cells are read out of a run for the gate.

A cell run under an environment carries the environment's name in its backend label,
`torch-eager@old`, so its benchmark key is `mlp[torch-eager@old|infer|cpu|fp32|batch=32]`: the
same cell under two environments is stored side by side in one run, each key stable from run
to run (a nightly run with the same two environments gates against the last one by name), and
every table, report and series shows which environment a row is. Its extra_info also names the
environment (`env`), the interpreter (`python`), and the versions the cell process read back
from its own imports (`versions`).

To compare two environments (`lab gate RUN --env old,new`), each side keeps only its
environment's cells with the `@name` taken off their keys, so the two sides meet under one key.
"""

from __future__ import annotations

import copy
import re

from lab.core.errors import UsageError

SEPARATOR = "@"  # between the backend label and the environment's name
VALID_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_KEY = re.compile(r"^(?P<workload>[^\[]+)\[(?P<label>[^|\]]*)(?P<rest>\|.*\])$")


def check_name(name: str, flag: str = "--env") -> str:
    """`name` if it can name an environment (letters, digits, `_`, `.`, `-`), else UsageError."""
    if not VALID_NAME.fullmatch(name or ""):
        raise UsageError(f"{flag}: an environment's name is letters, digits, '_', '.' or '-' "
                         f"(starting with a letter or digit), got {name!r}")
    return name


def label(backend_label: str, env: str | None) -> str:
    """The backend label a cell of `env` is stored under (`torch-eager@old`)."""
    return f"{backend_label}{SEPARATOR}{env}" if env else backend_label


def env_of(cell: dict) -> str | None:
    """The environment a stored cell (lab.store.reader.cells) ran under, None for the lab's own."""
    return cell.get("env")


def envs_of(doc: dict) -> list[str]:
    """The environments a stored run's cells ran under, in the run's order."""
    from lab.store.reader import cells

    return list(dict.fromkeys(e for e in (env_of(c) for c in cells(doc)) if e))


def strip(name: str, env: str) -> str:
    """A benchmark key without its `@env` (`mlp[torch-eager@old|...]` -> `mlp[torch-eager|...]`);
    a key of another environment is returned as it is."""
    match = _KEY.match(name)
    suffix = f"{SEPARATOR}{env}"
    if not match or not match["label"].endswith(suffix):
        return name
    return f"{match['workload']}[{match['label'][:-len(suffix)]}{match['rest']}"


def select(doc: dict, env: str, side: str) -> dict:
    """A copy of the run `doc` holding only the cells of environment `env`, keyed without the
    `@env` so that another environment's cells meet them under one key. UsageError (naming
    `side`, baseline or candidate) when the run has no cell of that environment."""
    held = envs_of(doc)
    if env not in held:
        run = (doc.get("lab") or {}).get("run_id", "?")
        raise UsageError(f"--env {env}: the {side} run {run} has no cell of environment "
                         f"{env!r} (" + (f"its environments: {', '.join(held)}" if held else
                                         "it was run without --env") + ")")
    out = copy.deepcopy(doc)
    out["benchmarks"] = [_rename(b, env) for b in out["benchmarks"]
                         if (b.get("extra_info") or {}).get("env") == env]
    lab = out.setdefault("lab", {})
    lab["unmeasured"] = [_rename(u, env) for u in lab.get("unmeasured") or []
                         if isinstance(u, dict) and (u.get("extra_info") or {}).get("env") == env]
    lab["order"] = [strip(n, env) for n in lab.get("order") or []
                    if strip(n, env) != n]
    return out


def _rename(entry: dict, env: str) -> dict:
    entry["name"] = strip(entry["name"], env)
    info = entry.get("extra_info") or {}
    if isinstance(info.get("backend"), str) and info["backend"].endswith(SEPARATOR + env):
        info["backend"] = info["backend"][:-len(SEPARATOR + env)]
    return entry


def versions_of(doc: dict, env: str | None = None) -> dict:
    """The versions the cells of `env` (all cells when None) read back in their processes,
    merged: a package's version as the first measured cell that names it reported it."""
    from lab.store.reader import cells

    merged: dict = {}
    for cell in cells(doc):
        if env is not None and env_of(cell) != env:
            continue
        for key, value in (cell.get("versions") or {}).items():
            if value is not None:
                merged.setdefault(key, value)
    return merged


def version_changes(base: dict, cand: dict) -> list[tuple[str, object, object]]:
    """(package, baseline version, candidate version) for each package whose version differs."""
    return [(k, base.get(k), cand.get(k)) for k in sorted(set(base) | set(cand))
            if base.get(k) != cand.get(k) and not isinstance(base.get(k, cand.get(k)), dict)]
