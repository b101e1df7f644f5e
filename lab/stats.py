"""Statistics over timing samples: the only place statistics live.

Everything here takes plain sequences of floats (seconds) and knows no framework. Intervals are
bootstrap intervals from scipy.stats; ratios are ratios of medians because timing samples are
skewed (a few slow outliers from interrupts or GC) and the median is what a user sees most steps.
"""

from __future__ import annotations

import math
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
    """Steps after which a compile pays for itself, or None ("never") when compiled is not faster."""
    if compile_seconds is None:
        return None
    saved = eager_step_s - compiled_step_s
    if saved <= 0:
        return None
    return max(compile_seconds, 0.0) / saved
