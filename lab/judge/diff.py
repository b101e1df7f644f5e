"""What changed between two stored runs, benchmark by benchmark (`lab diff A B`, and the gate's
section for the benchmarks that moved).

Per benchmark: the step time either side; per side of its profile (a compiled cell traces its
eager baseline and its compiled side) the hot-table rows that appeared, vanished or changed,
with their self time per step, and how much of the traced step's change they add up to; graph
count, graph breaks, recompiles, compile seconds, peak memory and package versions from the
cells; a unified diff of the Inductor code or XLA HLO each run kept. The runs' fingerprints
(package versions, environment, git, OS, threads) are compared once. Reads only what the runs
stored; a run without a profile is said to have none.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from lab.store import reader as results

ROWS_SHOWN = 10  # hot-table rows per side in the markdown, by size of change
CODE_LINES = 2000  # unified-diff lines kept per benchmark (JSON); the markdown shows fewer
CODE_LINES_MARKDOWN = 60
# Inductor's output code names the temporary folder of its compile cache, and its traced
# graphs carry a content hash in their name: neither is a change in the code
_CODE_NOISE = re.compile(r"/\S*?lab-[a-z-]*cache-[^\s'\"]+|/tmp/[^\s'\"]+")
_ROW_NOISE = re.compile(r"(CompiledFxGraph) \w+")

# cell fields compared side by side: (label, path into the cell's fields)
CELL_FIELDS = (
    ("graph count", ("diagnostics", "graph_count")),
    ("graph breaks", ("diagnostics", "graph_breaks")),
    ("recompiles", ("diagnostics", "recompiles")),
    ("compile s (cold)", ("compile_s_cold",)),
    ("compile s (warm)", ("compile_s_warm",)),
    ("step peak MiB above resident", ("memory", "step_peak_above_resident_mib")),
    ("first call peak MiB", ("memory", "first_call_peak_above_start_mib")),
    ("peak MiB", ("memory", "peak_mib")),
    ("generated kernels", ("profile", "generated_kernels")),
)


@dataclass(frozen=True)
class RowChange:
    section: str  # device or host (lab.profiling.hotkernels)
    name: str
    kind: str
    change: str  # appeared, vanished, slower, faster, same
    base_us: float  # self time per step; 0 where absent
    cand_us: float
    base_calls: float
    cand_calls: float

    @property
    def delta_us(self) -> float:
        return self.cand_us - self.base_us


@dataclass
class SideDiff:
    """One traced side (a backend) of one benchmark's profile in both runs."""

    backend: str
    section: str  # the section whose time is the step's: device on a GPU, host on the CPU
    base_step_us: float | None
    cand_step_us: float | None
    rows: list[RowChange]  # every row of either table, largest change first
    missing: str = ""  # why there is no table to compare, or ""

    @property
    def explained_us(self) -> float:
        """The sum of the section's row changes: how much of the step's change they account
        for (self times do not nest, so rows do not count one another's time)."""
        return sum(r.delta_us for r in self.rows if r.section == self.section)


@dataclass
class BenchmarkDiff:
    name: str
    base_step_s: float | None  # timed step (geometric mean of process medians); None untimed
    cand_step_s: float | None
    sides: list[SideDiff] = field(default_factory=list)
    no_profile: list[str] = field(default_factory=list)  # "baseline", "candidate"
    fields: list[tuple[str, object, object]] = field(default_factory=list)  # changed only
    versions: list[tuple[str, object, object]] = field(default_factory=list)
    code_diff: list[str] = field(default_factory=list)
    code_note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.base_step_s and self.cand_step_s:
            return self.cand_step_s / self.base_step_s
        return None


@dataclass
class RunDiff:
    baseline: str
    candidate: str
    benchmarks: list[BenchmarkDiff]
    only_baseline: list[str]
    only_candidate: list[str]
    environment: list[tuple[str, object, object]]  # fingerprint entries that differ


# ---------------------------------------------------------------- reading

def _get(fields: dict, path: tuple) -> object:
    value = fields
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _step_s(cell: dict) -> float | None:
    if cell.get("status") != "ok" or not cell.get("samples_s"):
        return None
    medians = results.process_medians(cell)
    return math.exp(sum(math.log(m) for m in medians) / len(medians))


def _profile(cell: dict) -> dict | None:
    entry = cell.get("profile")
    return entry if isinstance(entry, dict) and entry.get("status") == "ok" else None


