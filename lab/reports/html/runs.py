"""What the report reads from stored files: lab runs, kernel benchmarks, their profiles.

Lab runs are read by the one reader of stored runs (`lab.store.reader`): the same validation and
the same cells (measured and not, in run order) as `lab show`, `gate` and `check`. Kernel
benchmark files (bench/bench_kernels.py's pytest-benchmark JSON) are no lab run, so they are
read here, as are the run's profile files; older field names that stored runs already carry
are tolerated (a hot-kernel row's `share_of_step` before it became `share`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from lab.core import stats
from lab.store import reader as results

RESULTS = "results.json"  # a lab run's results, in pytest-benchmark's schema
KERNELS_FILE = "kernels.json"  # bench/bench_kernels.py's --benchmark-json, kept in a run folder


class ReportInputError(results.StoreError):
    """A path or document the report cannot use; the message is one line (a UsageError: the
    command line prints it and exits 2)."""


@dataclass
class Run:
    """One stored `lab run` / `lab profile` / `lab check` folder, as the page needs it."""

    doc: dict
    folder: Path | None  # None for a document passed in memory: its links cannot be resolved
    cells: list[dict] = field(default_factory=list)  # extra_info + name + samples, run order

    @property
    def run_id(self) -> str:
        lab = self.doc.get("lab") or {}
        return str(lab.get("run_id") or (self.folder.name if self.folder else "run"))

    @property
    def machine(self) -> str:
        info = self.doc.get("machine_info") or {}
        return str(info.get("lab_machine_id") or (self.folder.parent.name if self.folder
                                                  else info.get("node") or "?"))


@dataclass
class KernelBench:
    """bench/bench_kernels.py's pytest-benchmark JSON: ceilings and one row per kernel call."""

    doc: dict
    folder: Path | None
    name: str
    ceilings: dict[str, float]  # copy_GBps, matmul_bf16_TFLOPs
    rows: list[dict]  # op, impl, pass, size, bytes, flops, ms, GBps, TFLOPs, bound, ...


def is_kernel_doc(doc: dict) -> bool:
    """A bench_kernels file: benchmarks carry `impl`/`ceiling` and there is no `lab` block."""
    if "lab" in doc:
        return False
    infos = [b.get("extra_info") or {} for b in doc.get("benchmarks", [])]
    return any("impl" in i or "ceiling" in i for i in infos)


def _read_kernel_json(path: Path) -> dict | None:
    """A kernel benchmark file's document, or None when the file is not one."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list) \
            or not all(isinstance(b, dict) for b in doc["benchmarks"]) or not is_kernel_doc(doc):
        return None
    return doc


def _run(doc: dict, folder: Path | None) -> Run:
    return Run(doc, folder, results.cells(doc))


def load(source) -> Run | KernelBench:
    """A run folder, a results.json, a kernels JSON (or its folder), or a loaded document."""
    if isinstance(source, dict):
        if is_kernel_doc(source):
            return kernel_bench(source, None, "kernels")
        if not isinstance(source.get("benchmarks"), list):
            raise ReportInputError("not a pytest-benchmark document (no benchmarks list)")
        return _run(source, None)
    path = Path(source)
    if path.is_dir():
        if (path / RESULTS).is_file():
            path = path / RESULTS
        elif (path / KERNELS_FILE).is_file():
            path = path / KERNELS_FILE
        else:
            raise ReportInputError(f"{path}: no {RESULTS} or {KERNELS_FILE} in this folder")
    if not path.is_file():
        raise ReportInputError(f"{path}: no such run folder or results file")
    try:
        return _run(results.load(path), path.parent)
    except results.StoreError as exc:  # not a lab run: perhaps a kernel benchmark file
        doc = _read_kernel_json(path)
        if doc is None:
            raise ReportInputError(str(exc)) from None
    return kernel_bench(doc, path.parent, path.parent.name)


# ---------------------------------------------------------------- kernels

def _median_ms(info: dict) -> float | None:
    if info.get("ms"):
        return float(info["ms"])
    samples = info.get("device_ms_samples")
    return stats.summarize(samples).median if samples else None


def kernel_bench(doc: dict, folder: Path | None, name: str) -> KernelBench:
    """Ceilings and per-call rows; GB/s and TFLOP/s recomputed from bytes, flops and time
    where a row lacks them, so every implementation is placed by the same arithmetic."""
    ceilings: dict[str, float] = {}
    rows = []
    for bench in doc.get("benchmarks", []):
        info = bench.get("extra_info") or {}
        if "ceiling" in info and info.get("value"):
            ceilings[info["ceiling"]] = float(info["value"])
            continue
        if "impl" not in info:
            continue
        ceilings.update({k: float(v) for k, v in (info.get("ceilings") or {}).items()
                         if k not in ceilings and v})
        ms = _median_ms(info)
        if not ms or not info.get("bytes") or not info.get("flops"):
            continue
        seconds = ms * 1e-3
        rows.append({**info, "name": bench["name"], "ms": ms,
                     "GBps": float(info.get("GBps") or info["bytes"] / seconds / 1e9),
                     "TFLOPs": float(info.get("TFLOPs") or info["flops"] / seconds / 1e12),
                     "intensity": info["flops"] / info["bytes"]})
    return KernelBench(doc, folder, name, ceilings, rows)


def size_label(size) -> str:
    """(8192, 8192) -> '8192x8192'; trailing options (an epilogue, causal) kept as words."""
    if not isinstance(size, list | tuple):
        return str(size)
    dims = [str(s) for s in size if isinstance(s, int) and not isinstance(s, bool)]
    extra = [("causal" if s else "") if isinstance(s, bool) else str(s)
             for s in size if not (isinstance(s, int) and not isinstance(s, bool))
             and s is not None]
    return "x".join(dims) + "".join(f" {e}" for e in extra if e)


# ---------------------------------------------------------------- header facts

def hardware_label(doc: dict) -> str:
    """The stored runs' hardware label; on a GPU machine the host's cores beside it, since
    the page's CPU-side numbers (compile seconds) depend on them."""
    label = results.hardware_label(doc)
    hw = (doc.get("machine_info") or {}).get("lab_hardware") or {}
    return f"{label}, {hw.get('cpu_count', '?')} CPU cores" if hw.get("gpus") else label


