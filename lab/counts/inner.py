"""The counted steps, inside the cell process of a counts pass (CellPass.COUNTS).

The process runs under `valgrind --tool=callgrind --instr-atstart=no`: the import, the build
and the first call (a compile) run uninstrumented. Then a few warm-up steps, still
uninstrumented (allocator pools and lazy initialisation settle), and instrumentation goes on
around exactly `steps` completed steps of the candidate side. Each counted step is dumped as a
part file of its own (`candidate-1`, `candidate-2`, ...), which the lab process parses
(lab.counts.tool): their sum is the count, their spread shows the steps were steady.
"""

from __future__ import annotations

import time

# Uninstrumented steps before counting. The first call (done before this, a compile for a
# compiler) creates the oneDNN primitives and the allocator's pools; after one more step the
# counted steps of the seed's MLP and transformer block differ by at most 0.1% and 0.001%, in
# no order (no warm-up fading), and repeat exactly from process to process (docs/counts.md,
# "Per step"). Each costs Valgrind's uninstrumented speed (~5-10x native).
WARMUP_STEPS = 1
DUMP_NAME = "candidate"


def dump_names(steps: int) -> list[str]:
    return [f"{DUMP_NAME}-{k}" for k in range(1, steps + 1)]


def count_steps(side, steps: int, client=None) -> dict:
    """Count `steps` steps of `side` (a lab.cell.measure.Side), one dump each; returns what the
    parent needs to find the dumps, and where the pass's time went (seconds by phase).
    `client`: lab.counts.client.Client (built here when None)."""
    from lab.counts.client import Client

    client = client or Client()
    seconds, t0 = {}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        seconds[name], t0 = round(now - t0, 3), now

    for _ in range(WARMUP_STEPS):
        side.sync(side.step())
    lap("warmup")
    client.start()  # flushes Valgrind's translations: costly once, never counted
    side.sync(side.step())  # one step instrumented but not counted: callgrind's own warm-up
    lap("instrumented_warmup")
    names = dump_names(steps)
    client.zero()
    for name in names:
        side.sync(side.step())
        client.dump(name)  # writes the step's counts and zeroes them: the next step's start
    client.stop()
    lap("counted")
    return {"steps": steps, "dump": DUMP_NAME, "dumps": names,
            "on_valgrind": client.running_on_valgrind, "seconds": seconds}
