"""Calibrate `lab gate`: its false-alarm rate on A/A pairs and its detection rate for real
5% and 10% slowdowns, on this machine, at the lab's default repeats.

    python bench/calibrate_gate.py collect --rounds 40 --out gate-calibration.json
    python bench/calibrate_gate.py analyze gate-calibration.json --processes 1 3 5 10

`collect` runs one cell process per variant per round, round-robin (A, A+5%, A+10%, mlp, A,
...), so slow drift of the machine hits every variant alike, and keeps each process's median
step time. The slowdowns are real work, not edited numbers: the `blocks` workload below is a
stack of identical Linear+ReLU blocks (20 by default), and the candidates do 21 and 22 blocks
(5% and 10% more identical work; the fixed per-step overhead makes the measured slowdown a
little smaller, and `analyze` prints what was measured).

`analyze` draws many gate comparisons from the pool: for each, N baseline processes and N
candidate processes chosen at random without overlap, compared with the gate's own statistic
(`lab.judge.gate.gate_statistic`) and decision rule (`lab.judge.gate.gate_decision`). The
false-alarm rate is the share of A/A draws that say `regressed`; the detection rate the share
of A/B draws that do.

This file is also a user workload: `--workload bench/calibrate_gate.py:make_model`, with
LAB_GATE_BLOCKS=<n> in the environment choosing the number of blocks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

BLOCKS_ENV = "LAB_GATE_BLOCKS"
DEFAULT_BLOCKS = 20
WIDTH = 256  # a 32x256 @ 256x256 matmul: ~40 us on one core, long enough to dominate dispatch
WORKLOAD = f"{Path(__file__).resolve()}:make_model"


def make_model():
    """A stack of identical blocks; LAB_GATE_BLOCKS sets how many (the injected slowdown)."""
    import torch
    import torch.nn as nn

    blocks = int(os.environ.get(BLOCKS_ENV, DEFAULT_BLOCKS))
    torch.manual_seed(0)
    layers = []
    for _ in range(blocks):
        layers += [nn.Linear(WIDTH, WIDTH), nn.ReLU()]
    return nn.Sequential(*layers), torch.randn(32, WIDTH)


# ---------------------------------------------------------------- collect

def _variants() -> dict[str, tuple[str, dict]]:
    """name -> (workload, extra environment)."""
    return {
        "blocks": (WORKLOAD, {BLOCKS_ENV: str(DEFAULT_BLOCKS)}),
        "blocks+5%": (WORKLOAD, {BLOCKS_ENV: str(DEFAULT_BLOCKS + DEFAULT_BLOCKS // 20)}),
        "blocks+10%": (WORKLOAD, {BLOCKS_ENV: str(DEFAULT_BLOCKS + DEFAULT_BLOCKS // 10)}),
        "mlp": ("mlp", {}),
    }


def _spec(workload_name: str, repeats: int, threads: int):
    from lab import workloads
    from lab.cell.spec import CellSpec

    workload = workloads.get(workload_name)
    return CellSpec(workload=workload.name, backend="torch-eager", option=None, mode="infer",
                    shape=workload.shape_for("cpu"), precision="fp32", device="cpu",
                    threads=threads, repeats=repeats)


def collect(args) -> int:
    import numpy as np

    from lab.cell import launch as runner
    from lab.running.loop import DEFAULT_REPEATS, default_threads

    threads = args.threads or default_threads()
    repeats = args.repeats or DEFAULT_REPEATS
    variants = _variants()
    pool: dict[str, list[float]] = {name: [] for name in variants}
    t0 = time.perf_counter()
    for round_index in range(args.rounds):
        for name, (workload_name, env) in variants.items():
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                result, _wall = runner.run_cell_process(_spec(workload_name, repeats, threads),
                                                        600)
            finally:
                for k, v in saved.items():
                    os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
            if result.status != "ok":
                print(f"{name}: {result.status}: {result.reason}", file=sys.stderr)
                return 1
            pool[name].append(float(np.median(result.samples_s)))
        print(f"round {round_index + 1}/{args.rounds}: "
              + ", ".join(f"{n} {pool[n][-1] * 1e6:.0f} us" for n in pool), flush=True)
        # rewritten every round: an interrupted collection keeps its finished rounds
        doc = {"repeats": repeats, "threads": threads, "rounds": round_index + 1,
               "wall_s": round(time.perf_counter() - t0, 1), "process_medians_s": pool}
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"stored {args.out} ({doc['wall_s']} s)")
    return 0


# ---------------------------------------------------------------- analyze

def draw_rates(baseline: list[float], candidate: list[float] | float | None, processes: int,
               threshold: float, draws: int, floor: float | None = None, seed: int = 0) -> dict:
    """Share of gate verdicts over random draws of `processes` processes per side.

    candidate None means A/A: both sides are drawn, without overlap, from `baseline`; a number
    scales the candidate side of such a draw (a simulated slowdown).
    """
    import numpy as np

    from lab.judge.gate import gate_decision, gate_statistic

    rng = np.random.default_rng(seed)
    base = np.asarray(baseline)
    counts: dict[str, int] = {}
    for _ in range(draws):
        if candidate is None or isinstance(candidate, float):
            picked = rng.choice(base.size, size=2 * processes, replace=False)
            a, b = base[picked[:processes]], base[picked[processes:]] * (candidate or 1.0)
        else:
            a = base[rng.choice(base.size, size=processes, replace=False)]
            cand = np.asarray(candidate)
            b = cand[rng.choice(cand.size, size=processes, replace=False)]
        verdict = gate_decision(gate_statistic(a, b, floor), threshold)
        counts[verdict] = counts.get(verdict, 0) + 1
    return {k: v / draws for k, v in sorted(counts.items())}


def analyze(args) -> int:
    import numpy as np

    from lab.core import stats

    docs = [json.loads(Path(p).read_text()) for p in args.pool]
    if len({(d["repeats"], d["threads"]) for d in docs}) > 1:
        print("pools differ in repeats or threads; analyze them apart", file=sys.stderr)
        return 2
    pool = {name: [m for d in docs for m in d["process_medians_s"][name]]
            for name in docs[0]["process_medians_s"]}
    rounds = sum(d["rounds"] for d in docs)
    print(f"pool: {rounds} rounds, repeats {docs[0]['repeats']}, threads {docs[0]['threads']}")
    for name, medians in pool.items():
        logs = np.log(medians)
        print(f"  {name:11s} median {np.median(medians) * 1e6:8.1f} us, min-max "
              f"{min(medians) * 1e6:.1f}-{max(medians) * 1e6:.1f} us, "
              f"between-process sd(log) {logs.std(ddof=1):.3f}")
    base = pool["blocks"]
    for name in ("blocks+5%", "blocks+10%"):
        true = float(np.median(pool[name]) / np.median(base))
        print(f"  measured slowdown {name}: {true:.3f}x (ratio of pool medians)")
    floor = stats.RUN_TO_RUN_SD_LOG if args.floor is None else args.floor
    print(f"noise floor sd(log) used: {floor}")
    for processes in args.processes:
        print(f"processes per side {processes}, threshold {args.threshold:.0%}, "
              f"{args.draws} draws:")
        # mlp x1.05 / x1.10: a simulation, the candidate's process medians multiplied (drawn
        # without overlap from the same pool); the blocks rows are real extra work
        rows = [("A/A mlp", pool["mlp"], None), ("A/A blocks", base, None),
                ("mlp x1.05", pool["mlp"], 1.05), ("mlp x1.10", pool["mlp"], 1.10),
                ("blocks +5%", base, pool["blocks+5%"]), ("blocks +10%", base, pool["blocks+10%"])]
        for label, a, b in rows:
            if 2 * processes > len(a) or (isinstance(b, list) and processes > len(b)):
                print(f"  {label}: pool too small for {processes} processes per side")
                continue
            rates = draw_rates(a, b, processes, args.threshold, args.draws, floor)
            shown = ", ".join(f"{k} {v:.1%}" for k, v in rates.items())
            print(f"  {label:12s} {shown}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("collect", help="run processes round-robin and keep their medians")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--repeats", type=int, help="samples per process (default: lab's default)")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", default="gate-calibration.json")
    p.set_defaults(func=collect)
    p = sub.add_parser("analyze", help="false-alarm and detection rates from a pool")
    p.add_argument("pool", nargs="+", help="one or more files written by collect")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 3, 5, 10, 20])
    p.add_argument("--threshold", type=float, default=0.05)
    p.add_argument("--draws", type=int, default=2000)
    p.add_argument("--floor", type=float, help="noise floor to try (default: the lab's)")
    p.set_defaults(func=analyze)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
