"""Is the compiled answer the eager answer? Judged on the exact inputs that are timed.

First a plain elementwise check within the dtype's tolerance. When that fails, compilers may
still be right: fusion and reassociation change rounding. Then both answers are compared with a
float64 reference, as PyTorch's own benchmark harness does: the candidate passes when its RMSE
against float64 is at most `FP64_MULTIPLIER` times the eager answer's RMSE (plus a small floor).
A candidate that fails both is `fail_accuracy`, and no speedup is reported for it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# dtype -> (rtol, atol) for compiled vs eager of the same framework
TOLERANCES = {
    "float32": (1e-4, 1e-4),
    "float16": (1e-3, 1e-3),
    "bfloat16": (1.6e-2, 1e-2),
    "float64": (1e-7, 1e-7),
}
FP64_MULTIPLIER = 2.0


def tolerance(dtype: str) -> tuple[float, float]:
    if dtype not in TOLERANCES:
        raise ValueError(f"no tolerance for dtype {dtype!r}; known: {', '.join(TOLERANCES)}")
    return TOLERANCES[dtype]


def _rmse(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    diffs = np.concatenate([(np.asarray(x, np.float64) - np.asarray(y, np.float64)).ravel()
                            for x, y in zip(a, b, strict=True)])
    return float(np.sqrt(np.mean(diffs ** 2))) if diffs.size else 0.0


def describe_failure(result: dict) -> str:
    """One line saying why a candidate failed, with the numbers that decided it."""
    if result["method"] == "fp64_rmse":
        return (f"compiled output differs from eager: RMSE vs float64 "
                f"{result['rmse_candidate_vs_fp64']:.3g} > limit {result['rmse_limit']:.3g} "
                f"({FP64_MULTIPLIER:g}x eager's {result['rmse_eager_vs_fp64']:.3g})")
    if result["method"] == "allclose":
        return (f"compiled output differs from eager: max abs error "
                f"{result['max_abs_err']:.3g} (rtol {result['rtol']:g}, atol {result['atol']:g})")
    return f"compiled output differs from eager: {result.get('detail', result['method'])}"


def check(candidate: list[np.ndarray], baseline: list[np.ndarray], dtype: str,
          reference_fp64: Callable[[], list[np.ndarray]] | None = None) -> dict:
    """Compare candidate outputs to baseline outputs; returns a JSON-ready verdict dict."""
    rtol, atol = tolerance(dtype)
    if len(candidate) != len(baseline):
        return {"passed": False, "method": "structure",
                "detail": f"{len(candidate)} outputs vs {len(baseline)} from eager"}
    for i, (c, b) in enumerate(zip(candidate, baseline, strict=True)):
        if np.shape(c) != np.shape(b):
            return {"passed": False, "method": "structure",
                    "detail": f"output {i}: shape {np.shape(c)} vs eager {np.shape(b)}"}
        if not np.all(np.isfinite(c) == np.isfinite(b)):
            return {"passed": False, "method": "nonfinite",
                    "detail": f"output {i}: NaN/inf where eager has none (or the reverse)"}
    max_abs = max((float(np.max(np.abs(np.nan_to_num(c) - np.nan_to_num(b)), initial=0.0))
                   for c, b in zip(candidate, baseline, strict=True)), default=0.0)
    close = all(np.allclose(c, b, rtol=rtol, atol=atol, equal_nan=True)
                for c, b in zip(candidate, baseline, strict=True))
    result = {"passed": close, "method": "allclose", "rtol": rtol, "atol": atol,
              "max_abs_err": max_abs}
    if close or reference_fp64 is None:
        return result
    ref = reference_fp64()
    err_candidate, err_baseline = _rmse(candidate, ref), _rmse(baseline, ref)
    limit = FP64_MULTIPLIER * err_baseline + atol / 10
    result.update(method="fp64_rmse", passed=err_candidate <= limit,
                  rmse_candidate_vs_fp64=err_candidate, rmse_eager_vs_fp64=err_baseline,
                  rmse_limit=limit)
    return result
