"""What a selection can run, decided when it is made: before any cell process starts or any
folder is written (session.plan calls these; every refusal is one UsageError line).

- shape keys apply to the workloads that have them; a key no selected workload has is refused;
- each workload's shape constraints (divisibility, context length) are its own
  (`Workload.shape_problem`);
- a cell that could only be skipped is marked so with its reason, and a selection in which every
  cell would be skipped is refused with those reasons;
- each cell's memory (lab.workloads.footprint) against what this machine has: refused above it
  unless `--allow-large`, a warning from half of it, with how long a step may take where a
  stored timing of the same cell on this machine can be scaled by flops.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from lab import compile as backends
from lab import workloads
from lab.compile import BackendChoice
from lab.core.errors import UsageError
from lab.store import provenance
from lab.store import reader as results
from lab.workloads import footprint

# the estimate is rough (a factor of about two, lab.workloads.footprint): from this share of
# the memory available a cell may not fit, and the user is told before it runs
WARN_SHARE = 0.5
GIB = footprint.GIB


def shapes(loaded: list, device: str, named: dict, explicit: dict) -> dict[str, dict]:
    """Each workload's shape: its default on `device` with the keys it has of --batch/--seq/
    --image-size (`named`) and --shape (`explicit`); a key that no selected workload has is
    refused, and every shape is checked against its workload's constraints."""
    for key in {**named, **explicit}:
        if any(key in w.shape_for(device) for w in loaded):
            continue
        flag = f"--{key.replace('_', '-')}" if key in named else f"--shape {key}"
        if key in explicit and len(loaded) == 1:  # the workload's own message lists its keys
            try:
                loaded[0].shape_for(device, {key: explicit[key]})
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        raise UsageError(f"{flag}: none of the workloads ({', '.join(w.name for w in loaded)}) "
                         f"has a {key} parameter")
    out = {}
    for workload in loaded:
        known = workload.shape_for(device)
        asked = {k: v for k, v in {**named, **explicit}.items() if k in known}
        shape = workload.shape_for(device, asked)
        problem = workload.shape_problem(shape)
        if problem:
            raise UsageError(f"workload {workload.name}: {problem}")
        out[workload.name] = shape
    return out


def skip_reason(workload: workloads.Workload, choice: BackendChoice, mode: str,
                precision: str, here: bool) -> str | None:
    """Why a cell cannot run, known before any process starts; None when it can. `here`: the
    cell runs on this machine, so a package missing here skips it."""
    from lab.core import precision as precisions

    info = choice.info
    framework = info.framework.value
    if framework not in workload.frameworks:
        return f"workload {workload.name} has no {framework} version"
    if mode not in workload.modes:
        having = [w for w in workloads.names() if mode in workloads.get(w).modes]
        return (f"workload {workload.name} has no {mode} mode"
                + (f" ({mode}: {', '.join(having)})" if having else ""))
    if mode == workloads.GENERATE_MODE and not info.generates:
        return f"backend {info.name} has no {mode} mode"
    if info.inference_only and mode != "infer":
        return f"backend {info.name} is an inference runtime: infer mode only"
    if info.inference_only and precisions.policy(precision).autocast:
        return (f"{precision}: inference runtimes run the converted model in its stored dtype, "
                f"not under autocast")
    if here:
        missing = backends.missing_packages(info)
        if missing:
            return f"{' and '.join(missing)} not installed"
    return None


def refuse_if_nothing_runs(cells: list) -> None:
    """A selection where every cell would be skipped measures nothing: refused, with the
    reasons the cells would have been skipped with (each once)."""
    if not cells or any(c.skip_reason is None for c in cells):
        return
    reasons: dict[str, list[str]] = {}
    for c in cells:
        reasons.setdefault(c.skip_reason, []).append(
            f"{c.spec.workload} {c.spec.mode} {c.choice.label}")
    said = "; ".join(f"{reason} ({names[0]}" + (f" and {len(names) - 1} more" if len(names) > 1
                                               else "") + ")"
                     for reason, names in reasons.items())
    raise UsageError(f"no cell of this selection can run: {said}")


# ---------------------------------------------------------------- memory