def _hot(run_dir: Path, side: dict) -> dict | None:
    path = side.get("hot_json")
    if not path:
        return None
    try:
        return json.loads((run_dir / path).read_text())
    except (OSError, ValueError):
        return None


def _rows(table: dict, section: str) -> dict[str, dict]:
    """A hot table's rows of one section by name, the graph hashes in names taken out (rows
    that then share a name are added up)."""
    out: dict[str, dict] = {}
    for row in table.get("rows", []):
        if row.get("section") != section:
            continue
        name = _ROW_NOISE.sub(r"\1 <hash>", row["name"])
        if name in out:
            out[name] = {**out[name],
                         "self_us_per_step": out[name]["self_us_per_step"]
                         + row["self_us_per_step"],
                         "count_per_step": out[name]["count_per_step"] + row["count_per_step"]}
        else:
            out[name] = {**row, "name": name}
    return out


def _classify(base: dict | None, cand: dict | None, tolerance: float) -> str:
    if base is None:
        return "appeared"
    if cand is None:
        return "vanished"
    delta = cand["self_us_per_step"] - base["self_us_per_step"]
    if abs(delta) <= tolerance:
        return "same"
    return "slower" if delta > 0 else "faster"


def _side_diff(backend: str, base_dir: Path, base_side: dict | None, cand_dir: Path,
               cand_side: dict | None) -> SideDiff:
    base_hot = _hot(base_dir, base_side) if base_side else None
    cand_hot = _hot(cand_dir, cand_side) if cand_side else None
    if base_hot is None or cand_hot is None:
        which = [w for w, t in (("baseline", base_hot), ("candidate", cand_hot)) if t is None]
        return SideDiff(backend, "host", None, None, [],
                        missing=f"no hot table in the {' and '.join(which)}")
    section = "device" if (base_hot.get("device_us") or cand_hot.get("device_us")) else "host"
    step_key = "device_us" if section == "device" else "step_us"
    base_step, cand_step = base_hot.get(step_key), cand_hot.get(step_key)
    rows = []
    for sec in ("device", "host"):
        b, c = _rows(base_hot, sec), _rows(cand_hot, sec)
        # a row whose time moved by under 1% of the step is within a traced pass's noise
        step = max(base_step or 0.0, cand_step or 0.0)
        tolerance = 0.01 * step if sec == section and step else 0.0
        for name in set(b) | set(c):
            rb, rc = b.get(name), c.get(name)
            rows.append(RowChange(
                sec, name, (rc or rb).get("kind", ""), _classify(rb, rc, tolerance),
                rb["self_us_per_step"] if rb else 0.0, rc["self_us_per_step"] if rc else 0.0,
                rb["count_per_step"] if rb else 0.0, rc["count_per_step"] if rc else 0.0))
    rows.sort(key=lambda r: (r.section != section, -abs(r.delta_us), r.name))
    return SideDiff(backend, section, base_step, cand_step, rows)


def _code(run_dir: Path, entry: dict | None) -> list[str] | None:
    if not entry or not entry.get("generated_code"):
        return None
    lines = []
    for rel in entry["generated_code"]:
        try:
            text = (run_dir / rel).read_text(errors="replace")
        except OSError:
            continue
        lines.append(f"# ---- {Path(rel).parent.name}/ (one generated module)\n")
        lines += [_CODE_NOISE.sub("<tmp>", line) for line in text.splitlines(keepends=True)]
    return lines


def _code_diff(base_dir: Path, base_entry, cand_dir: Path, cand_entry) -> tuple[list[str], str]:
    base_code, cand_code = _code(base_dir, base_entry), _code(cand_dir, cand_entry)
    if base_code is None and cand_code is None:
        return [], ""
    if base_code is None or cand_code is None:
        which = "baseline" if base_code is None else "candidate"
        return [], f"generated code kept by one run only (none in the {which})"
    diff = list(difflib.unified_diff(base_code, cand_code, "baseline", "candidate", n=2))
    if not diff:
        return [], "generated code identical"
    note = f"{len(diff)} diff lines" + (f", first {CODE_LINES} kept" if len(diff) > CODE_LINES
                                        else "")
    return diff[:CODE_LINES], note


