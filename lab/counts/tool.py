"""Valgrind's side, in the lab process: the command a counts pass runs under, and the part
file callgrind dumps for the counted steps, parsed into counts per step.

Estimated cycles follow KCachegrind's and cachegrind's documented estimate from callgrind's
cache simulation (--cache-sim=yes): Ir + 10 x L1 misses + 100 x last-level misses. The
simulated caches take the host's sizes, so cycles compare runs of one machine, as the gate's
machine check already demands; instructions (Ir) compare anywhere the same binaries run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

L1_MISS_CYCLES = 10
LL_MISS_CYCLES = 100
L1_MISSES = ("I1mr", "D1mr", "D1mw")
LL_MISSES = ("ILmr", "DLmr", "DLmw")
CYCLE_FORMULA = (f"Ir + {L1_MISS_CYCLES} x ({' + '.join(L1_MISSES)}) + {LL_MISS_CYCLES} x "
                 f"({' + '.join(LL_MISSES)})")
OUT_PREFIX = "callgrind.out"


class CountsError(RuntimeError):
    """A counts pass that gave no counts (one line says why)."""


VALGRIND_VAR = "LAB_VALGRIND"  # another valgrind than the PATH's (a build of its own)


def valgrind() -> str | None:
    return shutil.which(os.environ.get(VALGRIND_VAR) or "valgrind")


def version(exe: str) -> str:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip()  # "valgrind-3.19.0"


def command(exe: str, out_dir: Path) -> list[str]:
    """The wrapper of the cell process. --instr-atstart=no: nothing is instrumented until the
    cell asks (the import and any compile run at Valgrind's uninstrumented speed, and are never
    counted); --cache-sim=yes: the misses the cycle estimate needs."""
    return [exe, "--tool=callgrind", "--instr-atstart=no", "--cache-sim=yes",
            f"--callgrind-out-file={out_dir / OUT_PREFIX}.%p"]


_TRIGGER = re.compile(r"^desc: Trigger: Client Request: (\S+)\s*$", re.M)


def parse_part(text: str) -> tuple[str | None, dict[str, int]]:
    """(the dump's name, its events' totals) of one callgrind part file."""
    name = _TRIGGER.search(text)
    events = re.search(r"^events: (.+)$", text, re.M)
    totals = re.search(r"^(?:summary|totals): (.+)$", text, re.M)
    if not events or not totals:
        raise CountsError("a callgrind output file without events or totals")
    values = [int(v) for v in totals.group(1).split()]
    names = events.group(1).split()
    return (name.group(1) if name else None,
            dict(zip(names, values + [0] * (len(names) - len(values)), strict=True)))


def find_dump(out_dir: Path, name: str) -> dict[str, int]:
    """The events of the part file dumped as `name`; CountsError if there is none."""
    for path in sorted(Path(out_dir).glob(f"{OUT_PREFIX}.*")):
        found, events = parse_part(path.read_text(errors="replace"))
        if found == name:
            return events
    raise CountsError(f"callgrind wrote no dump named {name!r} (was the cell run under "
                      f"valgrind --tool=callgrind?)")


def per_step(events: dict[str, int], steps: int) -> dict:
    """Counts per step: every event, instructions (Ir) and the cycle estimate."""
    each = {k: v / steps for k, v in events.items()}
    cycles = None
    if all(k in events for k in L1_MISSES + LL_MISSES):
        cycles = (events["Ir"] + L1_MISS_CYCLES * sum(events[k] for k in L1_MISSES)
                  + LL_MISS_CYCLES * sum(events[k] for k in LL_MISSES)) / steps
    return {"ir_per_step": each.get("Ir"), "cycles_per_step": cycles,
            "events_per_step": {k: round(v, 3) for k, v in each.items()}}
