"""Statistics over timing samples: every module of the lab takes its medians, intervals and
ratios from here.

Everything here takes plain sequences of floats (seconds) and knows no framework. Intervals are
bootstrap intervals from scipy.stats; ratios are ratios of medians because timing samples are
skewed (a few slow outliers from interrupts or GC) and the median is what a user sees most steps.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 2000  # enough for a stable 95% percentile interval; costs ~ms per call
NOISY_RELATIVE_CI = 0.10  # a median whose 95% interval is wider than +-5% can't back a 5% claim


@dataclass(frozen=True)
class Summary:
    """Robust description of one sample set (all in the samples' unit, seconds here)."""

    n: int
    median: float
    mean: float
    min: float
    max: float
    iqr: float
    p20: float
    p80: float
    median_ci95: tuple[float, float]
    relative_ci_width: float  # (hi - lo) / median of the median's interval
    noisy: bool  # interval too wide to support claims at NOISY_RELATIVE_CI precision

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Ratio:
    """How many times larger the median of `a` is than the median of `b` (a / b)."""

    ratio: float
    ci95: tuple[float, float]
    p_value: float  # two-sided Mann-Whitney U: do the samples come from one distribution?
    min_detectable_ratio: float  # smallest a/b this design resolves (relative, e.g. 1.05)

    def as_dict(self) -> dict:
        return asdict(self)


def median(values) -> float:
    """The median of plain floats: exact (no array made), for the one-off medians of a cell's
    warm-up, its processes and a trace's steps."""
    return statistics.median(values)


def quartiles(values) -> tuple[float, float]:
    """The first and third quartiles of plain floats (statistics.quantiles' exclusive method)."""
    q1, _, q3 = statistics.quantiles(values, n=4)
    return q1, q3


def _rng(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(0 if seed is None else seed)


def _as_array(samples) -> np.ndarray:
    arr = np.asarray(samples, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError("samples must be a non-empty 1-D sequence of numbers")
    if not np.all(np.isfinite(arr)):
        raise ValueError("samples contain NaN or infinity")
    return arr


def median_ci(samples, confidence: float = 0.95, seed: int | None = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval for the median (scipy.stats.bootstrap)."""
    from scipy import stats

    arr = _as_array(samples)
    if arr.size < 3 or np.ptp(arr) == 0:
        m = float(np.median(arr))
        return (m, m)
    res = stats.bootstrap(
        (arr,), np.median, confidence_level=confidence, n_resamples=BOOTSTRAP_RESAMPLES,
        method="percentile", random_state=_rng(seed), vectorized=True, axis=-1,
    )
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


LATENCY_PERCENTILES = (50, 90, 99)  # what serving dashboards plot: typical, slow, tail


def percentile_ci(samples, q: float, confidence: float = 0.95,
                  seed: int | None = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval for the q-th percentile (scipy.stats.bootstrap on
    np.percentile, the statistic `median_ci` bootstraps at q = 50).

    A tail percentile is resolved only by the few samples beyond it: at n = 200 the p99
    rests on the two slowest calls, and its interval's upper end is usually the largest
    sample. The interval says so by being wide; it is not a model of the tail.
    """
    from scipy import stats

    arr = _as_array(samples)
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    if arr.size < 3 or np.ptp(arr) == 0:
        v = float(np.percentile(arr, q))
        return (v, v)

    def statistic(x, axis=-1):
        return np.percentile(x, q, axis=axis)

    res = stats.bootstrap(
        (arr,), statistic, confidence_level=confidence, n_resamples=BOOTSTRAP_RESAMPLES,
        method="percentile", random_state=_rng(seed), vectorized=True, axis=-1,
    )
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def latency_percentiles(samples, percentiles=LATENCY_PERCENTILES, seed: int | None = 0,
                        scale: float = 1.0) -> dict:
    """Per-call latency percentiles with bootstrap 95% intervals.

    `samples` are seconds per call (one call per sample, nothing averaged). Returns
    {"p50": [value, lo, hi], ..., "n": samples}, every value multiplied by `scale` (1e3 for
    milliseconds), as stored in a cell's extra_info and read by tables and verdicts.
    """
    arr = _as_array(samples)
    out: dict = {}
    for q in percentiles:
        lo, hi = percentile_ci(arr, q, seed=seed)
        out[f"p{q:g}"] = [float(np.percentile(arr, q)) * scale, lo * scale, hi * scale]
    out["n"] = int(arr.size)
    return out


def summarize(samples, seed: int | None = 0) -> Summary:
    arr = _as_array(samples)
    med = float(np.median(arr))
    q1, q3, p20, p80 = np.percentile(arr, [25, 75, 20, 80])
    lo, hi = median_ci(arr, seed=seed)
    rel = (hi - lo) / med if med > 0 else math.inf
    return Summary(
        n=int(arr.size), median=med, mean=float(arr.mean()), min=float(arr.min()),
        max=float(arr.max()), iqr=float(q3 - q1), p20=float(p20), p80=float(p80),
        median_ci95=(lo, hi), relative_ci_width=float(rel), noisy=bool(rel > NOISY_RELATIVE_CI),
    )


def _median_ratio(a, b, axis=-1):
    return np.median(a, axis=axis) / np.median(b, axis=axis)


def ratio_of_medians(a, b, seed: int | None = 0) -> Ratio:
    """median(a) / median(b) with an independent two-sample bootstrap interval.

    For a speedup pass a = baseline (eager) times and b = candidate (compiled) times.
    """
    from scipy import stats

    xa, xb = _as_array(a), _as_array(b)
    point = float(np.median(xa) / np.median(xb))
    if xa.size < 3 or xb.size < 3:
        ci = (point, point)
    else:
        res = stats.bootstrap(
            (xa, xb), _median_ratio, confidence_level=0.95, n_resamples=BOOTSTRAP_RESAMPLES,
            method="percentile", random_state=_rng(seed), vectorized=True, axis=-1,
        )
        ci = (float(res.confidence_interval.low), float(res.confidence_interval.high))
    if np.ptp(np.concatenate([xa, xb])) == 0:
        p = 1.0
    else:
        p = float(stats.mannwhitneyu(xa, xb, alternative="two-sided").pvalue)
    return Ratio(ratio=point, ci95=ci, p_value=p, min_detectable_ratio=min_detectable_ratio(xa, xb))


def min_detectable_ratio(a, b, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest ratio of medians these sample sizes can tell from 1.0.

    Normal approximation on log-times: the standard error of a median is about
    1.2533 * sigma / sqrt(n), and sigma on the log scale is estimated robustly from the IQR
    (IQR / 1.349). MDE = (z_{1-alpha/2} + z_{power}) * sqrt(se_a^2 + se_b^2).
    """
    from scipy import stats

    def se_log_median(x: np.ndarray) -> float:
        q1, q3 = np.percentile(np.log(x), [25, 75])
        sigma = (q3 - q1) / 1.349
        return 1.2533 * sigma / math.sqrt(x.size)

    xa, xb = _as_array(a), _as_array(b)
    if np.any(xa <= 0) or np.any(xb <= 0):
        raise ValueError("timing samples must be positive")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(math.exp(z * math.hypot(se_log_median(xa), se_log_median(xb))))


def break_even_steps(compile_seconds: float | None, eager_step_s: float, compiled_step_s: float):
    """Steps after which a compile pays for itself; None ("never") when compiled is not faster."""
    if compile_seconds is None:
        return None
    saved = eager_step_s - compiled_step_s
    if saved <= 0:
        return None
    return max(compile_seconds, 0.0) / saved


# ---------------------------------------------------------------- run-to-run comparisons
# A run's samples are not independent of the run: the same code timed in back-to-back processes
# moves far more between processes than within one (thread placement, frequency, neighbours).
# So two runs are compared through their per-process medians, on the log scale (a slowdown is a
# ratio), with the between-process spread estimated from the processes themselves and pulled
# toward a floor measured on A/A pairs (docs/verdicts.md, "Calibration"). With one process per
# side the floor is all there is, and the interval says so by being wide.

# Between-process sd of log(median step time), measured on A/A processes of a CPU-bound
# workload on a shared 2-core machine (44 processes; docs/verdicts.md, "Calibration"): the
# smallest floor that kept one- and three-process A/A false alarms at or under 1% there.
RUN_TO_RUN_SD_LOG = 0.36
FLOOR_DOF = 4  # weight of that floor, in degrees of freedom of prior evidence


@dataclass(frozen=True)
class ProcessRatio:
    """Candidate over baseline (> 1: the candidate is slower), from per-process medians."""

    ratio: float  # exp(mean log candidate - mean log baseline): a ratio of geometric means
    ci: tuple[float, float]  # two-sided interval at `confidence`
    confidence: float
    p_value: float  # two-sided t test on the log medians, variance pulled toward the floor
    rank_p_value: float | None  # Mann-Whitney U on the process medians (None: < 2 per side)
    shift_ratio: float  # Hodges-Lehmann: exp(median of all pairwise log differences)
    rank_p_slower: float  # one-sided Mann-Whitney: is the candidate slower?
    rank_p_faster: float
    rank_min_p: float  # smallest one-sided p these sizes allow: 1 / C(n_a + n_b, n_a)
    min_detectable_ratio: float  # smallest slowdown this design finds with 80% power
    n_baseline: int
    n_candidate: int
    sd_log: float  # between-process sd of log medians that the interval used
    dof: float

    def as_dict(self) -> dict:
        return asdict(self)


def process_ratio(baseline_medians, candidate_medians, floor_sd_log: float = RUN_TO_RUN_SD_LOG,
                  floor_dof: float = FLOOR_DOF, confidence: float = 0.95) -> ProcessRatio:
    """Compare two runs through the medians of their processes (seconds per step).

    Pooled variance of the log medians with `floor_dof` pseudo-observations at
    `floor_sd_log`: var = (SS_a + SS_b + k * floor^2) / (n_a + n_b - 2 + k), a t interval with
    n_a + n_b - 2 + k degrees of freedom. It is a normal-prior (shrinkage) estimate: a few
    processes cannot talk the gate into trusting a spread smaller than the machine has shown.
    """
    from scipy import stats

    xa, xb = _as_array(baseline_medians), _as_array(candidate_medians)
    if np.any(xa <= 0) or np.any(xb <= 0):
        raise ValueError("process medians must be positive")
    la, lb = np.log(xa), np.log(xb)
    na, nb = la.size, lb.size
    ss = float(((la - la.mean()) ** 2).sum() + ((lb - lb.mean()) ** 2).sum())
    dof = na + nb - 2 + floor_dof
    if dof <= 0:
        raise ValueError("need a noise floor (floor_dof > 0) to compare one process per side")
    var = (ss + floor_dof * floor_sd_log**2) / dof
    se = math.sqrt(var * (1 / na + 1 / nb))
    diff = float(lb.mean() - la.mean())
    t_crit = float(stats.t.ppf(0.5 + confidence / 2, dof))
    if se > 0:
        p = float(2 * stats.t.sf(abs(diff) / se, dof))
    else:
        p = 1.0 if diff == 0 else 0.0
    rank_p = None
    if na >= 2 and nb >= 2:
        rank_p = (1.0 if np.ptp(np.concatenate([la, lb])) == 0
                  else float(stats.mannwhitneyu(la, lb, alternative="two-sided").pvalue))
    # one-sided: a slowdown is found when the interval's low end clears 1
    mde = math.exp((t_crit + float(stats.t.ppf(0.8, dof))) * se)
    # distribution-free view of the same question: exchangeable processes (an A/A pair) give a
    # one-sided Mann-Whitney p below alpha with probability <= alpha, however heavy the tails
    if np.ptp(np.concatenate([la, lb])) == 0:
        p_slower = p_faster = 1.0
    else:
        p_slower = float(stats.mannwhitneyu(lb, la, alternative="greater").pvalue)
        p_faster = float(stats.mannwhitneyu(lb, la, alternative="less").pvalue)
    shift = math.exp(float(np.median(np.subtract.outer(lb, la))))
    return ProcessRatio(
        ratio=math.exp(diff), ci=(math.exp(diff - t_crit * se), math.exp(diff + t_crit * se)),
        confidence=confidence,
        p_value=p, rank_p_value=rank_p, shift_ratio=shift, rank_p_slower=p_slower,
        rank_p_faster=p_faster, rank_min_p=1 / math.comb(na + nb, na),
        min_detectable_ratio=mde, n_baseline=na, n_candidate=nb,
        sd_log=math.sqrt(var), dof=float(dof),
    )


def combine_log_intervals(*parts: tuple[float, tuple[float, float]],
                          extra_sd_log: float = 0.0) -> tuple[float, tuple[float, float]]:
    """Product of independent ratios, each given as (point, 95% interval), with an interval.

    Each interval is read as a normal interval on the log scale (half-width / 1.96 = se); the
    ses add in quadrature, plus `extra_sd_log` for variance none of the parts saw (run-to-run
    drift between the processes the parts came from). Pass 1/x for a ratio in the denominator.
    """
    log_point, var = 0.0, extra_sd_log**2
    for point, (lo, hi) in parts:
        if not (point > 0 and lo > 0 and hi > 0):
            raise ValueError("ratios and their intervals must be positive")
        log_point += math.log(point)
        var += ((math.log(hi) - math.log(lo)) / (2 * 1.959964)) ** 2
    half = 1.959964 * math.sqrt(var)
    return math.exp(log_point), (math.exp(log_point - half), math.exp(log_point + half))


# ---------------------------------------------------------------- change points

def change_points(values, alpha: float = 0.01, min_size: int = 2, min_shift: float = 0.0,
                  permutations: int = 999, seed: int | None = 0) -> list[int]:
    """Indices where a series' level shifts: binary segmentation with a permutation test.

    On log values (a level shift in time is a ratio), the split statistic is the largest
    standardized CUSUM |sum_{i<k}(x_i - mean)| / sqrt(k (n - k) / n) over k in
    [min_size, n - min_size]. Its p value comes from `permutations` shuffles of the segment
    (no distributional assumption: a series with no change point is exchangeable). A split is
    kept when p < alpha and the two sides' geometric means differ by at least `min_shift`
    (relative); then each side is searched again. Returns sorted split indices (a split at k
    means values[k] is the first of the new level).
    """
    x = np.log(_as_array(values))
    rng = _rng(seed)
    found: list[int] = []

    def best_split(seg: np.ndarray) -> tuple[int, float]:
        n = seg.size
        k = np.arange(min_size, n - min_size + 1)
        cusum = np.cumsum(seg - seg.mean())[k - 1]
        score = np.abs(cusum) / np.sqrt(k * (n - k) / n)
        i = int(np.argmax(score))
        return int(k[i]), float(score[i])

    def search(lo: int, hi: int) -> None:
        seg = x[lo:hi]
        if seg.size < 2 * min_size or np.ptp(seg) == 0:
            return
        k, observed = best_split(seg)
        exceed = sum(best_split(rng.permutation(seg))[1] >= observed for _ in range(permutations))
        p = (1 + exceed) / (1 + permutations)
        shift = abs(math.exp(seg[k:].mean() - seg[:k].mean()) - 1)
        if p < alpha and shift >= min_shift:
            found.append(lo + k)
            search(lo, lo + k)
            search(lo + k, hi)

    search(0, x.size)
    return sorted(found)


def geomean_ci(values, confidence: float = 0.95,
               seed: int | None = 0) -> tuple[float | None, tuple[float, float] | None]:
    """(geometric mean, its bootstrap interval) of positive ratios, one per model of a suite:
    the mean of the logs resampled over the values, so the interval says how far the geomean
    moves with which models were drawn. (None, None) for no values; a single value has no
    spread to resample: its interval is the value itself."""
    logs = np.log(np.asarray([v for v in values if v > 0], dtype=float))
    if logs.size == 0:
        return None, None
    geo = float(np.exp(logs.mean()))
    if logs.size == 1 or np.all(logs == logs[0]):
        return geo, (geo, geo)
    from scipy.stats import bootstrap

    res = bootstrap((logs,), np.mean, confidence_level=confidence, method="percentile",
                    n_resamples=BOOTSTRAP_RESAMPLES, random_state=_rng(seed))
    return geo, (float(np.exp(res.confidence_interval.low)),
                 float(np.exp(res.confidence_interval.high)))