def benchmark_diff(name: str, base_cell: dict, base_dir: Path, cand_cell: dict,
                   cand_dir: Path) -> BenchmarkDiff:
    out = BenchmarkDiff(name, _step_s(base_cell), _step_s(cand_cell))
    for label, path in CELL_FIELDS:
        b, c = _get(base_cell, path), _get(cand_cell, path)
        if b != c and not (isinstance(b, float) and isinstance(c, float)
                           and round(b, 3) == round(c, 3)):
            out.fields.append((label, b, c))
    bv, cv = base_cell.get("versions") or {}, cand_cell.get("versions") or {}
    out.versions = [(k, bv.get(k), cv.get(k)) for k in sorted(set(bv) | set(cv))
                    if bv.get(k) != cv.get(k)]
    base_prof, cand_prof = _profile(base_cell), _profile(cand_cell)
    out.no_profile = [side for side, p in (("baseline", base_prof), ("candidate", cand_prof))
                      if p is None]
    if base_prof and cand_prof:
        bs, cs = base_prof.get("sides") or {}, cand_prof.get("sides") or {}
        for backend in list(dict.fromkeys([*bs, *cs])):
            out.sides.append(_side_diff(backend, base_dir, bs.get(backend), cand_dir,
                                        cs.get(backend)))
        out.code_diff, out.code_note = _code_diff(base_dir, base_prof, cand_dir, cand_prof)
    return out


def _fingerprint(run_dir: Path) -> dict:
    try:
        found = json.loads((run_dir / "fingerprint.json").read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _flatten(doc: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


ENVIRONMENT = ("versions", "env", "git", "os", "threads", "executor", "gpu_drivers")


def environment_diff(base_dir: Path, cand_dir: Path) -> list[tuple[str, object, object]]:
    """The fingerprint entries (package versions, environment variables, git commit, OS,
    threads) that differ between the runs."""
    b = _flatten({k: v for k, v in _fingerprint(base_dir).items() if k in ENVIRONMENT})
    c = _flatten({k: v for k, v in _fingerprint(cand_dir).items() if k in ENVIRONMENT})
    return [(k, b.get(k), c.get(k)) for k in sorted(set(b) | set(c)) if b.get(k) != c.get(k)]


def diff_runs(base: dict, base_dir: Path, cand: dict, cand_dir: Path, base_label: str,
              cand_label: str, names: list[str] | None = None) -> RunDiff:
    """Every benchmark the two runs share (or those in `names`), by key (lab.store.identity)."""
    bc, cc = results.cells_by_name(base), results.cells_by_name(cand)
    shared = [n for n in bc if n in cc and (names is None or n in names)]
    return RunDiff(base_label, cand_label,
                   [benchmark_diff(n, bc[n], Path(base_dir), cc[n], Path(cand_dir))
                    for n in shared],
                   [n for n in bc if n not in cc], [n for n in cc if n not in bc],
                   environment_diff(Path(base_dir), Path(cand_dir)))


# ---------------------------------------------------------------- output

def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1e3 * seconds:.4g} ms"


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} us"


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _side_markdown(side: SideDiff) -> list[str]:
    if side.missing:
        return [f"- {side.backend}: {side.missing}"]
    lines = []
    step = ""
    if side.base_step_us is not None and side.cand_step_us is not None:
        delta = side.cand_step_us - side.base_step_us
        share = (f", {side.explained_us / delta:.0%} of it in the rows below"
                 if abs(delta) > 0 else "")
        step = (f"traced step ({side.section}) {_us(side.base_step_us)} -> "
                f"{_us(side.cand_step_us)} ({delta:+,.1f} us{share})")
    changed = [r for r in side.rows if r.change != "same"]
    counts = {c: sum(r.change == c for r in side.rows)
              for c in ("appeared", "vanished", "slower", "faster")}
    lines.append(f"- **{side.backend}**: {step}; rows "
                 + ", ".join(f"{n} {c}" for c, n in counts.items() if n))
    if changed:
        lines += ["", "  | change | section | kernel / op | calls/step | self us/step | delta us |",
                  "  |---|---|---|--:|--:|--:|"]
        for r in changed[:ROWS_SHOWN]:
            lines.append(f"  | {r.change} | {r.section} | `{_cell(r.name[:80])}` | "
                         f"{r.base_calls:g} -> {r.cand_calls:g} | "
                         f"{r.base_us:,.1f} -> {r.cand_us:,.1f} | {r.delta_us:+,.1f} |")
        if len(changed) > ROWS_SHOWN:
            lines.append(f"  ({len(changed) - ROWS_SHOWN} more changed rows in the JSON)")
        lines.append("")
    return lines