def commit_label(doc: dict) -> str:
    commit = doc.get("commit_info") or {}
    ident = str(commit.get("id") or "unversioned")
    label = ident[:10] + (" (dirty)" if commit.get("dirty") else "")
    return f"{label} on {commit['branch']}" if commit.get("branch") else label


def distinct(cells: list[dict], key: str) -> str:
    values = sorted({str(c.get(key)) for c in cells if c.get(key) is not None})
    return ", ".join(values) or "-"


# ---------------------------------------------------------------- history

def run_value_s(cell: dict) -> float | None:
    """A run's value for one benchmark, as `lab history` takes it: the geometric mean of the
    cell's per-process medians (the median of its samples when it stored one process)."""
    if cell.get("status") != "ok" or not cell.get("samples_s"):
        return None
    medians = results.process_medians(cell)
    return math.exp(sum(math.log(m) for m in medians) / len(medians))


def run_sort_key(run: Run) -> tuple[str, str]:
    return (str(run.doc.get("datetime") or ""), run.run_id)


# ---------------------------------------------------------------- profiles

def profile_entries(run: Run) -> list[tuple[str, dict]]:
    """(cell name, profile entry) for every profiled cell; entries hold paths relative to the
    run folder. A run interrupted before it recorded its cells still has the traces on disk:
    those are found from `traces/<cell>/<backend>/hot.json`."""
    entries = [(c["name"], c["profile"]) for c in run.cells if isinstance(c.get("profile"), dict)]
    if run.folder is None:
        return entries
    linked = {str(entry.get("dir")) for _, entry in entries}
    traces = run.folder / "traces"
    for cell_dir in sorted(p for p in traces.glob("*") if p.is_dir()) if traces.is_dir() else []:
        rel = str(cell_dir.relative_to(run.folder))
        if rel in linked:
            continue
        sides = {}
        for hot in sorted(cell_dir.glob("*/hot.json")):
            trace = next((p for p in sorted(hot.parent.glob("trace.json*"))), None)
            sides[hot.parent.name] = {
                "hot_json": str(hot.relative_to(run.folder)),
                "hot_csv": str(hot.with_suffix(".csv").relative_to(run.folder)),
                **({"trace": str(trace.relative_to(run.folder))} if trace else {})}
        ncu = next(iter(sorted(cell_dir.glob("ncu/*.ncu-rep"))), None)
        nsys = next(iter(sorted(cell_dir.glob("nsys/*.nsys-rep"))), None)
        code = sorted(cell_dir.glob("inductor/*.py")) + sorted(cell_dir.glob("xla_dump/*.txt"))
        entries.append((cell_dir.name, {
            "dir": rel, "status": "found on disk (the run did not record this cell)",
            "sides": sides,
            "ncu": {"report": str(ncu.relative_to(run.folder))} if ncu else {},
            "nsys": {"report": str(nsys.relative_to(run.folder))} if nsys else {},
            "generated_code": [str(p.relative_to(run.folder)) for p in code]}))
    return entries


def hot_rows(run: Run, side: dict, top: int) -> tuple[dict | None, list[dict]]:
    """The stored hot-kernel table of one side, or (None, []) when it cannot be read."""
    if run.folder is None or not side.get("hot_json"):
        return None, []
    try:
        table = json.loads((run.folder / side["hot_json"]).read_text())
    except (OSError, json.JSONDecodeError):
        return None, []
    rows = [{**r, "share": r.get("share", r.get("share_of_step"))}
            for r in table.get("rows") or []]
    return table, rows[:top]
