"""`lab run --resume RUN`: continue a stored run instead of starting over.

A suite of many models is cut short by Ctrl-C, a lost machine or a lease that ended; the cells
it finished are good measurements, and running them again costs hours. A resumed run measures
only the cells of the selection that RUN does not hold as finished, into RUN's own folder, and
marks the run complete when every cell of the selection is in.

The cells of one run must be comparable with each other (a suite summary mixes them), so a
resume refuses, unless told (`--resume-anyway`), a different machine (its hardware), a
different lab commit (or uncommitted changes, which the commit does not name), and a cell
setting the benchmark name does not carry (threads, samples, per-call latency, cold L2, CUDA
graphs, the time budget). The name itself carries workload, backend, mode, device, precision
and shape: a cell under another name is another cell, run as such.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

from lab.cell.spec import benchmark_name
from lab.core.errors import UsageError
from lab.running.writer import RunRecorder
from lab.store import folders as store
from lab.store import identity
from lab.store import reader as results

# a cell stored with one of these did not finish: its node went away, so it runs again
UNFINISHED = frozenset({"lost"})
RESUME_FLAG = "--resume-anyway"  # the command line's word for "resume despite differences"


def _settings_of_spec(spec) -> dict:
    """What a cell is measured with beyond its name, as a spec says it."""
    return {"threads": spec.threads, "repeats": spec.repeats, "latency": bool(spec.latency),
            "cold_l2": bool(spec.cold_l2), "cuda_graphs": bool(spec.cuda_graphs),
            "budget_s": spec.budget_s}


def _settings_of_cell(cell: dict) -> dict:
    """The same settings as a stored cell holds them; a key it does not hold is left out
    (a cell that failed before sampling stored no sampling plan)."""
    sampling = cell.get("sampling") or {}
    found = {"threads": cell.get("threads"), "repeats": sampling.get("rounds_planned"),
             "latency": cell.get("latency"), "cold_l2": cell.get("cold_l2"),
             "cuda_graphs": cell.get("cuda_graphs"), "budget_s": sampling.get("budget_s")}
    return {k: v for k, v in found.items() if v is not None}


def _differences(stored: dict, wanted: dict) -> list[str]:
    out = []
    for key in sorted(stored):
        a, b = stored[key], wanted.get(key)
        if isinstance(a, float) or isinstance(b, float):
            same = a is not None and b is not None and abs(float(a) - float(b)) <= 1e-9 * max(
                abs(float(a)), abs(float(b)), 1.0)
        else:
            same = a == b
        if not same:
            out.append(f"{key} {a} (stored) vs {b} (now)")
    return out


@dataclass
class Resume:
    """A stored run to continue: where it is, what it holds, what is left to run."""

    run_dir: Path
    doc: dict
    finished: set[str]  # canonical names of the cells it holds as finished
    order: list[str]  # the whole selection's names, in plan order

    def remaining(self, cells: list) -> list:
        """The planned cells the run does not hold as finished, in plan order."""
        return [c for c in cells if identity.canonical(c.name) not in self.finished]

    def recorder(self, fp: dict, argv: list[str], kind: str) -> RunRecorder:
        return ResumedRecorder(self, fp, argv, kind)


class ResumedRecorder(RunRecorder):
    """A RunRecorder that writes into the stored run: its finished cells are kept as stored
    (raw entries, samples and all), its start time, machine and commit stay the run's, and
    each resume is added to `resumed` with its command line."""

    def __init__(self, resume: Resume, fp: dict, argv: list[str], kind: str):
        old_fp = (resume.run_dir / store.FINGERPRINT).read_bytes() \
            if (resume.run_dir / store.FINGERPRINT).is_file() else None
        super().__init__(resume.run_dir, fp, argv, kind)
        if old_fp is not None:  # the run's machine as it was when the run started
            store.atomic_write_bytes(resume.run_dir / store.FINGERPRINT, old_fp)
        doc, lab_part = resume.doc, resume.doc.get("lab") or {}
        keep = resume.finished

        def kept(entry) -> bool:
            return isinstance(entry, dict) and identity.canonical(entry.get("name", "")) in keep

        self.kept_benchmarks = [b for b in doc["benchmarks"] if kept(b)]
        self.kept_unmeasured = [u for u in lab_part.get("unmeasured") or [] if kept(u)]
        self._cached = {"machine_info": doc["machine_info"],
                        "commit_info": doc.get("commit_info") or self._cached["commit_info"]}
        now = _dt.datetime.now().isoformat(timespec="seconds")
        self.run.update(
            argv=lab_part.get("argv", self.run["argv"]), started=lab_part.get("started"),
            resumed=[*(lab_part.get("resumed") or []),
                     {"at": now, "argv": self.run["argv"],
                      "cells_kept": len(self.kept_benchmarks) + len(self.kept_unmeasured)}])
        self._whole_order = resume.order

    def set_order(self, names: list[str]) -> None:
        super().set_order(list(dict.fromkeys([*self._whole_order, *names])))


def prepare(run: str, root: str | Path, cells: list, fp: dict, anyway: bool = False) -> Resume:
    """The stored run `run` (folder, results.json or run id under `root`) checked against the
    planned `cells` and this machine's fingerprint `fp`; UsageError, one line, when it cannot
    be continued by this selection (unless `anyway`, for the differences it may override)."""
    doc = results.load_run(run, root)
    path = results.resolve(results.find_run(run, root))
    run_dir = path.parent
    lab_part = doc["lab"]
    if lab_part.get("kind", "run") != "run":
        raise UsageError(f"--resume {run}: a {lab_part.get('kind')} run, not a timing run")
    problems = []
    stored_fp = _stored_fingerprint(run_dir)
    stored_hw = stored_fp.get("hardware") or \
        (doc.get("machine_info") or {}).get("lab_hardware") or {}
    hw = identity.hardware_differences(stored_hw, fp["hardware"])
    if hw:
        problems.append(f"another machine ({'; '.join(hw)})")
    old_git, new_git = stored_fp.get("git") or {}, fp.get("git") or {}
    if old_git.get("id") != new_git.get("id"):
        problems.append(f"another lab commit ({str(old_git.get('id'))[:12]} stored, "
                        f"{str(new_git.get('id'))[:12]} now)")
    elif new_git.get("dirty") and not old_git.get("dirty"):
        problems.append("uncommitted changes to the lab since the run started")
    stored = {c["name"]: c for c in results.cells(doc)}
    finished = {name for name, c in stored.items() if c.get("status") not in UNFINISHED}
    run_settings: dict = {}
    for c in stored.values():
        for key, value in _settings_of_cell(c).items():
            run_settings.setdefault(key, value)
    for cell in cells:
        if cell.skip_reason:
            continue
        name = identity.canonical(cell.name)
        wanted = _settings_of_spec(cell.spec)
        base = _settings_of_cell(stored[name]) if name in stored else run_settings
        diff = _differences(base, wanted)
        if diff:
            problems.append(f"other settings for {cell.spec.workload} {cell.spec.mode} "
                            f"{cell.choice.label}: {', '.join(diff)}")
            break  # one cell says it; the rest are alike
    if problems and not anyway:
        raise UsageError(f"--resume {run}: {'; '.join(problems)}; {RESUME_FLAG} continues it "
                         f"anyway")
    planned = [identity.canonical(benchmark_name(c.spec, c.choice.label)) for c in cells]
    order = list(dict.fromkeys([*(lab_part.get("order") or []), *planned]))
    return Resume(run_dir, doc, finished, order)


def _stored_fingerprint(run_dir: Path) -> dict:
    import json

    try:
        return json.loads((run_dir / store.FINGERPRINT).read_text())
    except (OSError, ValueError):
        return {}
