"""What a root of run folders already holds, per machine folder: every stored cell with its
status and wall time, the campaign's state (which run each lease extends), the walls of its
command items from earlier leases' summaries, and the walls recorded before the campaign
existed (`step-walls.json`: each figure with the log line it was read from)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lab.store import folders as store
from lab.store import identity
from lab.store import reader as results

STATE = "campaign.json"  # OUT/<machine-id>/campaign.json: the campaign run and its leases
SUMMARY = "summary.json"  # OUT/<machine-id>/<stamp>-gpu-campaign/summary.json: one lease
# OUT/<machine-id>/step-walls.json: walls of commands run by hand on the machine kind before
# the campaign (the first H200 wave), read from their logs; a lease's own walls are in its
# summary. {"steps": {name: {"wall_s", "finished", "cases"?, "command", "log", "line"}},
#  "launch": [{"launch_s", "run", "log", "line"}]}
RECORDED = "step-walls.json"


@dataclass
class CellRecord:
    name: str  # canonical benchmark name
    status: str
    wall_s: float | None  # the cell's whole wall time (wall_s_breakdown total, else cell_wall_s)
    run: str  # run id
    key: tuple  # (workload, backend, mode)
    device: str


@dataclass
class Machine:
    """One machine folder: its id, whether it has a GPU, what it holds."""

    id: str
    gpu: str | None
    cells: list[CellRecord] = field(default_factory=list)
    state: dict = field(default_factory=dict)
    step_walls: dict = field(default_factory=dict)  # command step -> [wall_s of each lease]
    launch_s: list = field(default_factory=list)  # per-invocation wall outside the cell
    cut_short: dict = field(default_factory=dict)  # item -> longest wall it ran before SIGINT
    recorded: dict = field(default_factory=dict)  # step-walls.json as stored ({} if none)

    def measured(self) -> dict[str, CellRecord]:
        """Canonical name -> the record of a cell stored as ok (the newest if several)."""
        return {c.name: c for c in self.cells if c.status == "ok"}


def wall_of(cell: dict) -> float | None:
    breakdown = cell.get("wall_s_breakdown") or {}
    total = breakdown.get("total", cell.get("cell_wall_s"))
    return float(total) if isinstance(total, (int, float)) and total > 0 else None


def _fingerprint(folder: Path) -> dict:
    try:
        return json.loads((folder / store.FINGERPRINT).read_text())
    except (OSError, ValueError):
        return {}


def read_machine(folder: Path) -> Machine:
    gpu = None
    for fp_path in sorted(folder.glob(f"*/{store.FINGERPRINT}")):
        gpus = (_fingerprint(fp_path.parent).get("hardware") or {}).get("gpus") or []
        if gpus:
            gpu = gpus[0].get("name")
            break
    machine = Machine(folder.name, gpu)
    for path in sorted(folder.glob("*/results.json")):
        try:
            doc = results.load(path)
        except Exception:  # noqa: BLE001 - an unreadable run is no coverage, not a crash
            continue
        if (doc.get("lab") or {}).get("kind", "run") != "run":
            continue
        for cell in results.cells(doc):
            name = identity.canonical(cell.get("name", ""))
            machine.cells.append(CellRecord(
                name, str(cell.get("status")), wall_of(cell), path.parent.name,
                (cell.get("workload"), cell.get("backend"), cell.get("mode")),
                str(cell.get("device"))))
    try:
        machine.state = json.loads((folder / STATE).read_text())
    except (OSError, ValueError):
        machine.state = {}
    for path in sorted(folder.glob(f"*/{SUMMARY}")):
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for entry in summary if isinstance(summary, list) else []:
            if not isinstance(entry, dict):
                continue
            if entry.get("kind") == "command" and entry.get("status") == "ok":
                # keyed by the item: a step of several commands (the kernel sizes) has a wall
                # per item; a one-command step's item is named as the step
                machine.step_walls.setdefault(entry["name"], []).append(entry["wall_s"])
            if entry.get("kind") == "cell" and isinstance(entry.get("launch_s"), (int, float)):
                machine.launch_s.append(entry["launch_s"])
            if entry.get("status") == "stopped at its budget" and "wall_s" in entry:
                name = entry["name"]
                machine.cut_short[name] = max(machine.cut_short.get(name, 0), entry["wall_s"])
    machine.recorded = read_recorded(folder)
    return machine


def read_recorded(folder: Path) -> dict:
    try:
        doc = json.loads((folder / RECORDED).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def read_root(root: str | Path) -> dict[str, Machine]:
    root = Path(root)
    if not root.is_dir():
        return {}
    return {p.name: read_machine(p) for p in sorted(root.iterdir()) if p.is_dir()}


def campaign_cells(root: str | Path, machine_id: str) -> list[str]:
    """The canonical names stored in the machine's campaign run, once per stored entry (a
    cell stored twice appears twice): what the exactly-once check counts."""
    folder = Path(root) / machine_id
    try:
        run = json.loads((folder / STATE).read_text())["run"]
    except (OSError, ValueError, KeyError):
        return []
    doc = results.load(folder / run / "results.json")
    names = [b["name"] for b in doc.get("benchmarks") or []]
    names += [u["name"] for u in (doc.get("lab") or {}).get("unmeasured") or []]
    return [identity.canonical(n) for n in names]
