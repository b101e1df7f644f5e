"""Where a cell's wall time goes, seen from the parent: runs a few small cells, each as
`lab run` runs it (lab.cell.launch.run_cell: the timed process, then the warm-cache process of
a compiled cell), and prints each one's wall split into its parts, with the lab's own
overhead = the wall minus the cold compile, the warm compile and the sampling.

    python bench/cell_overhead.py                       # mlp, hf/bert and hf/gpt2, tiny, infer
    python bench/cell_overhead.py --repeats 3 --json out.json
    python bench/cell_overhead.py --floor               # the import floor, alone
    python bench/cell_overhead.py --run RUN             # the same split of a stored run's cells

Not part of `make test`: it takes minutes, and its figures are the machine's. The floor it
prints first is what no cell process can go below: a bare interpreter, `import torch`, and
`import torch._dynamo` (what `torch.compile` imports), each in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FLOOR = {  # what a fresh process costs before it does any work of the cell
    "python": "pass",
    "import torch": "import torch",
    "import torch._dynamo": "import torch, torch._dynamo",
    "import transformers": "import torch, transformers",
    "import lab.cell.main": "import lab.cell.main",
}

# the columns: (label, keys of wall_s_breakdown they add up); the compile and sampling
# columns are taken from the cell's own timings below, not from its phases
PARTS = [
    ("start", ("process_start", "process_start_and_exit")),
    ("import", ("import",)),
    ("build", ("setup",)),
    ("1st calls-compile", ()),
    ("accuracy", ("accuracy",)),
    ("memory", ("memory",)),
    ("warm-up", ("warmup",)),
    ("warm proc-compile", ()),
]


def floor(repeats: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = {}
    for name, code in FLOOR.items():
        walls = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, env=env)
            walls.append(time.perf_counter() - t0)
        out[name] = statistics.median(walls)
        print(f"floor  {name:<22} {out[name]:6.2f} s   python -c '{code}'", flush=True)
    return out


def specs(cells: list[str], backends: list[str]):
    from lab.running.loop import Selection, plan
    from lab.workloads import suites

    plans = []
    for workload in cells:
        shape = suites.size_shape("tiny") if suites.suite_of(workload) else {}
        planned, _ = plan(Selection(workloads=[workload], backends=backends, device="cpu",
                                    shape=shape))
        plans += [(c.spec, c.choice.label) for c in planned if c.skip_reason is None]
    return plans


def split(outcome) -> dict:
    """The cell's wall in the bench's columns (seconds); `other` is what no part names."""
    from lab.running.writer import wall_breakdown

    result, warm = outcome.result, outcome.warm
    return split_parts(wall_breakdown(outcome), result.first_call_s or 0.0,
                       (warm.first_call_s or 0.0) if warm is not None else 0.0)


def split_parts(parts: dict, cold: float, warm_compile: float) -> dict:
    """A wall breakdown (lab.running.writer.wall_breakdown, as stored in `wall_s_breakdown`)
    in the bench's columns, given the cold and warm first calls."""
    sampling = parts.get("sampling", 0.0)
    row = {"wall": parts["total"], "compile cold": cold, "compile warm": warm_compile,
           "sampling": sampling}
    for label, keys in PARTS:
        row[label] = sum(parts.get(k, 0.0) for k in keys)
    row["1st calls-compile"] = parts.get("first_call", 0.0) - cold
    row["warm proc-compile"] = parts.get("warm_cache_process", 0.0) - warm_compile
    named = sum(v for k, v in row.items() if k != "wall")
    row["other"] = row["wall"] - named
    row["overhead"] = row["wall"] - cold - warm_compile - sampling
    return row


def stored(run: str) -> dict:
    """Rows of a stored run's cells, keyed as the live ones, from their `wall_s_breakdown`."""
    from lab.store import reader

    rows = {}
    for info in reader.cells(reader.load_run(run)):
        parts = info.get("wall_s_breakdown")
        if not parts:
            continue
        compiled = info.get("first_call_s_cold") is not None
        cold = info.get("first_call_s_cold") or 0.0
        row = split_parts(parts, cold, info.get("first_call_s_warm") or 0.0)
        if not compiled:  # an eager cell's first call is no compile
            row["1st calls-compile"] += row["compile cold"]
            row["overhead"] += row["compile cold"]
            row["compile cold"] = 0.0
        row["status"] = info.get("status")
        row["started"] = info.get("cell_process")
        name = f"{info['workload']} {info['backend']} {info['mode']}"
        rows.setdefault(name, []).append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="mlp,hf/bert,hf/gpt2",
                    help="workloads (suite models at --size tiny)")
    ap.add_argument("--backends", default="torch-eager,torch-compile")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each cell (medians)")
    ap.add_argument("--floor", action="store_true", help="only the import floor")
    ap.add_argument("--no-floor", action="store_true", help="skip the import floor")
    ap.add_argument("--json", help="write every row here")
    ap.add_argument("--run", help="split a stored run's cells (folder or run id), run nothing")
    args = ap.parse_args(argv)
    if args.run:
        return report(stored(args.run), 1, {}, args.json)
    print(f"load: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores", flush=True)
    fl = {} if args.no_floor else floor(max(args.repeats, 3))
    if args.floor:
        return 0
    from lab.cell import launch

    rows = {}
    for _ in range(args.repeats):
        for spec, label in specs(args.cells.split(","), args.backends.split(",")):
            name = f"{spec.workload} {label} {spec.mode}"
            outcome = launch.run_cell(spec, label, timeout_s=900)
            row = split(outcome)
            row["status"] = str(outcome.status)
            # memory as the timed process saw it: a forked process's RSS counts only the
            # pages it touched, so its absolute figures differ from a fresh one's
            row["mem"] = {k: (outcome.result.memory or {}).get(k) for k in (
                "after_import_mib", "peak_mib", "step_peak_above_resident_mib",
                "baseline_step_peak_above_resident_mib", "ratio_eager_over_candidate")}
            row["samples_median_s"] = (statistics.median(outcome.result.samples_s)
                                       if outcome.result.samples_s else None)
            rows.setdefault(name, []).append(row)
            print(f"{name:<34} " + " ".join(
                f"{k}={v:.2f}" for k, v in row.items() if isinstance(v, float)), flush=True)
    return report(rows, args.repeats, fl, args.json)


KEYS = ["wall", "overhead", "compile cold", "compile warm", "sampling",
        *(label for label, _ in PARTS), "other"]


def report(rows: dict, repeats: int, fl: dict, json_path: str | None) -> int:
    print("\nmedians over", repeats, "run(s), seconds")
    print(f"{'cell':<34}" + "".join(f"{k[:10]:>11}" for k in KEYS))
    for name, runs in rows.items():
        print(f"{name:<34}" + "".join(
            f"{statistics.median(r[k] for r in runs):>11.2f}" for k in KEYS))
    by_backend: dict[str, list[dict]] = {}
    for name, runs in rows.items():
        by_backend.setdefault(name.split()[1], []).extend(runs)
    print(f"\nper backend, median over cells (n), seconds\n{'backend':<34}"
          + "".join(f"{k[:10]:>11}" for k in KEYS))
    for backend, runs in by_backend.items():
        print(f"{backend + f' ({len(runs)})':<34}" + "".join(
            f"{statistics.median(r[k] for r in runs):>11.2f}" for k in KEYS))
    if json_path:
        Path(json_path).write_text(json.dumps({"floor_s": fl, "cells": rows,
                                               "load": os.getloadavg()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
