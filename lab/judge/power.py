"""How many processes per side the wall-time gate needs to see a wanted change, from the noise
of the runs it compares: "to see a 10% change at 95% power this benchmark needs ~N processes
per side; these runs have M".

The noise is the gate's own (lab.judge.gate.gate_statistic, lab.core.stats.process_ratio): the
between-process spread of log median step times, measured from the runs' processes and pulled
toward the calibrated floor (stats.RUN_TO_RUN_SD_LOG) with the same weight the gate gives it.
With N processes per side that variance is ((2N - 2) s^2 + k f^2) / (2N - 2 + k): the floor
matters less as N grows, as it does in the gate.

The power is that of the gate's own decision rule (gate_decision): the estimated slowdown must
clear both the test's critical value and the threshold. With 5 and 5 processes or more the
rank test decides: it sees the processes' own spread, not the floor, and its power is the z
test's at 3/pi of the processes (the Mann-Whitney test's efficiency under normal noise). A
normal approximation on the log scale, hence "~N": tests/test_gate_power.py checks it against
the gate itself on simulated processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lab.core import stats

WANTED_POWER = 0.95
RANK_EFFICIENCY = 3 / math.pi  # Mann-Whitney against the t test, normal noise
MAX_PROCESSES = 1000  # beyond this the answer is "more than the gate can use"
RANK_FROM = 5  # processes per side from which the gate's rank test can reach alpha = 1%


@dataclass(frozen=True)
class Plan:
    change: float  # the wanted detectable slowdown, e.g. 0.10
    power: float
    sd_log: float  # between-process sd of log medians the plan assumed
    measured: bool  # True: these runs had >= 2 processes on a side to measure it
    needed: int | None  # processes per side; None: not reachable (see reason)
    have: tuple[int, int]
    reason: str = ""

    def text(self, name: str) -> str:
        where = "measured in these runs" if self.measured else \
            "the calibrated floor: one process per side measures no spread"
        head = f"`{name}`: to see a {self.change:.0%} change at {self.power:.0%} power"
        if self.needed is None:
            return f"{head}: {self.reason}"
        return (f"{head} this benchmark needs ~{self.needed} processes per side (sd "
                f"{self.sd_log:.3f} in log, {where}); these runs have {self.have[0]} and "
                f"{self.have[1]}")


def measured_sd_log(baseline_medians, candidate_medians) -> float | None:
    """Pooled sd of log process medians within each side, or None with fewer than two
    processes on both sides (nothing to measure)."""
    ss, dof = 0.0, 0
    for side in (baseline_medians, candidate_medians):
        logs = [math.log(v) for v in side]
        if len(logs) >= 2:
            mean = sum(logs) / len(logs)
            ss += sum((x - mean) ** 2 for x in logs)
            dof += len(logs) - 1
    return math.sqrt(ss / dof) if dof else None


def power(n: int, change: float, threshold: float, sd_log: float,
          floor_sd_log: float = stats.RUN_TO_RUN_SD_LOG, alpha: float = 0.01) -> float:
    """Approximate chance that the gate, with `n` processes per side, calls a true slowdown of
    `change` regressed at `threshold` (alpha: the gate's one-sided false-alarm level)."""
    from scipy import stats as st

    shift, need = math.log1p(change), math.log1p(threshold)
    if 1 / math.comb(2 * n, n) < alpha:
        # the rank test decides (gate_decision): distribution-free, it sees the processes'
        # own spread only, no floor
        se = sd_log * math.sqrt(2 / n / RANK_EFFICIENCY)
        if se == 0:
            return 1.0 if shift > need else 0.0
        crit = st.norm.ppf(1 - alpha) * se
        return float(st.norm.sf((max(crit, need) - shift) / se))
    # the t interval decides: the spread pulled toward the floor, as process_ratio does
    k = stats.FLOOR_DOF
    dof = 2 * n - 2 + k
    var = ((2 * n - 2) * sd_log**2 + k * floor_sd_log**2) / dof
    se = math.sqrt(var * 2 / n)
    crit = st.t.ppf(1 - alpha, dof) * se
    return float(st.t.sf((max(crit, need) - shift) / se, dof))


def plan(baseline_medians, candidate_medians, change: float, threshold: float,
         floor_sd_log: float | None = None, wanted_power: float = WANTED_POWER) -> Plan:
    """Processes per side for the gate to call a `change` slowdown regressed with
    `wanted_power`, at `threshold`, given the noise these runs show."""
    floor = stats.RUN_TO_RUN_SD_LOG if floor_sd_log is None else floor_sd_log
    measured = measured_sd_log(baseline_medians, candidate_medians)
    sd = floor if measured is None else measured
    have = (len(baseline_medians), len(candidate_medians))
    base = dict(change=change, power=wanted_power, sd_log=sd, measured=measured is not None,
                have=have)
    if change <= threshold:
        return Plan(**base, needed=None,
                    reason=f"not with a {threshold:.0%} threshold (a change at or under it "
                           f"is regressed at most half the time; raise --detect)")
    def enough(n: int) -> bool:
        return power(n, change, threshold, sd, floor) >= wanted_power

    for n in range(2, RANK_FROM):  # the t regime: a few processes, tried one by one
        if enough(n):
            return Plan(**base, needed=n)
    if enough(MAX_PROCESSES):  # the rank regime: power grows with n, so bisect
        lo, hi = RANK_FROM - 1, MAX_PROCESSES  # enough(hi), and lo is not (or is the t regime)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if enough(mid) else (mid, hi)
        return Plan(**base, needed=hi)
    return Plan(**base, needed=None,
                reason=f"more than {MAX_PROCESSES} processes per side (sd {sd:.3f} in log); "
                       f"gate on counts instead (lab run --counts, docs/counts.md)")
