"""The one reader of stored runs: find a run, load and validate its results.json, and give
its cells as the lab's fields. Knows no framework.

A stored run keeps its measured cells in pytest-benchmark's `benchmarks` (with the raw samples
in `stats.data`) and the cells without samples (errors, skips) under `lab.unmeasured`; every
consumer (tables, verdicts, gate, history, reports) reads both through `cells`.
"""

from __future__ import annotations

import json
from pathlib import Path

from lab.core.errors import UsageError
from lab.store import identity

RESULTS = "results.json"
DEFAULT_ROOT = "profiles"


class StoreError(UsageError):
    """A run folder or results file that cannot be used; the message is one line."""


def resolve(path: str | Path) -> Path:
    """A run folder or a results.json path -> the results.json path (must exist)."""
    path = Path(path)
    candidate = path / RESULTS if path.is_dir() else path
    if not candidate.is_file():
        raise StoreError(f"no results at {path} (expected a run folder or its {RESULTS})")
    return candidate


def find_run(text: str, root: str | Path = DEFAULT_ROOT) -> Path:
    """A run folder, a results.json, or a run id searched under `root/<machine>/`."""
    path = Path(text)
    if path.exists():
        return path
    matches = sorted(Path(root).glob(f"*/{text}"))
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise StoreError(f"run id {text!r} is ambiguous: {', '.join(map(str, matches))}")
    raise StoreError(f"no run at {text!r} (give a run folder, its results.json, or a run id)")


def load(path: str | Path) -> dict:
    """Read and validate a stored run; one-line StoreError for anything unusable."""
    file = resolve(path)
    try:
        text = file.read_bytes().decode("utf-8")
    except OSError as exc:
        raise StoreError(f"cannot read {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise StoreError(f"{file} is not a results file (not UTF-8 text)") from None
    if not text.strip():
        raise StoreError(f"{file} is empty")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        # the json module's own phrasing: exc.msg may end in "at" ("... string starting at")
        raise StoreError(f"{file} is not valid JSON (truncated?): {exc.msg}: line "
                         f"{exc.lineno} column {exc.colno}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list) \
            or "machine_info" not in doc:
        raise StoreError(f"{file} is not a pytest-benchmark results file "
                         f"(needs machine_info and a benchmarks list)")
    for i, bench in enumerate(doc["benchmarks"]):
        stats = bench.get("stats") if isinstance(bench, dict) else None
        if not isinstance(stats, dict) or not isinstance(stats.get("data"), list) \
                or "name" not in bench:
            raise StoreError(f"{file}: benchmark {i} lacks a name or raw samples (stats.data)")
    if not isinstance(doc.get("lab"), dict):  # every reader needs the lab's cell fields
        raise StoreError(f"{file} is a pytest-benchmark file but not a lab run (no 'lab' "
                         f"section); `pytest-benchmark compare` reads it")
    return doc


def load_run(text: str, root: str | Path = DEFAULT_ROOT) -> dict:
    return load(find_run(text, root))


def cells(doc: dict) -> list[dict]:
    """Every cell of a run in run order: its extra_info plus `name` (its key, lab.store.identity: an
    older version's name read through its mapping; `stored_name` as stored) and `samples_s`
    (None for a cell without samples). A measured cell without a stored status is `ok`."""
    out = []
    for entry in (doc.get("lab") or {}).get("unmeasured") or []:
        if isinstance(entry, dict) and "name" in entry:
            out.append({**(entry.get("extra_info") or {}), "name": entry["name"],
                        "samples_s": None})
    for bench in doc["benchmarks"]:
        info = bench.get("extra_info") or {}
        out.append({"status": "ok", **info, "name": bench["name"],
                    "samples_s": (bench.get("stats") or {}).get("data")})
    order = {name: i for i, name in enumerate((doc.get("lab") or {}).get("order") or [])}
    out.sort(key=lambda c: order.get(c["name"], len(order)))
    for cell in out:  # the key every reader compares runs by, whatever version stored it
        cell["stored_name"], cell["name"] = cell["name"], identity.canonical(cell["name"])
    return out


def cells_by_name(doc: dict) -> dict[str, dict]:
    return {cell["name"]: cell for cell in cells(doc)}


def process_medians(cell: dict) -> list[float]:
    """Per-process medians of a cell (seconds per step): one per cell process."""
    from lab.core import stats

    medians = cell.get("process_medians_s")
    if medians:
        return [float(m) for m in medians]
    return [float(stats.summarize(cell["samples_s"]).median)]


def hardware_label(doc: dict) -> str:
    hw = (doc.get("machine_info") or {}).get("lab_hardware") or {}
    return describe_hardware(hw)


def describe_hardware(hw: dict) -> str:
    if hw.get("gpus"):  # {"name": ...} as the lab stores them; a bare name as others may
        first = hw["gpus"][0]
        return f"{first.get('name', '?') if isinstance(first, dict) else first} " \
               f"x{len(hw['gpus'])}"
    if hw:
        return f"{hw.get('cpu_model', '?')}, {hw.get('cpu_count', '?')} cores (CPU)"
    return "unknown hardware"


def machine_id(doc: dict) -> str:
    return (doc.get("machine_info") or {}).get("lab_machine_id", "?")