def benchmark_markdown(bd: BenchmarkDiff) -> list[str]:
    ratio = f" ({bd.ratio:.3f}x)" if bd.ratio else ""
    lines = [f"### `{bd.name}`", "",
             f"- step time: {_ms(bd.base_step_s)} -> {_ms(bd.cand_step_s)}{ratio}"
             + ("" if bd.ratio else " (timed steps in both runs needed for a ratio)")]
    for label, b, c in bd.fields:
        lines.append(f"- {label}: {_value(b)} -> {_value(c)}")
    for name, b, c in bd.versions:
        lines.append(f"- {name}: {_value(b)} -> {_value(c)}")
    if bd.no_profile:
        lines.append(f"- no profile in the {' and '.join(bd.no_profile)} (`lab profile` or "
                     f"`lab run --profile` stores one): kernels and ops not compared")
    for side in bd.sides:
        lines += _side_markdown(side)
    if bd.code_note:
        lines.append(f"- generated code: {bd.code_note}")
    if bd.code_diff:
        shown = bd.code_diff[:CODE_LINES_MARKDOWN]
        lines += ["", "<details><summary>generated code diff</summary>", "", "```diff",
                  *[line.rstrip("\n") for line in shown], "```", "</details>"]
        if len(bd.code_diff) > len(shown):
            lines.append(f"({len(bd.code_diff) - len(shown)} more lines in the JSON)")
    return lines + [""]


def markdown(diff: RunDiff, title: str = "## lab diff") -> str:
    lines = [title, "", f"baseline `{diff.baseline}`, candidate `{diff.candidate}`", ""]
    if diff.environment:
        lines.append("Environment (fingerprints) that differs:")
        lines += [f"- {k}: {_value(b)} -> {_value(c)}" for k, b, c in diff.environment]
        lines.append("")
    for bd in diff.benchmarks:
        lines += benchmark_markdown(bd)
    for label, names in (("only in the baseline", diff.only_baseline),
                         ("only in the candidate", diff.only_candidate)):
        if names:
            lines.append(f"{len(names)} benchmark(s) {label}: "
                         + ", ".join(f"`{n}`" for n in names))
    return "\n".join(lines).rstrip("\n") + "\n"


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def benchmark_json(bd: BenchmarkDiff) -> dict:
    return {"name": bd.name, "baseline_step_s": bd.base_step_s, "candidate_step_s": bd.cand_step_s,
            "ratio": _finite(bd.ratio), "no_profile": bd.no_profile,
            "fields": [{"field": k, "baseline": b, "candidate": c} for k, b, c in bd.fields],
            "versions": [{"package": k, "baseline": b, "candidate": c}
                         for k, b, c in bd.versions],
            "sides": [{"backend": s.backend, "section": s.section, "missing": s.missing or None,
                       "baseline_step_us": s.base_step_us, "candidate_step_us": s.cand_step_us,
                       "explained_us": s.explained_us if not s.missing else None,
                       "rows": [{"section": r.section, "name": r.name, "kind": r.kind,
                                 "change": r.change, "baseline_us": r.base_us,
                                 "candidate_us": r.cand_us, "delta_us": r.delta_us,
                                 "baseline_calls": r.base_calls, "candidate_calls": r.cand_calls}
                                for r in s.rows if r.change != "same"]}
                      for s in bd.sides],
            "code_note": bd.code_note or None, "code_diff": "".join(bd.code_diff) or None}


def to_json(diff: RunDiff) -> dict:
    return {"command": "diff", "baseline": diff.baseline, "candidate": diff.candidate,
            "environment": [{"key": k, "baseline": b, "candidate": c}
                            for k, b, c in diff.environment],
            "only_baseline": diff.only_baseline, "only_candidate": diff.only_candidate,
            "benchmarks": [benchmark_json(bd) for bd in diff.benchmarks]}


def load_with_folder(text: str, root: str = results.DEFAULT_ROOT) -> tuple[dict, Path]:
    """A stored run (folder, results.json or run id) and the folder its profiles sit in."""
    path = results.find_run(text, root)
    return results.load(path), results.resolve(path).parent


def run_diff(baseline: str, candidate: str, names: list[str] | None = None,
             root: str = results.DEFAULT_ROOT) -> RunDiff:
    base, base_dir = load_with_folder(baseline, root)
    cand, cand_dir = load_with_folder(candidate, root)
    return diff_runs(base, base_dir, cand, cand_dir, baseline, candidate, names)
