"""The Keras 3 suite (lab/workloads/suites/keras.py, lab/compile/keras_*.py): its models and
backends as the selection sees them, the cross-backend rule, the benchmark table; then (long:
keras_hub's import alone takes seconds per process) the same weights loaded on three Keras
backends, and `lab run --suite keras --size tiny` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lab import compile as backends
from lab.compile import keras_common
from lab.running import selection
from lab.workloads import suites
from lab.workloads.suites import hf
from lab.workloads.suites import keras as keras_suite
from tests import numerics

ROOT = Path(__file__).resolve().parent.parent
KERAS_BACKENDS = ("tf", "jax", "torch")


def test_the_keras_suite_has_the_issues_six_models_each_beside_its_hf_model():
    names = suites.names("keras")
    assert len(names) >= 6 and len(set(names)) == len(names)
    assert {"keras/bert", "keras/gpt2", "keras/resnet", "keras/vit"} <= set(names)
    assert {"keras/llama", "keras/gemma"} & set(names)  # a Llama- or Gemma-shaped decoder
    for entry in keras_suite.ENTRIES:
        assert entry.hf in hf.BY_NAME, entry.name  # the HF column has a model to show
        assert suites.suite_of(entry.workload_name) == "keras"
        # the real size is the preset's numbers, the tiny one far smaller
        assert entry.real and entry.tiny and entry.real != entry.tiny
        assert all(v == 0.0 for k, v in entry.args(True).items() if "dropout" in k)
        workload = suites.get(entry.workload_name)
        assert workload.frameworks == ("keras",)
        shape = workload.shape_for("cpu", {"tiny": 1})
        assert shape["batch"] >= (2 if entry.inputs == "image" else 1)
        assert workload.shape_problem(shape) is None
        assert workload.shape_problem({**shape, "tiny": 2})  # 0 or 1 only


def test_each_keras_backend_sets_its_keras_backend_and_times_its_eager_side():
    for short, keras_name in zip(KERAS_BACKENDS, ("tensorflow", "jax", "torch"), strict=True):
        eager = backends.BACKENDS[f"keras-{short}-eager"]
        jit = backends.BACKENDS[f"keras-{short}-jit"]
        assert eager.framework == jit.framework == backends.Framework.KERAS
        assert eager.baseline is None and jit.baseline == eager.name  # same-process baseline
        module = backends.load(jit)  # every member of the protocol, from it or its base
        assert set(module.SIDES) == {eager.name, jit.name}
        assert module.process_env(2, "cpu")["KERAS_BACKEND"] == keras_name


def test_the_selection_pairs_keras_models_with_keras_backends_only():
    from lab.commands.suites import default_backends

    assert default_backends(["keras/bert", "keras/vit"]) == list(keras_suite.BACKENDS)
    assert default_backends(["hf/bert"]) == ["torch-eager", "torch-compile"]
    assert default_backends(["hf/bert", "keras/bert"]) == \
        ["torch-eager", "torch-compile", *keras_suite.BACKENDS]
    keras_bert, hf_bert = suites.get("keras/bert"), suites.get("hf/bert")
    run_here = dict(mode="infer", precision="fp32", here=False)
    assert "no torch version" in selection.skip_reason(
        keras_bert, backends.resolve("torch-compile"), **run_here)
    assert "no keras version" in selection.skip_reason(
        hf_bert, backends.resolve("keras-jax-jit"), **run_here)
    assert selection.skip_reason(keras_bert, backends.resolve("keras-torch-jit"),
                                 **run_here) is None


def test_the_cross_backend_rule_passes_rounding_and_fails_a_wrong_element():
    rng = np.random.default_rng(0)
    exact = rng.standard_normal((2, 16, 50))
    ref32 = exact.astype(np.float32).astype(np.float64)
    # another backend's float32 answer: a different summation order, a few ulps away
    other = (exact * (1 + 4e-7 * rng.standard_normal(exact.shape))).astype(np.float32)
    verdict = keras_common.compare([other.astype(np.float64)], [ref32], [exact], "fp32")
    assert verdict["passed"] and verdict["method"] == "allclose"
    wrong = other.astype(np.float64)
    wrong[1, 3, 7] = -wrong[1, 3, 7] + np.sign(wrong[1, 3, 7])  # one sign flip, far off
    verdict = keras_common.compare([wrong], [ref32], [exact], "fp32")
    assert not verdict["passed"] and verdict["method"] == "fp64_rmse"
    assert "RMSE vs float64" in keras_common.describe(verdict)
    assert not keras_common.compare([wrong[:1]], [ref32], [exact], "fp32")["passed"]
    nan = other.astype(np.float64)
    nan[0, 0, 0] = np.nan
    assert not keras_common.compare([nan], [ref32], [exact], "fp32")["passed"]


def test_what_compiled_the_step_is_read_from_the_functions_it_closes_over():
    def fake(module: str, name: str, **attrs):
        kind = type(name, (), {"__call__": lambda self: None, **attrs})
        kind.__module__, kind.__qualname__ = module, name
        return kind()

    def wrapping(inner):
        def iterator_step():  # Keras's Python loop around the compiled step
            return inner()
        return iterator_step

    assert keras_common.compiled_by(wrapping(fake("jaxlib._jax", "PjitFunction"))) == "jax.jit"
    xla = fake("tensorflow.python.eager.polymorphic_function", "Function", _jit_compile=True)
    assert keras_common.compiled_by(wrapping(wrapping(xla))) == "tf.function(jit_compile=True)"
    graph = fake("tensorflow.python.eager.polymorphic_function", "Function", _jit_compile=None)
    assert keras_common.compiled_by(wrapping(graph)) == "tf.function"
    dynamo = fake("builtins", "function", _torchdynamo_orig_callable=print)
    assert keras_common.compiled_by(wrapping(dynamo)) == "torch.compile"
    assert keras_common.compiled_by(wrapping(print)) == "none"


def _cell(workload: str, backend: str, median: float, status: str = "ok",
          baseline: float | None = None) -> dict:
    return {"workload": workload, "backend": backend, "mode": "infer", "device": "cpu",
            "precision": "fp32", "shape": {"batch": 1, "seq": 128, "tiny": 1},
            "status": status, "median_s": median, "baseline_median_s": baseline}


def test_the_benchmark_table_has_a_row_per_model_and_the_hf_model_beside_it():
    from lab.reports import keras_table

    cells = [_cell("keras/bert", "keras-tf-jit", 0.002, baseline=0.010),
             _cell("keras/bert", "keras-jax-jit", 0.001, baseline=0.030),
             _cell("keras/bert", "keras-torch-jit", 0.004, "fail_accuracy", 0.005),
             _cell("hf/bert", "torch-compile", 0.003), _cell("hf/bert", "torch-eager", 0.006),
             _cell("hf/gpt2", "torch-eager", 0.007), _cell("mlp", "torch-eager", 0.001)]
    [row] = keras_table.rows(cells)
    assert row["model"] == "keras/bert" and row["hf"] == "hf/bert"
    assert row["times"]["tf jit"] == pytest.approx(2.0)
    assert row["times"]["tf eager"] == pytest.approx(10.0)  # the jit cell's own eager side
    assert row["times"]["torch jit"] == "fail_accuracy"  # a wrong answer has no time
    assert row["times"]["hf torch-compile"] == pytest.approx(3.0)
    assert row["times"]["hf torch-eager"] == pytest.approx(6.0)
    text = keras_table.markdown([row])
    assert "| keras/bert | infer | tiny | 10 | 2 | 30 | 1 | 5 | fail_accuracy | 6 | 3 |" in text


# ---------------------------------------------------------------- long: keras_hub imported

LOAD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import keras
    from lab.workloads.suites import keras as suite, keras_fixture
    entry = suite.BY_NAME[sys.argv[1]]
    fixture = keras_fixture.Fixture(__import__("pathlib").Path(sys.argv[2]))
    arrays = fixture.arrays()
    model = suite.make_model(entry, True, arrays["images"].shape[1])
    model.load_weights(str(fixture.weights_path))
    out = model(suite.model_inputs(entry, arrays), training=False)
    np.savez(sys.argv[3], out=keras.ops.convert_to_numpy(out),
             **{f"w{i}": w for i, w in enumerate(model.get_weights())})
    print(json.dumps({"backend": keras.backend.backend()}))
""")


