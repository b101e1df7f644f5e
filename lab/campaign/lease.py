"""What one lease runs: the items still missing for the machine, in value order, that fit the
lease's time with their expected costs; each step's budget is the sum of its items' costs."""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.campaign.costs import Cost, Estimator
from lab.campaign.plan import Item, Step
from lab.campaign.stored import Machine

EVERY_LEASE = ("cuda-tests",)  # run each lease: the code under test changes between leases
H100_LEASE_S = 12 * 60  # 15 minutes of device time, less the machine's start
LATER_SHOWN = 20  # items left for a later lease that the plan lists one by one, per step


@dataclass
class StepPlan:
    step: Step
    covered: list[Item] = field(default_factory=list)  # stored already
    now: list[tuple[Item, Cost]] = field(default_factory=list)  # this lease
    later: list[tuple[Item, Cost]] = field(default_factory=list)  # a later lease
    cannot: list[tuple[Item, str]] = field(default_factory=list)  # not on this machine: why
    skipped: str = ""  # the whole step is not for this machine kind: why

    @property
    def budget_s(self) -> float:
        return sum(c.seconds for _, c in self.now)

    @property
    def planned(self) -> int:
        return len(self.step.items)


def gpu_count(machine_id: str) -> int:
    """The GPUs of a machine kind, from its id (`nvidia-h100-x1`: lab.store.provenance.machine_id
    ends a GPU machine's id with its GPU count); 0 for a CPU's."""
    head, sep, count = machine_id.rpartition("-x")
    return int(count) if sep and head and count.isdigit() else 0


def is_covered(step: Step, item: Item, machine: Machine, campaign_names: set[str]) -> bool:
    if step.name in EVERY_LEASE:
        return False
    if not item.cell:  # a command: done when a lease of this campaign finished it
        return item.name in (machine.state.get("done") or {})
    return item.name in machine.measured() or item.name in campaign_names


def plan_lease(steps: list[Step], machine: Machine, machines: dict[str, Machine],
               limit_s: float, campaign_names: set[str] = frozenset(),
               cannot: dict[str, str] | None = None,
               gpus: int | None = None) -> list[StepPlan]:
    """Value order: each missing item is taken for this lease when it fits in what is left of
    `limit_s`, else left for a later one (a smaller item after it may still fit). `cannot`:
    items this machine cannot run (a package missing), name -> why; they cost nothing. `gpus`:
    how many the machine has (None: read from its id); a step needing more is skipped."""
    estimate = Estimator(machine, machines)
    gpus = gpu_count(machine.id) if gpus is None else gpus
    left = limit_s
    out = []
    for step in steps:
        plan = StepPlan(step)
        if step.needs_gpus > gpus:
            plan.skipped = f"skipped: needs >= {step.needs_gpus} GPUs, {machine.id} has {gpus}"
        for item in step.items:
            if is_covered(step, item, machine, campaign_names):
                plan.covered.append(item)
                continue
            if plan.skipped:
                continue
            if item.name in (cannot or {}):
                plan.cannot.append((item, cannot[item.name]))
                continue
            cost = estimate.item(step, item)
            if cost.seconds <= left:
                plan.now.append((item, cost))
                left -= cost.seconds
            else:
                plan.later.append((item, cost))
        out.append(plan)
    return out


def describe(plans: list[StepPlan], machine: Machine, limit_s: float, estimate_note: str,
             missing_packages=lambda step: []) -> list[str]:
    """The plan as lines: coverage per step, its budget and where the figures came from, and
    what the next lease will run."""
    total = sum(p.budget_s for p in plans)
    kind = f"{machine.id} ({machine.gpu})" if machine.gpu else machine.id
    lines = [f"GPU kind {kind}: next lease {total / 60:.1f} min of {limit_s / 60:.1f} min "
             f"({estimate_note})"]
    for p in plans:
        gone = missing_packages(p.step)
        note = f"  [skipped here: {', '.join(gone)} not installed]" if gone else ""
        note = f"  [{p.skipped}]" if p.skipped else note
        lines.append(f"  {p.step.name:12s} measured {len(p.covered):3d}/{p.planned:<3d} "
                     f"next lease {len(p.now):3d} in {p.budget_s:6.0f} s, later "
                     f"{len(p.later):3d}{note}  ({p.step.what})")
        if p.cannot:
            lines.append(f"      not on this machine: {len(p.cannot)} cell(s), e.g. "
                         f"{p.cannot[0][0].name}: {p.cannot[0][1]}")
        for item, cost in p.now:
            lines.append(f"      {cost.seconds:6.0f} s  {item.name}  <- {cost.source}")
        # what a later lease will budget for the rest, with the same sources
        for item, cost in p.later[:LATER_SHOWN]:
            lines.append(f"      {cost.seconds:6.0f} s  (later) {item.name}  <- {cost.source}")
        if len(p.later) > LATER_SHOWN:
            rest = p.later[LATER_SHOWN:]
            lines.append(f"      {sum(c.seconds for _, c in rest):6.0f} s  (later) {len(rest)} "
                         f"more item(s)")
    return lines