def _cgroup_room() -> float | None:
    """Bytes the process's memory cgroup still allows (v2 memory.max, v1 limit_in_bytes)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    room = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: the limits of this group and every group above it
            base, files = Path("/sys/fs/cgroup"), ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            base, files = Path("/sys/fs/cgroup/memory"), ("memory.limit_in_bytes",
                                                          "memory.usage_in_bytes")
        else:
            continue
        parts = Path(path).parts
        for depth in range(len(parts), 0, -1):
            folder = base.joinpath(*parts[1:depth]) if depth > 1 else base
            try:
                limit = (folder / files[0]).read_text().strip()
                used = float((folder / files[1]).read_text().strip())
            except (OSError, ValueError):
                continue
            if limit.isdigit() and int(limit) < 2**60:  # "max" / a huge number: no limit
                free = int(limit) - used
                room = free if room is None else min(room, free)
    return room


def available_memory(device: str) -> tuple[float, str] | None:
    """(bytes a new cell may use, what they are) on `device`, or None where unknown."""
    if device == "cuda":
        if importlib.util.find_spec("torch") is None:
            return None
        import torch

        if not torch.cuda.is_available():
            return None
        free, _total = torch.cuda.mem_get_info()
        return float(free), f"free on {torch.cuda.get_device_name()}"
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in meminfo.splitlines() if ":" in line)
    if "MemAvailable" not in fields:
        return None
    available = float(fields["MemAvailable"].split()[0]) * 1024
    room = _cgroup_room()
    if room is not None and room < available:
        return max(room, 0.0), "available under this process's memory limit"
    return available, "available"


def _step_time(cell, root: str | Path | None) -> str:
    """How long a step of `cell` may take here, scaled by flops from the most similar stored
    cell (same workload, backend, mode, device, precision) of this machine; or that the lab
    cannot tell."""
    cannot = "no stored timing of this cell on this machine to say how long it takes"
    flops = cell.workload.flops(cell.spec.shape, cell.spec.mode)
    if root is None or not flops == flops or flops <= 0:
        return cannot
    best = None
    for path in sorted((Path(root) / provenance.machine_id()).glob(f"*/{results.RESULTS}")):
        try:
            doc = results.load(path)
        except results.StoreError:
            continue
        for c in results.cells(doc):
            stored_flops = c.get("flops_per_step")
            if (c.get("workload"), c.get("backend"), c.get("mode"), c.get("device"),
                    c.get("precision")) == (cell.spec.workload, cell.choice.label,
                                            cell.spec.mode, cell.spec.device,
                                            cell.spec.precision) \
                    and c.get("median_s") and stored_flops and stored_flops > 0:
                if best is None or stored_flops > best[0]:  # the largest scales least far
                    best = (stored_flops, c["median_s"], path.parent.name)
    if best is None:
        return cannot
    step = best[1] * flops / best[0]
    steps = cell.spec.repeats * (2 if cell.choice.info.compiles else 1)  # both sides sampled
    return (f"a step may take ~{step:.3g} s here (run {best[2]}'s {best[1]:.3g} s scaled by "
            f"flops), so {steps} timed steps at least {steps * step / 60:.1f} min")


def check_memory(cells: list, device: str, allow_large: bool, root: str | Path | None,
                 tell: bool = False, warn=None) -> None:
    """Refuse the selection when a cell's estimated memory exceeds what this machine has
    (unless `allow_large`); warn when it needs more than WARN_SHARE of it, or for every cell
    when `tell` (--full-size on the CPU: real model sizes on a machine sized for small ones)."""
    warn = warn or (lambda line: print(f"lab: warning: {line}", file=sys.stderr, flush=True))
    sized = []
    for cell in cells:
        if cell.skip_reason:
            continue
        est = footprint.estimate(cell.workload, cell.spec.shape, cell.spec.mode,
                                 cell.spec.precision, 2 if cell.choice.info.compiles else 1)
        if est is not None:
            sized.append((est.total_bytes, est, cell))
    if not sized:
        return
    have = available_memory(device)
    if have is None:
        return
    room, what = have
    over = sorted([s for s in sized if s[0] > room], key=lambda s: -s[0])
    # --full-size tells of the cells it made larger (the mlp has one size: nothing to tell)
    told = [s for s in sized if tell and s[2].spec.shape != s[2].workload.default_shape("cpu")]
    close = [s for s in sized if s[0] <= room and (s in told or s[0] > WARN_SHARE * room)]

    def say(size, est, cell) -> str:
        return (f"{cell.spec.workload} {cell.spec.mode} {cell.choice.label} "
                f"({workloads.shape_label(cell.spec.shape)}, {cell.spec.precision}) needs about "
                f"{size / GIB:.1f} GiB ({est.describe()}; lab.workloads.footprint) of "
                f"{room / GIB:.1f} GiB {what}; {_step_time(cell, root)}")

    if over and not allow_large:
        more = f" (and {len(over) - 1} more cells over it)" if len(over) > 1 else ""
        raise UsageError(say(*over[0]) + more + "; --allow-large runs it anyway")
    for size, est, cell in over + close:
        warn(say(size, est, cell))
