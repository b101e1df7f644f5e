"""How close two floating-point answers must be, derived from the arithmetic, not from a run.

Two correct implementations of one function in one dtype (torch and JAX, eager and compiled,
a CPU with 256-bit vectors and one with 512-bit) add the same terms in different orders, and
each order rounds differently. A sum of K terms computed in a dtype with unit roundoff
u = eps / 2 is within about K * u * sum(|terms|) of the exact sum (Higham, *Accuracy and
Stability of Numerical Algorithms*, section 4.2); two such answers are therefore within
K * eps * sum(|terms|) of each other. An element's own magnitude says nothing about that
error: an element that is a cancelling sum of large terms is tiny, yet carries the rounding of
the large terms. So the bound is set by the scale of the whole tensor (its largest magnitude,
which stands for sum(|terms|)), not by each element, and a relative tolerance per element is
the wrong model for it: it fails on the smallest elements of a gradient on a CPU whose
summation order differs from the one it was tuned on. Where the whole tensor is such a
cancelling sum (one element, or a result that is exactly zero), its largest magnitude no longer
stands for the terms: pass their `scale`.

For terms of random sign, sum(|terms|) is about sqrt(K) times the result, while the rounding
errors, of random sign too, grow like sqrt(K) * u rather than K * u (Higham and Mary, SIAM J.
Sci. Comput. 41(5), 2019): the two factors of sqrt(K) offset, and K * eps * max|expected|
covers both answers' errors with room to spare. For a composed computation (a network and its
gradients) the relative errors of its steps add to first order, so `reduction_len` is the sum
of the reduction lengths along the computation's longest chain (each function's docstring
says which). A softmax or exp turns an absolute error of its input into the same relative
error of its output, so the reduction lengths before it count times its input's magnitude
where that exceeds 1 (attention with scores in the hundreds).

What such a bound still catches: any element off by more than `bound` (a sign flip or a
missing term in an element above bound / 2, a wrong scale factor of more than
reduction_len * eps). A bound past MAX_RELATIVE_BOUND of the scale could no longer tell
those from rounding, and is refused.
"""

from __future__ import annotations

import numpy as np

# past 1% of the tensor's scale, a bound would hide a wrong scale factor or a missing term
MAX_RELATIVE_BOUND = 1e-2


def eps(dtype) -> float:
    """Machine epsilon (the spacing of values at 1.0) of a numpy, torch or named dtype."""
    name = str(dtype).replace("torch.", "")
    if name == "bfloat16":  # 8 significant bits; numpy has no bfloat16
        return 2.0 ** -7
    return float(np.finfo(np.dtype(name)).eps)


def _float64(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, maybe bfloat16 (numpy cannot hold it)
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def bound(expected, *, dtype, reduction_len: int, scale: float | None = None) -> float:
    """reduction_len * eps(dtype) * scale, scale = max|expected| unless given: the largest
    difference two correct answers may have (module docstring)."""
    scale = float(np.max(np.abs(_float64(expected)), initial=0.0)) if scale is None else scale
    relative = reduction_len * eps(dtype)
    assert relative <= MAX_RELATIVE_BOUND, (
        f"a bound of {reduction_len} x eps({dtype}) = {relative:.3g} of the scale cannot tell "
        f"a wrong result from rounding")
    return relative * scale


def assert_close_scaled(actual, expected, *, dtype, reduction_len: int,
                        scale: float | None = None, what: str = "values") -> None:
    """Every element of `actual` within `bound(...)` of `expected` (same shape), in absolute
    terms: the error two correct answers in `dtype` may have after sums of `reduction_len`
    terms at the tensor's scale. Accepts numpy arrays, JAX arrays, torch tensors and
    scalars."""
    a, e = _float64(actual), _float64(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape}, expected {e.shape}"
    limit = bound(e, dtype=dtype, reduction_len=reduction_len, scale=scale)
    assert np.all(np.isfinite(a) == np.isfinite(e)), f"{what}: NaN/Inf where expected has none"
    err = np.abs(np.where(np.isfinite(e), a - e, 0.0))
    worst = float(err.max(initial=0.0))
    # the margin, shown for passing tests by `pytest -rP`: measured error in units of
    # eps x scale, beside the reduction length that bounds it
    unit = limit / reduction_len
    print(f"{what}: max error {worst / unit if unit else 0.0:.3g} x eps({dtype}) x scale "
          f"{unit / eps(dtype):.3g}, bound {reduction_len}")
    if worst <= limit:
        return
    at = np.unravel_index(int(np.argmax(err)), err.shape)
    raise AssertionError(
        f"{what}: |actual - expected| up to {err.max():.3g} at {tuple(map(int, at))} "
        f"(actual {a[at]:.6g}, expected {e[at]:.6g}; {int(np.sum(err > limit))} of {err.size} "
        f"elements over), bound {limit:.3g} = {reduction_len} x eps({dtype}) "
        f"{eps(dtype):.3g} x scale {limit / (reduction_len * eps(dtype)):.3g}")


def decoder_chain(shape: dict, upto: str = "logits") -> int:
    """`reduction_len` for two implementations of the GPT-2 or Llama decoder of `shape`: the
    reduction lengths along the longest chain to the logits, summed. Per layer:
    two norms over hidden, a projection (hidden), scores (head_dim), softmax and the weighted
    sum (seq), the output projection and the MLP's first matmul (hidden), its second (ffn);
    then the final norm and the LM head (hidden). `loss` adds the log-sum-exp over the
    vocabulary and the mean over tokens; `grads` the backward, which runs the same chain
    transposed."""
    h = shape["hidden"]
    per_layer = 5 * h + h // shape["heads"] + 2 * shape["seq"] + shape.get("ffn", 4 * h)
    logits = shape["layers"] * per_layer + 2 * h
    loss = logits + shape["vocab"] + shape["batch"] * shape["seq"]
    return {"logits": logits, "loss": loss, "grads": 2 * loss}[upto]