@pytest.mark.long
@pytest.mark.slow
def test_one_set_of_weights_gives_the_same_answer_on_three_keras_backends(tmp_path):
    """keras/vit tiny: the fixture made once (on TensorFlow), loaded on TensorFlow, JAX and
    PyTorch: the weights are bit-identical and the outputs agree within the rounding of the
    longest chain of sums (tests/numerics.py)."""
    from lab.workloads.suites import keras_fixture

    entry = keras_suite.BY_NAME["keras/vit"]
    shape = suites.get("keras/vit").shape_for("cpu", {"tiny": 1})
    env = {**os.environ, keras_fixture.FIXTURES_VAR: str(tmp_path / "fixtures"),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    os.environ[keras_fixture.FIXTURES_VAR] = env[keras_fixture.FIXTURES_VAR]
    try:
        fixture = keras_fixture.ensure(entry, shape, seed=0)
    finally:
        del os.environ[keras_fixture.FIXTURES_VAR]
    assert fixture.meta()["backend"] == "tensorflow"
    answers = {}
    for name in ("tensorflow", "jax", "torch"):
        out = tmp_path / f"{name}.npz"
        done = subprocess.run([sys.executable, "-c", LOAD, "keras/vit", str(fixture.folder),
                               str(out)], env={**env, "KERAS_BACKEND": name},
                              capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout.splitlines()[-1])["backend"] == name
        with np.load(out) as f:
            answers[name] = {k: f[k] for k in f.files}
    reference = fixture.outputs("float64")[0]
    args = entry.args(True)
    tokens, hidden, patch = (32 // args["patch_size"]) ** 2 + 1, args["hidden_dim"], \
        args["patch_size"]
    # the patch projection; per layer two norms, q/k/v, the scores (head_dim), softmax and
    # the weighted sum (tokens), the output projection, the MLP's two matmuls; norm and head
    per_layer = 2 * hidden + hidden + hidden // args["num_heads"] + 2 * tokens + hidden + \
        hidden + args["mlp_dim"]
    chain = patch * patch * 3 + args["num_layers"] * per_layer + 2 * hidden
    for name, got in answers.items():
        for key in got:
            if key.startswith("w"):  # bit-identical: one file, loaded
                np.testing.assert_array_equal(got[key], answers["tensorflow"][key])
        numerics.assert_close_scaled(got["out"], reference, dtype="float32",
                                     reduction_len=chain, what=f"{name} logits")


@pytest.mark.long
@pytest.mark.slow
def test_lab_run_suite_keras_tiny_runs_three_backends_eager_and_compiled(tmp_path):
    """The issue's acceptance: every model on TensorFlow, JAX and PyTorch, eager and
    jit_compile, each backend's output checked against the reference backend's."""
    out = tmp_path / "out"
    env = {**os.environ, "LAB_KERAS_FIXTURES": str(tmp_path / "fixtures")}
    done = subprocess.run([sys.executable, "-m", "lab.cli", "run", "--suite", "keras",
                           "--size", "tiny", "--repeats", "3", "--device", "cpu", "--out",
                           str(out)], capture_output=True, text=True, timeout=5400,
                          cwd=ROOT, env=env)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    [path] = list(out.glob("*/*/results.json"))
    shown = subprocess.run([sys.executable, "-m", "lab.cli", "show", str(path.parent),
                            "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    assert {r["backend"] for r in summary["suites"]} == set(keras_suite.BACKENDS)
    assert {r["model"] for r in summary["keras_table"]} == set(suites.names("keras"))
    from lab.store import reader

    cells = reader.cells(reader.load(path))
    assert {c["workload"] for c in cells} == set(suites.names("keras"))
    assert {c["backend"] for c in cells} == set(keras_suite.BACKENDS)
    compilers = {"keras-tf-jit": "tf.function(jit_compile=True)", "keras-jax-jit": "jax.jit",
                 "keras-torch-jit": "torch.compile"}
    for cell in cells:
        if cell["status"] != "ok":  # stated, with its reason, never dropped
            assert cell["reason"] and cell["status"] in done.stdout
            continue
        diagnostics = cell["diagnostics"]
        assert diagnostics["cross_backend"]["passed"]
        assert diagnostics["cross_backend"]["reference_backend"] == "tensorflow"
        assert diagnostics["step_compiled_by"] == compilers[cell["backend"]]
        assert cell["baseline_median_s"] > 0 and cell["median_s"] > 0
