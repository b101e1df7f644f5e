"""Each item's expected wall time, from stored measurements, with where the figure came from.

A cell's cost is the wall time a stored cell took (its `wall_s_breakdown` total, or
`cell_wall_s` for runs stored before the breakdown): the same cell on this GPU kind first, then
the same workload, backend and mode at another shape or precision, then another GPU kind's,
then the CPU's figure scaled by the GPU/CPU wall ratio of the cells both have measured (the
first H200 run's compiled cells took about twice their CPU wall: start-up, CUDA context and
compile dominate, not the steps). A command step (tests, kernel benchmark, profile) costs what
it took in an earlier lease of this kind or another; until one is stored it has a fixed cap,
and the plan says so. Every estimate carries a margin, since a lease that runs out loses the
cell it was in.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from lab.campaign.plan import Item, Step
from lab.campaign.stored import Machine

MARGIN = 1.15  # each expected cost x this: the wall of one cell varies between runs
# the lab process around each cell (interpreter, planning, writing results) until a lease has
# measured it; stated as an allowance, not a measurement, wherever the plan uses it
LAUNCH_ALLOWANCE_S = 5.0
NO_FIGURE_S = 60.0  # a cell with no figure anywhere: the lab's default per-cell timeout budget


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
        launch = _median(target.launch_s) or _median(
            [v for m in machines.values() for v in m.launch_s])
        self.launch_s = launch if launch is not None else LAUNCH_ALLOWANCE_S
        self.launch_note = "measured" if launch is not None else "allowance, not measured yet"

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

    def command(self, step: Step) -> Cost:
        walls = self.target.step_walls.get(step.name)
        if walls:
            return Cost(_median(walls) * MARGIN, f"its wall in {len(walls)} earlier lease(s)")
        for other in self.gpu_kinds:
            if other.step_walls.get(step.name):
                return Cost(_median(other.step_walls[step.name]) * MARGIN,
                            f"its wall on {other.id}")
        return Cost(float(step.cap_s or NO_FIGURE_S), "fixed cap: no wall of it stored yet")

    def item(self, step: Step, item: Item) -> Cost:
        cost = self.cell(item) if item.cell else self.command(step)
        if item.cell:
            cost = Cost(cost.seconds + self.launch_s, cost.source)
        cut = self.target.cut_short.get(item.name)
        if cut and cut * MARGIN > cost.seconds:  # it ran this long and was not done: at least
            return Cost(cut * MARGIN, f"cut short after {cut:.0f} s in an earlier lease")
        return cost


def _by_key(machine: Machine) -> dict[tuple, float]:
    """(workload, backend, mode) -> median wall of its stored cells on the machine."""
    walls: dict[tuple, list] = {}
    for c in machine.cells:
        if c.wall_s:
            walls.setdefault(c.key, []).append(c.wall_s)
    return {k: statistics.median(v) for k, v in walls.items()}
