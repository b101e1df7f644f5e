"""How steady are counts, and what do they see? (docs/counts.md)

    python bench/counts_calibrate.py steadiness --workload mlp,transformer --out s.json
    python bench/counts_calibrate.py steadiness --workload mlp,transformer --load-core ...
    python bench/counts_calibrate.py changes --processes 3 --out c.json
    valgrind --tool=none python bench/counts_calibrate.py steps --steps 2

`steadiness`: P counts passes of one cell (lab.profiling.counts_pass.count_cell,
single-threaded under callgrind) and P timed cell processes of the same cell at one thread (each
process's median step time), so both spreads are measured the same way: across processes.
`--load-core` keeps one core busy with a spinning process for the whole measurement (a second
job on the machine).

`changes`: real code changes, not edited numbers. The `blocks` workload below is a stack of
identical Linear(64, 64) + ReLU blocks, 100 by default; the candidates run 101, 102 and 105
blocks (1%, 2% and 5% more identical work; the fixed per-step overhead makes the measured change
a little smaller, and the output prints what was measured). Also the seed's MLP against the same
MLP with one extra Linear(10, 10). Each variant is counted in P processes; every (baseline,
candidate) pair of processes is one gate decision on counts (lab.counts.gate.decision, default
threshold): A/A pairs give the false alarms, A/B pairs the detections.

This file is also a user workload: `--workload bench/counts_calibrate.py:make_blocks` with
LAB_COUNTS_BLOCKS=<n>, and `:make_mlp` with LAB_COUNTS_EXTRA=<n> extra Linear(10, 10) layers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BLOCKS_ENV, EXTRA_ENV = "LAB_COUNTS_BLOCKS", "LAB_COUNTS_EXTRA"
DEFAULT_BLOCKS = 100
HERE = Path(__file__).resolve()


def make_blocks():
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    layers = []
    for _ in range(int(os.environ.get(BLOCKS_ENV, DEFAULT_BLOCKS))):
        layers += [nn.Linear(64, 64), nn.ReLU()]
    return nn.Sequential(*layers), torch.randn(32, 64)


def make_mlp():
    """The seed's MLP (784-128-10), with LAB_COUNTS_EXTRA extra Linear(10, 10) after it."""
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    layers = [nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)]
    layers += [nn.Linear(10, 10) for _ in range(int(os.environ.get(EXTRA_ENV, "0")))]
    return nn.Sequential(*layers), torch.randn(32, 784)


def _spec(workload: str, repeats: int = 30):
    from lab.running import loop as session

    cells, _ = session.plan(session.Selection(workloads=[workload], backends=["torch-eager"],
                                              modes=["infer"], device="cpu", threads=1,
                                              repeats=repeats))
    return cells[0].spec


def _wall_median(spec, env: dict, timeout_s: float) -> float:
    from lab.cell.launch import run_cell_process

    result, _ = run_cell_process(spec, timeout_s, env_extra=env)
    if not result.ok:
        raise SystemExit(f"timed process failed: {result.status}: {result.reason}")
    return statistics.median(result.samples_s)


def _spread(values: list[float]) -> dict:
    logs = [math.log(v) for v in values]
    return {"values": values, "max_over_min_minus_1": max(values) / min(values) - 1,
            "sd_log": statistics.stdev(logs) if len(logs) > 1 else None}


class _Spinner:
    """One core kept busy by a spinning process: a second job on the machine."""

    def __init__(self, on: bool):
        self.on, self.proc = on, None

    def __enter__(self):
        if self.on:
            self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        return self

    def __exit__(self, *exc):
        if self.proc:
            self.proc.kill()
            self.proc.wait()


def _count_many(spec, env: dict, n: int, jobs: int, timeout_s: float,
                cycles: bool = False) -> list[dict]:
    os.environ.update(env)
    from lab.profiling.counts_pass import count_cell

    with ThreadPoolExecutor(jobs) as pool:
        entries = list(pool.map(lambda _: count_cell(spec, timeout_s, cycles=cycles), range(n)))
    bad = [e for e in entries if e["status"] != "ok"]
    if bad:
        raise SystemExit(f"counts pass failed: {bad[0]['reason']}")
    return entries


