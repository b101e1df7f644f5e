"""One lease of the campaign: the planned items run one by one, each step stopped at its
budget, everything recorded as it happens (a lease can end at any moment).

Cells go into the machine's one campaign run: the first cell ever creates it, every later cell
is `lab run --resume RUN --resume-anyway` (a lease runs another commit of the lab than the one
before, which --resume alone refuses; the run's `resumed` list keeps each lease's command line
and the cells it kept). A step whose next item's expected cost passes what is left of its
budget stops before it; an item that runs past the budget gets SIGINT (the lab keeps what it
finished). Where a step stopped is written to the lease's summary and the campaign state.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lab.campaign import lease as lease_mod
from lab.campaign import stored
from lab.campaign.plan import LAB, Step
from lab.store import folders as store
from lab.store import provenance
from lab.store import reader as results

GRACE_S = 20  # after SIGINT, how long the lab gets to store what it finished
JUDGE_S = 30  # lab check --stored-only reads the run: no cell runs; what it may take at most
SLACK_S = 1.0
OVERRUN = 2.0  # the wall clock between two items (the campaign's own bookkeeping)


def missing_packages(step: Step) -> list[str]:
    return [p for p in step.needs if importlib.util.find_spec(p) is None]


def cannot_run_here(steps: list[Step]) -> dict[str, str]:
    """Cells whose backend needs a package this machine lacks: name -> why. `lab run` would
    refuse them (no cell can run), so a lease neither plans time for them nor launches them."""
    from lab import compile as backends

    out = {}
    for step in steps:
        for item in step.items:
            if item.cell and item.key:
                # a data-parallel cell's label adds `+strategy@N` to its backend's
                backend = item.key[1].partition("+")[0]
                gone = backends.missing_packages(backends.resolve(backend).info)
                if gone:
                    out[item.name] = f"{' and '.join(gone)} not installed"
    return out


def gpu_count(steps: list[Step]) -> int:
    """The GPUs the lease's processes can use: torch.cuda.device_count() in a child process
    (CUDA_VISIBLE_DEVICES counts; the campaign's own process keeps no CUDA context), asked
    only when a step needs several and nvidia-smi lists several; else nvidia-smi's count."""
    listed = len(provenance.fingerprint()["hardware"].get("gpus") or [])
    if listed < 2 or not any(s.needs_gpus > 1 for s in steps):
        return listed
    try:
        out = subprocess.run([sys.executable, "-c", "import torch; "
                              "print(torch.cuda.device_count())"],
                             capture_output=True, text=True, timeout=120)
        return int(out.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return 0  # torch cannot say: no step that needs several GPUs runs


def _env(root: Path) -> dict:
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "TRITON_INTERPRET": "0"}


def _launch(argv: list[str], log: Path, limit_s: float, root: Path) -> tuple[str, float]:
    """Run argv with its output in `log`; (status, wall seconds); SIGINT at `limit_s`."""
    t0 = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.Popen(argv, cwd=root, stdout=out, stderr=subprocess.STDOUT,
                                env=_env(root), start_new_session=True)
        try:
            code = proc.wait(timeout=max(limit_s, 1.0))
            status = "ok" if code == 0 else f"exit {code}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            status = "stopped at its budget"
    return status, time.perf_counter() - t0


def _run_folders(folder: Path) -> set[str]:
    return {p.parent.name for p in folder.glob("*/results.json")} if folder.is_dir() else set()


class Campaign:
    def __init__(self, out: Path, steps: list[Step], machine_id: str, root: Path,
                 judge_claims: bool = False):
        self.out, self.steps, self.root = out, steps, root
        self.judge_claims = judge_claims  # the seed's claims judged on the run after a lease
        self.machines = stored.read_root(out)
        fp_gpus = provenance.fingerprint()["hardware"].get("gpus") or []
        self.machine = self.machines.get(machine_id) or stored.Machine(
            machine_id, fp_gpus[0]["name"] if fp_gpus else None)
        self.folder = out / machine_id
        self.state = dict(self.machine.state) or {"machine": machine_id, "run": None,
                                                  "done": {}, "leases": []}
        self.summary: list[dict] = []

    def _save(self, lease_dir: Path) -> None:
        store.atomic_write_json(self.folder / stored.STATE, self.state)
        store.atomic_write_json(lease_dir / stored.SUMMARY, self.summary)

    def _record(self, lease_dir: Path, entry: dict) -> None:
        self.summary.append(entry)
        self._save(lease_dir)
        print(f"   {entry['name']}: {entry['status']} in {entry.get('wall_s', 0):.0f} s",
              flush=True)

    def run(self, limit_s: float, budgets: dict | None = None) -> int:
        names = set(stored.campaign_cells(self.out, self.machine.id)) \
            if self.state.get("run") else set()
        plans = lease_mod.plan_lease(self.steps, self.machine, self.machines, limit_s, names,
                                     cannot_run_here(self.steps), gpu_count(self.steps))
        note = "figures from stored runs, margin included"
        for line in lease_mod.describe(plans, self.machine, limit_s, note, missing_packages):
            print(line)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        lease_dir = self.folder / f"{stamp}-gpu-campaign"
        lease_dir.mkdir(parents=True, exist_ok=False)
        store.atomic_write_json(lease_dir / store.FINGERPRINT, provenance.fingerprint())
        this = {"stamp": stamp, "folder": lease_dir.name, "limit_s": limit_s, "stopped": {},
                "cannot_run_here": {i.name: why for p in plans for i, why in p.cannot}}
        self.state.setdefault("leases", []).append(this)
        t0 = time.perf_counter()
        for plan in plans:
            step = plan.step
            if plan.skipped:  # a step this machine kind never runs (too few GPUs): said once
                this["stopped"][step.name] = plan.skipped
                self._record(lease_dir, {"kind": "step", "name": step.name,
                                         "status": plan.skipped})
                continue
            gone = missing_packages(step)
            if gone and plan.now:  # recorded, not run: a later lease with the package runs it
                this["stopped"][step.name] = f"skipped: {', '.join(gone)} not installed"
                self._record(lease_dir, {"kind": "step", "name": step.name,
                                         "status": this["stopped"][step.name]})
                continue
            # a budget asked for caps the planned one: the step stops there, as at any budget
            budget = min(plan.budget_s, (budgets or {}).get(step.name, float("inf")))
            started = time.perf_counter()
            if plan.later:
                this["stopped"][step.name] = (
                    f"at the lease's limit: {len(plan.later)} item(s) left for a later lease, "
                    f"from {plan.later[0][0].name}")
            if not plan.now:
                continue
            print(f"-- {step.name}: {len(plan.now)} item(s), budget {budget:.0f} s", flush=True)
            for item, cost in plan.now:
                spent = time.perf_counter() - started
                lease_left = limit_s - (time.perf_counter() - t0)
                left = min(budget - spent, lease_left)
                # SLACK_S: the planned items fit their budget by construction; only items that
                # ran longer than expected before this one can push it out
                if cost.seconds > left + SLACK_S:  # stop cleanly, between two items
                    this["stopped"][step.name] = (
                        f"before {item.name}: expected {cost.seconds:.0f} s, "
                        f"{max(left, 0):.0f} s of the budget left")
                    self._record(lease_dir, {"kind": "step", "name": step.name,
                                             "status": "stopped at its budget",
                                             "where": this["stopped"][step.name]})
                    break
                # the hard limit: a cell slower than its estimate (a busy or another machine)
                # gets up to OVERRUN x its cost before SIGINT, within the lease's time, so an
                # estimate too low for one cell cannot cut it short lease after lease
                hard = min(lease_left, max(left, OVERRUN * cost.seconds))
                entry = self._cell(item, hard, lease_dir) if item.cell else \
                    self._command(step, item, hard, lease_dir)
                entry.update(step=step.name, expected_s=round(cost.seconds, 1))
                if entry["status"] == "stopped at its budget":
                    this["stopped"][step.name] = f"during {item.name}"
                self._record(lease_dir, entry)
                if entry["status"] == "stopped at its budget":
                    break
        left = limit_s - (time.perf_counter() - t0)
        ran_claims = any(e.get("step") == "claims" and e["kind"] == "cell" for e in self.summary)
        if self.judge_claims and ran_claims and left >= JUDGE_S:
            status, wall = _launch(
                [*LAB, "check", "claims/seed.toml", "--run", self.state["run"], "--stored-only",
                 "--out", str(self.out)], lease_dir / "claims-check.log", JUDGE_S, self.root)
            self._record(lease_dir, {"kind": "judge", "name": "claims-check", "status": status,
                                     "wall_s": round(wall, 1)})
        this["wall_s"] = round(time.perf_counter() - t0, 1)
        self._save(lease_dir)
        print(f"lease on {self.machine.id}: {this['wall_s'] / 60:.1f} min; "
              f"campaign run {self.state.get('run')}; logs in {lease_dir}")
        return 0

    def _cell(self, item, left: float, lease_dir: Path) -> dict:
        argv = [*LAB, "run", *item.argv, "--out", str(self.out)]
        if self.state.get("run"):
            argv += ["--resume", self.state["run"], "--resume-anyway"]
        before = _run_folders(self.folder)
        status, wall = _launch(argv, lease_dir / "cells.log", left, self.root)
        if self.state.get("run") is None:  # the campaign run: the folder its first cell made
            new = sorted(_run_folders(self.folder) - before)
            if new:
                self.state["run"] = new[-1]
        entry = {"kind": "cell", "name": item.name, "invocation": status,
                 "wall_s": round(wall, 1)}
        cell = None
        if self.state.get("run"):
            run_json = self.folder / self.state["run"] / "results.json"
            if run_json.is_file():
                cell = results.cells_by_name(results.load(run_json)).get(item.name)
        if cell is None:
            entry["status"] = "stopped at its budget" if status == "stopped at its budget" \
                else f"not stored ({status})"
            return entry
        entry["status"] = str(cell.get("status"))
        cell_wall = stored.wall_of(cell)
        if cell_wall is not None:  # the lab process around the cell: the launch overhead
            entry["cell_wall_s"] = cell_wall
            entry["launch_s"] = round(max(wall - cell_wall, 0.0), 2)
        return entry

    def _command(self, step: Step, item, left: float, lease_dir: Path) -> dict:
        # one JSON and log per item: `kernels:softmax-8192x8192` -> kernels-softmax-8192x8192
        slug = item.name.replace(":", "-")
        fill = {"{out}": str(self.out), "{json}": str(lease_dir / f"{slug}.json")}
        argv = []
        for arg in item.argv:
            for key, value in fill.items():
                arg = arg.replace(key, value)
            argv.append(arg)
        status, wall = _launch(argv, lease_dir / f"{slug}.log", left, self.root)
        if status == "ok" and step.name not in lease_mod.EVERY_LEASE:
            self.state.setdefault("done", {})[item.name] = self.state["leases"][-1]["stamp"]
        # named by the item: its wall is what the next lease plans it with (stored.py)
        return {"kind": "command", "name": item.name, "status": status,
                "wall_s": round(wall, 1)}
