"""Each item's expected wall time, from stored measurements, with where the figure came from.

A cell's cost is the wall time a stored cell took (its `wall_s_breakdown` total, or
`cell_wall_s` for runs stored before the breakdown): the same cell on this GPU kind first, then
the same workload, backend and mode at another shape or precision, then another GPU kind's,
then the CPU's figure scaled by the GPU/CPU wall ratio of the cells both have measured (the
first H200 run's compiled cells took about twice their CPU wall: start-up, CUDA context and
compile dominate, not the steps). To that comes the launch: the `lab run` process around the
cell, which a lease measures as its invocation's wall minus the cell's breakdown total; until a
lease of a GPU kind has, the first H200 wave's logs give the lab process's start before its
first cell (stored/step-walls.json).

A command item (the CUDA tests, one size of the kernel benchmark, the profile) costs what it
took in an earlier lease of this kind or another GPU kind, else what the same command took when
run by hand (step-walls.json), else, for a kernel size, its share of the whole benchmark's
recorded wall (its test cases x the wall per case) plus a launch. An item with no figure
anywhere gets the default budget, and the plan says that no measurement exists. A figure from
a run that was stopped before it finished is a floor: the item costs at least that. Every
estimate carries a margin, since a lease that runs out loses the item it was in.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from lab.campaign.plan import Item, Step
from lab.campaign.stored import RECORDED, Machine

MARGIN = 1.15  # each expected cost x this: the wall of one cell varies between runs
# the launch and the budget of an item for which no machine stores any figure: stated in the
# plan as no measurement, wherever used
LAUNCH_ALLOWANCE_S = 5.0
NO_FIGURE_S = 60.0  # the lab's default per-cell timeout budget


@dataclass(frozen=True)
class Cost:
    seconds: float  # with the margin
    source: str  # where the figure came from, printed beside it


def _median(values) -> float | None:
    values = [v for v in values if v]
    return statistics.median(values) if values else None


class Estimator:
    def __init__(self, target: Machine, machines: dict[str, Machine]):
        self.target = target
        self.gpu_kinds = [m for m in machines.values() if m.gpu and m.id != target.id]
        self.cpus = [m for m in machines.values() if not m.gpu]
        self.is_gpu = target.gpu is not None or target.id.startswith("nvidia")
        self.scale, self.scale_note = self._cpu_scale(machines)
        self.launch_s, self.launch_note = self._launch()

    def _same_class(self) -> list[Machine]:
        """The other machines whose figures stand for the target's: GPU kinds for a GPU,
        CPUs for a CPU (a rehearsal)."""
        return self.gpu_kinds if self.is_gpu else [m for m in self.cpus
                                                   if m.id != self.target.id]

    def _launch(self) -> tuple[float, str]:
        """The `lab run` process around one cell, and where the figure came from."""
        for machine in [self.target, *self._same_class()]:
            if _median(machine.launch_s):
                return _median(machine.launch_s), (
                    f"median of {len(machine.launch_s)} cell launch(es) in leases on "
                    f"{machine.id}: invocation wall minus the cell's wall_s_breakdown total")
        for machine in [self.target, *self._same_class()]:
            found = [e for e in machine.recorded.get("launch") or []
                     if isinstance(e.get("launch_s"), (int, float))]
            if found:
                return _median([e["launch_s"] for e in found]), (
                    f"median lab start before its first cell in {len(found)} run(s) on "
                    f"{machine.id}: {', '.join(e.get('log', '?') for e in found)} "
                    f"({machine.id}/{RECORDED})")
        return LAUNCH_ALLOWANCE_S, "no stored measurement: an allowance"

    def _cpu_scale(self, machines) -> tuple[float, str]:
        """GPU wall / CPU wall over the (workload, backend, mode) both have measured."""
        ratios = []
        for gpu in (m for m in machines.values() if m.gpu):
            for key, g in _by_key(gpu).items():
                cpu = _median([_by_key(c).get(key) for c in self.cpus])
                if cpu:
                    ratios.append(g / cpu)
        if not ratios:
            return 1.0, "x1 (no cell measured on both a GPU and a CPU)"
        return statistics.median(ratios), f"x{statistics.median(ratios):.2f} " \
            f"(median GPU/CPU wall of {len(ratios)} cells both measured)"

    def cell(self, item: Item) -> Cost:
        same = [c.wall_s for c in self.target.cells if c.name == item.name]
        if _median(same):
            return Cost(_median(same) * MARGIN, f"this cell on {self.target.id}")
        near = _by_key(self.target).get(item.key)
        if near:
            return Cost(near * MARGIN, f"{'/'.join(item.key)} on {self.target.id}, "
                                       "other shape or precision")
        if not self.is_gpu:  # a rehearsal: this CPU's own cells, or nothing stored yet
            mine = _median([c.wall_s for c in self.target.cells])
            if mine:
                return Cost(mine * MARGIN, f"median cell on {self.target.id}")
            return Cost(NO_FIGURE_S, "no stored figure: the default cell budget")
        for other in self.gpu_kinds:
            found = _median([c.wall_s for c in other.cells if c.name == item.name]) or \
                _by_key(other).get(item.key)
            if found:
                return Cost(found * MARGIN, f"{other.id} figure (none on {self.target.id})")
        cpu = _median([_by_key(c).get(item.key) for c in self.cpus])
        if cpu:
            return Cost(cpu * self.scale * MARGIN,
                        f"CPU figure scaled {self.scale_note.split(' ')[0]} (no GPU figure)")
        gpu_cells = _median([c.wall_s for m in [self.target, *self.gpu_kinds]
                             for c in m.cells])
        if gpu_cells:
            return Cost(gpu_cells * MARGIN, "no figure for this cell: median stored GPU cell")
        return Cost(NO_FIGURE_S, "no stored figure: the default cell budget")

    def _recorded(self, name: str) -> tuple[Machine, dict] | None:
        for machine in [self.target, *self._same_class()]:
            entry = (machine.recorded.get("steps") or {}).get(name)
            if isinstance(entry, dict) and isinstance(entry.get("wall_s"), (int, float)):
                return machine, entry
        return None

    def command(self, step: Step, item: Item) -> Cost:
        for machine in [self.target, *self._same_class()]:
            walls = machine.step_walls.get(item.name)
            if walls:
                return Cost(_median(walls) * MARGIN,
                            f"its wall in {len(walls)} earlier lease(s) on {machine.id}")
        found = self._recorded(item.name)
        if found:
            machine, entry = found
            where = f"{entry.get('log', '?')}: '{entry.get('line', '')}' " \
                    f"({machine.id}/{RECORDED})"
            if entry.get("finished") is False:
                return Cost(entry["wall_s"] * MARGIN, f"at least: stopped unfinished after "
                                                      f"{entry['wall_s']:.0f} s, {where}")
            return Cost(entry["wall_s"] * MARGIN, f"its wall, {where}")
        whole = self._recorded(item.per_case_of) if item.per_case_of else None
        if whole and item.cases and whole[1].get("cases"):
            machine, entry = whole
            per = entry["wall_s"] / entry["cases"]
            return Cost(item.cases * per * MARGIN + self.launch_s,
                        f"{item.cases} case(s) x {per:.2f} s, the wall per case of "
                        f"{item.per_case_of} ({entry['cases']} cases in {entry['wall_s']:.1f} "
                        f"s, {entry.get('log', '?')}, {machine.id}/{RECORDED}) + launch "
                        f"{self.launch_s:.0f} s")
        return Cost(NO_FIGURE_S, f"no measurement of it stored anywhere: the default "
                                 f"budget of {NO_FIGURE_S:.0f} s")

    def item(self, step: Step, item: Item) -> Cost:
        cost = self.cell(item) if item.cell else self.command(step, item)
        if item.cell:
            cost = Cost(cost.seconds + self.launch_s, cost.source)
        cut = self.target.cut_short.get(item.name)
        if cut and cut * MARGIN > cost.seconds:  # it ran this long and was not done: at least
            cost = Cost(cut * MARGIN, f"cut short after {cut:.0f} s in an earlier lease")
        if item.bound_s and cost.seconds > item.bound_s + self.launch_s:
            # the lab ends each of the cell's passes at its --timeout: it cannot take longer
            cost = Cost(item.bound_s + self.launch_s,
                        f"{cost.source}; at most {item.bound_s:.0f} s, its --timeout per pass")
        return cost


def _by_key(machine: Machine) -> dict[tuple, float]:
    """(workload, backend, mode) -> median wall of its stored cells on the machine."""
    walls: dict[tuple, list] = {}
    for c in machine.cells:
        if c.wall_s:
            walls.setdefault(c.key, []).append(c.wall_s)
    return {k: statistics.median(v) for k, v in walls.items()}
