"""The counted steps, inside the cell process of a counts pass (CellPass.COUNTS).

The process runs under `valgrind --tool=callgrind --instr-atstart=no`: the import, the build
and the first call (a compile) run uninstrumented. Then a few warm-up steps, still
uninstrumented (allocator pools and lazy initialisation settle), and instrumentation goes on
around exactly `steps` completed steps of the candidate side; their counts are dumped as one
part file named after the side, which the lab process parses (lab.counts.tool).
"""

from __future__ import annotations

WARMUP_STEPS = 3
DUMP_NAME = "candidate"


def count_steps(side, steps: int, client=None) -> dict:
    """Count `steps` steps of `side` (a lab.cell.measure.Side); returns what the parent needs to
    find and scale the dump. `client`: lab.counts.client.Client (built here when None)."""
    from lab.counts.client import Client

    client = client or Client()
    for _ in range(WARMUP_STEPS):
        side.sync(side.step())
    client.start()  # flushes Valgrind's translations: costly once, never counted
    side.sync(side.step())  # one step instrumented but not counted: callgrind's own warm-up
    client.zero()
    for _ in range(steps):
        out = side.step()
        side.sync(out)
    client.dump(DUMP_NAME)
    client.stop()
    return {"steps": steps, "dump": DUMP_NAME, "on_valgrind": client.running_on_valgrind}
