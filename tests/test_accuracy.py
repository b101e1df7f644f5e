import numpy as np
import pytest

from lab.cell import accuracy


def test_equal_outputs_pass_allclose():
    x = [np.arange(6.0).reshape(2, 3)]
    result = accuracy.check(x, [x[0].copy()], "float32")
    assert result["passed"] and result["method"] == "allclose"


def test_small_rounding_difference_passes_via_fp64_reference():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(1000)
    eager = ref + rng.standard_normal(1000) * 1e-3  # eager's own rounding error vs float64
    compiled = ref + rng.standard_normal(1000) * 1e-3  # a different but equally good answer
    result = accuracy.check([compiled], [eager], "float32", lambda: [ref])
    assert result["method"] == "fp64_rmse" and result["passed"]


def test_wrong_answer_fails_even_with_fp64_reference():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal(1000)
    eager = ref + rng.standard_normal(1000) * 1e-6
    compiled = ref * 1.01
    result = accuracy.check([compiled], [eager], "float32", lambda: [ref])
    assert not result["passed"]
    assert result["rmse_candidate_vs_fp64"] > result["rmse_limit"]


def test_shape_mismatch_and_nan_fail():
    a = np.zeros((2, 3))
    assert not accuracy.check([a], [np.zeros((3, 2))], "float32")["passed"]
    b = a.copy()
    b[0, 0] = np.nan
    assert accuracy.check([b], [a], "float32")["method"] == "nonfinite"
    assert not accuracy.check([a], [a, a], "float32")["passed"]


def test_bf16_tolerance_is_looser_than_fp32():
    a = np.ones(10)
    b = a * (1 + 5e-3)
    assert not accuracy.check([b], [a], "float32")["passed"]
    assert accuracy.check([b], [a], "bfloat16")["passed"]


def test_unknown_dtype_is_an_error():
    with pytest.raises(ValueError, match="no tolerance"):
        accuracy.tolerance("int4")


def test_atol_follows_each_outputs_scale():
    # an output far below the fixed atol: a sign flip is caught, not passed
    tiny = np.linspace(1e-7, 1e-6, 10)
    result = accuracy.check([-tiny], [tiny], "float32")
    assert not result["passed"]
    assert "x max |eager| 1e-06" in accuracy.describe_failure(result)
    # a large output: its small elements carry the rounding of the large sums (fp32 rounding
    # at 1e3 is ~6e-5 per operation), judged at the output's scale, not their own
    big, moved = np.array([1e3, -1e3, 1e-3]), np.array([1e3, -1e3, 1e-3 + 5e-4])
    assert accuracy.check([moved], [big], "float32")["passed"]
    # each output at its own scale: a wrong small output beside a large one still fails
    assert not accuracy.check([big, -tiny], [big, tiny], "float32")["passed"]
    # integer outputs (tokens) stay exact, whatever their size
    tokens = np.array([128_000, 5])
    assert not accuracy.check([tokens + 1], [tokens], "float32")["passed"]
