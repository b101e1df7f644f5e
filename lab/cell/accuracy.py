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

from lab.core import precision as precisions

# (rtol, atol) for compiled vs eager of the same framework: the precisions' own (fp32, tf32,
# bf16, amp-bf16, ...: lab.core.precision.POLICIES, also by their dtype names float32, bfloat16,
# float16), and float64's here
FLOAT64_TOLERANCE = (1e-7, 1e-7)
FP64_MULTIPLIER = 2.0


def tolerance(precision: str) -> tuple[float, float]:
    """(rtol, atol) for a precision (`amp-bf16`) or a dtype (`float32`, `float64`)."""
    if precision == "float64":
        return FLOAT64_TOLERANCE
    try:
        return precisions.tolerance(precision)
    except ValueError:
        known = ", ".join([*precisions.NAMES, *precisions.DTYPE_PRECISION, "float64"])
        raise ValueError(f"no tolerance for {precision!r}; known: {known}") from None


def _rmse(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    diffs = np.concatenate([(np.asarray(x, np.float64) - np.asarray(y, np.float64)).ravel()
                            for x, y in zip(a, b, strict=True)])
    return float(np.sqrt(np.mean(diffs ** 2))) if diffs.size else 0.0


def _scales(outputs: list[np.ndarray]) -> list[float]:
    """Each float output's largest finite magnitude (an all-zero one takes the largest of
    all); 1 for an integer output (tokens), which an atol below 1 compares exactly."""
    arrays = [np.asarray(o) for o in outputs]
    own = [float(np.max(np.abs(a[np.isfinite(a)]), initial=0.0))
           if np.issubdtype(a.dtype, np.inexact) or a.dtype.name == "bfloat16" else 1.0
           for a in arrays]
    return [s or max(own, default=0.0) for s in own]


def describe_failure(result: dict) -> str:
    """One line saying why a candidate failed, with the numbers that decided it."""
    if result["method"] == "fp64_rmse":
        return (f"compiled output differs from eager: RMSE vs float64 "
                f"{result['rmse_candidate_vs_fp64']:.3g} > limit {result['rmse_limit']:.3g} "
                f"({FP64_MULTIPLIER:g}x eager's {result['rmse_eager_vs_fp64']:.3g})")
    if result["method"] == "allclose":
        return (f"compiled output differs from eager: max abs error "
                f"{result['max_abs_err']:.3g} (rtol {result['rtol']:g}, atol {result['atol']:g}"
                f" x max |eager| {result.get('atol_scale', 1.0):.3g})")
    return f"compiled output differs from eager: {result.get('detail', result['method'])}"


def _nonfinite(outputs: list[np.ndarray]) -> tuple[int, int] | None:
    """(index of the first output holding NaN/Inf, how many it holds), or None."""
    for i, out in enumerate(outputs):
        arr = np.asarray(out)
        if np.issubdtype(arr.dtype, np.inexact):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            if bad:
                return i, bad
    return None


def check_eager(first: list[np.ndarray], second: list[np.ndarray], precision: str,
                allow_nan: bool = False) -> dict:
    """Is eager a usable reference? Two eager runs on the same inputs must agree within the
    precision's tolerance (PyTorch's benchmark harness checks the same before comparing: dropout
    or an unseeded random op would make every comparison noise), and without `allow_nan` hold
    no NaN or Inf. `status` says which status a failure gives the cell."""
    rtol, atol = tolerance(precision)
    repeat = check(second, first, precision, allow_nan=True)
    if not repeat["passed"]:
        detail = repeat.get("detail") or (f"max abs difference {repeat['max_abs_err']:.3g} "
                                          f"(rtol {rtol:g}, atol {atol:g})")
        return {"passed": False, "method": "eager_repeat", "status": "eager_nondeterministic",
                "detail": f"two eager runs on the same inputs differ: {detail}",
                "max_abs_err": repeat.get("max_abs_err")}
    found = _nonfinite(first)
    if found and not allow_nan:
        i, bad = found
        return {"passed": False, "method": "nonfinite", "status": "fail_accuracy",
                "detail": f"eager output {i} holds {bad} NaN/Inf values (--allow-nan accepts "
                          f"them where the compiled output has them too)"}
    return {"passed": True, "method": "eager_repeat", "max_abs_err": repeat["max_abs_err"],
            "nonfinite": bool(found)}


def check(candidate: list[np.ndarray], baseline: list[np.ndarray], precision: str,
          reference_fp64: Callable[[], list[np.ndarray]] | None = None,
          allow_nan: bool = False, stated: dict | None = None) -> dict:
    """Compare candidate outputs to baseline outputs; returns a JSON-ready verdict dict.
    NaN or Inf fails it, unless `allow_nan` and both have them in the same places. `stated`:
    {"rtol", "atol", "why"}, a tolerance the candidate declares (a quantized runtime) in place
    of the precision's; the verdict says so."""
    rtol, atol = (stated["rtol"], stated["atol"]) if stated else tolerance(precision)
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
    found = _nonfinite(candidate)
    if found and not allow_nan:  # NaN == NaN proves nothing: the model computes garbage
        return {"passed": False, "method": "nonfinite",
                "detail": f"output {found[0]} holds {found[1]} NaN/Inf values, as eager's "
                          f"does (--allow-nan accepts that)"}
    max_abs = max((float(np.max(np.abs(np.nan_to_num(c) - np.nan_to_num(b)), initial=0.0))
                   for c, b in zip(candidate, baseline, strict=True)), default=0.0)
    # The precision's atol is per unit of each output's largest |eager| value: a sum's rounding
    # follows the size of what it sums, not of the element it lands in, so a fixed atol fails
    # the small elements of a large output on another CPU's summation order and passes any
    # answer for an output far below it. A stated tolerance is its runtime's own, absolute.
    scales = [1.0] * len(baseline) if stated else _scales(baseline)
    close = all(np.allclose(c, b, rtol=rtol, atol=atol * scale, equal_nan=True)
                for c, b, scale in zip(candidate, baseline, scales, strict=True))
    result = {"passed": close, "method": "allclose", "rtol": rtol, "atol": atol,
              "max_abs_err": max_abs, "atol_scale": max(scales, default=0.0)}
    if stated:  # judged on the stated tolerance alone: float64 rounding is not its question
        return {**result, "tolerance_why": stated.get("why")}
    if close or reference_fp64 is None:
        return result
    ref = reference_fp64()
    err_candidate, err_baseline = _rmse(candidate, ref), _rmse(baseline, ref)
    limit = FP64_MULTIPLIER * err_baseline + atol * result["atol_scale"] / 10
    result.update(method="fp64_rmse", passed=err_candidate <= limit,
                  rmse_candidate_vs_fp64=err_candidate, rmse_eager_vs_fp64=err_baseline,
                  rmse_limit=limit)
    return result
