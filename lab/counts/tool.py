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


def command(exe: str, out_dir: Path, cache_sim: bool = False) -> list[str]:
    """The wrapper of the cell process. --instr-atstart=no: nothing is instrumented until the
    cell asks (the import and any compile run at Valgrind's uninstrumented speed, and are never
    counted). --cache-sim=yes only when cycles are wanted: it gives the misses the cycle
    estimate needs, and made the transformer block's counted steps 2-5x slower
    (docs/counts.md, "Cost"); instructions alone do not need it."""
    return [exe, "--tool=callgrind", "--instr-atstart=no",
            f"--cache-sim={'yes' if cache_sim else 'no'}",
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


def find_dumps(out_dir: Path, names: list[str]) -> list[dict[str, int]]:
    """The events of the part files dumped as `names`, in that order; CountsError if one is
    missing."""
    found = {}
    for path in sorted(Path(out_dir).glob(f"{OUT_PREFIX}.*")):
        name, events = parse_part(path.read_text(errors="replace"))
        if name is not None:
            found[name] = events
    missing = [n for n in names if n not in found]
    if missing:
        raise CountsError(f"callgrind wrote no dump named {missing[0]!r} (was the cell run "
                          f"under valgrind --tool=callgrind?)")
    return [found[n] for n in names]


def find_dump(out_dir: Path, name: str) -> dict[str, int]:
    """The events of the part file dumped as `name`; CountsError if there is none."""
    return find_dumps(out_dir, [name])[0]


def _cycles(events: dict[str, int]) -> int | None:
    if not all(k in events for k in L1_MISSES + LL_MISSES):
        return None
    return (events["Ir"] + L1_MISS_CYCLES * sum(events[k] for k in L1_MISSES)
            + LL_MISS_CYCLES * sum(events[k] for k in LL_MISSES))


def spread(values: list[float]) -> float | None:
    """max / min - 1 of per-step counts: 0 when every counted step did the same work."""
    return max(values) / min(values) - 1 if values and min(values) > 0 else None


def steps_counts(steps: list[dict[str, int]]) -> dict:
    """Counts per step from one dump per counted step: their mean, and each step's
    instructions and cycle estimate with their spread (how steady the steps were)."""
    total = {k: sum(s.get(k, 0) for s in steps) for k in steps[0]}
    out = per_step(total, len(steps))
    ir = [s.get("Ir", 0) for s in steps]
    cycles = [_cycles(s) for s in steps]
    out.update(ir_steps=ir, ir_step_spread=spread(ir))
    if None not in cycles:
        out.update(cycles_steps=cycles, cycles_step_spread=spread(cycles))
    return out


def per_step(events: dict[str, int], steps: int) -> dict:
    """Counts per step: every event, instructions (Ir) and the cycle estimate (None without
    the cache simulation's misses)."""
    each = {k: v / steps for k, v in events.items()}
    cycles = _cycles(events)
    return {"ir_per_step": each.get("Ir"),
            "cycles_per_step": None if cycles is None else cycles / steps,
            "events_per_step": {k: round(v, 3) for k, v in each.items()}}