def _steady_one(workload: str, args) -> dict:
    spec = _spec(workload)
    load1, t0 = os.getloadavg()[0], time.time()
    entries = _count_many(spec, {}, args.processes, args.jobs, args.timeout, args.cycles)
    walls = [_wall_median(spec, {}, args.timeout) for _ in range(args.processes)]
    cycles = [e["cycles_per_step"] for e in entries]
    return {"workload": workload, "shape": spec.shape, "load_core": args.load_core,
            "load_avg_1m_at_start": load1, "load_avg_1m_at_end": os.getloadavg()[0],
            "seconds": round(time.time() - t0), "steps": entries[0]["steps"],
            "ir_per_step": _spread([e["ir_per_step"] for e in entries]),
            "cycles_per_step": None if None in cycles else _spread(cycles),
            "ir_step_spread_max": max(e["ir_step_spread"] for e in entries),
            "wall_median_s": _spread(walls),
            "counts_wall_s": [e["wall_s"] for e in entries],
            "counts_phases_s": [e["phases_s"] for e in entries]}


def steadiness(args) -> dict:
    """Each workload in turn (comma-separated), under one spinner when --load-core."""
    with _Spinner(args.load_core):
        rows = [_steady_one(w, args) for w in args.workload.split(",")]
    return rows[0] if len(rows) == 1 else {"rows": rows}


def changes(args) -> dict:
    from lab.counts import gate

    blocks = f"{HERE}:make_blocks"
    mlp = f"{HERE}:make_mlp"
    variants = {"blocks": (blocks, {BLOCKS_ENV: "100"}),
                "blocks+1%": (blocks, {BLOCKS_ENV: "101"}),
                "blocks+2%": (blocks, {BLOCKS_ENV: "102"}),
                "blocks+5%": (blocks, {BLOCKS_ENV: "105"}),
                "mlp": (mlp, {EXTRA_ENV: "0"}), "mlp+Linear(10,10)": (mlp, {EXTRA_ENV: "1"})}
    t0, load1 = time.time(), os.getloadavg()[0]
    counted = {}
    for name, (workload, env) in variants.items():
        os.environ.update(env)
        spec = _spec(workload)
        counted[name] = [e["ir_per_step"] for e in
                         _count_many(spec, env, args.processes, args.jobs, args.timeout)]
        print(f"{name}: {counted[name]}", file=sys.stderr, flush=True)

    def pairs(base: str, cand: str) -> dict:
        if base == cand:
            drawn = list(itertools.permutations(counted[base], 2))
        else:
            drawn = list(itertools.product(counted[base], counted[cand]))
        verdicts = [gate.decision(c / b) for b, c in drawn]
        return {"pairs": len(drawn), "regressed": verdicts.count("regressed"),
                "improved": verdicts.count("improved"),
                "ratio_mean": statistics.fmean(c / b for b, c in drawn)}

    table = {"blocks A/A": pairs("blocks", "blocks"), "mlp A/A": pairs("mlp", "mlp")}
    for name in ("blocks+1%", "blocks+2%", "blocks+5%"):
        table[name] = pairs("blocks", name)
    table["mlp+Linear(10,10)"] = pairs("mlp", "mlp+Linear(10,10)")
    return {"processes": args.processes, "threshold": gate.COUNTS_THRESHOLD,
            "load_avg_1m_at_start": load1, "load_avg_1m_at_end": os.getloadavg()[0],
            "seconds": round(time.time() - t0), "ir_per_step": counted, "gate": table}


def steps(args) -> int:
    """Time a few steps of the transformer block in this process, one line each: run it under
    `valgrind --tool=none` with and without lab.profiling.counts_pass.ISA_ENV to see what the
    host's AVX2 kernels cost under Valgrind (docs/counts.md, "Cost")."""
    t0 = time.perf_counter()
    import torch

    from lab.workloads.transformer import build_torch

    torch.set_num_threads(1)
    task = build_torch(_spec("transformer").shape, "infer", "cpu", "float32", 0)
    model, x = task.model.eval(), task.inputs[0]
    print(f"import and build {time.perf_counter() - t0:.2f} s", flush=True)
    with torch.inference_mode():
        for k in range(args.steps):
            t = time.perf_counter()
            model(x)
            print(f"step {k} {time.perf_counter() - t:.3f} s", flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("steps", help="time steps of the transformer block (under valgrind)")
    p.add_argument("--steps", type=int, default=2)
    for name in ("steadiness", "changes"):
        p = sub.add_parser(name)
        p.add_argument("--processes", type=int, default=3)
        p.add_argument("--jobs", type=int, default=1, help="counts passes at once")
        p.add_argument("--cycles", action="store_true",
                       help="also estimated cycles (callgrind's cache simulation, slower)")
        p.add_argument("--timeout", type=float, default=1800.0)
        p.add_argument("--out", required=True)
        if name == "steadiness":
            p.add_argument("--workload", default="mlp", help="comma-separated: in turn")
            p.add_argument("--load-core", dest="load_core", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "steps":
        return steps(args)
    out = (steadiness if args.command == "steadiness" else changes)(args)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
