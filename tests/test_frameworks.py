"""TensorFlow and JAX backends: the three frameworks compute the same thing, XLA failures and
missing frameworks end cells with an honest status, and threads are set and recorded."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from numerics import assert_close_scaled

from lab.cell.spec import CellSpec
from lab.workloads import get

pytest.importorskip("torch")
jax = pytest.importorskip("jax")
HAVE_TF = importlib.util.find_spec("tensorflow") is not None

from xla_cases import TINY, _in_torch_layout, tf_results  # noqa: E402

from lab.compile import jax as lab_jax  # noqa: E402


def _reduction_len(workload: str, mode: str) -> int:
    """float32, different kernels per framework (oneDNN, Eigen, XLA): sums reassociate. The
    reduction lengths along the longest chain of TINY[workload], summed (tests/numerics.py):
    the MLP's two matmuls (784, 128); the transformer block's two layer norms, qkv, output
    projection and MLP up-projection (c each), attention scores (c / heads), softmax and the
    weighted sum (seq), MLP down-projection (4c). Training adds the loss (cross-entropy's
    log-sum-exp over 10 classes and mean over the batch; MSE's mean over every element), and
    the backward runs the same chain transposed."""
    shape = TINY[workload]
    if workload == "mlp":
        forward, loss = 784 + 128, 10 + shape["batch"]
    else:
        c = shape["d_model"]
        forward = 9 * c + c // shape["heads"] + 2 * shape["seq"]
        loss = shape["batch"] * shape["seq"] * c
    return forward if mode == "infer" else 2 * (forward + loss)


def _torch_outputs(workload: str, mode: str) -> dict[str, np.ndarray]:
    """Torch's infer output, or its train loss and gradients by parameter name."""
    import torch

    task = get(workload).build("torch", TINY[workload], mode, "cpu", "float32", 0)
    if mode == "infer":
        with torch.no_grad():
            return {"out": task.model(*task.inputs).numpy()}
    loss = task.loss_fn(task.model(*task.inputs), task.target)
    loss.backward()
    return {"loss": loss.detach().numpy(),
            **{n: p.grad.numpy() for n, p in task.model.named_parameters()}}


def _tf_outputs(workload: str, mode: str, backend: str) -> dict:
    prefix = f"{workload}|{mode}|{backend}|"
    return {k[len(prefix):]: v for k, v in tf_results().items() if k.startswith(prefix)}


def _jax_outputs(workload: str, mode: str, jit: bool) -> dict:
    task = get(workload).build("jax", TINY[workload], mode, "cpu", "float32", 0)
    values = lab_jax.JaxSide(task, mode, jit).outputs()
    if mode == "infer":
        return {"out": values[0]}
    names = sorted(task.params)  # jax.tree_util orders dict leaves by key
    return {"loss": values[0], **{n: _in_torch_layout(n, v) for n, v in zip(names, values[1:],
                                                                             strict=True)}}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["infer", "train"])
@pytest.mark.parametrize("workload", ["mlp", "transformer"])
def test_three_frameworks_compute_the_same_outputs(workload, mode):
    """Copied weights and data: torch, TF (eager, tf.function, XLA) and JAX (op-by-op, jit)
    agree on outputs, losses and every gradient."""
    reference = _torch_outputs(workload, mode)
    candidates = {"jax-eager": _jax_outputs(workload, mode, False),
                  "jax-jit": _jax_outputs(workload, mode, True)}
    if HAVE_TF:
        for backend in ("tf-eager", "tf-graph", "tf-xla"):
            candidates[backend] = _tf_outputs(workload, mode, backend)
    for backend, got in candidates.items():
        assert sorted(got) == sorted(reference), backend
        for key, want in reference.items():
            assert_close_scaled(got[key], want, dtype="float32",
                                reduction_len=_reduction_len(workload, mode),
                                what=f"{workload} {mode} {backend}: {key}")


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_TF, reason="tensorflow not installed")
def test_keras_mlp_is_the_seeds_sequential():
    got = tf_results()
    assert got["keras_mlp_units"].tolist() == [128, 10]
    assert got["keras_mlp_relu"].tolist() == [True, False]
    assert int(got["keras_mlp_params"]) == 784 * 128 + 128 + 128 * 10 + 10


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_TF, reason="tensorflow not installed")
def test_tf_threads_are_set_before_the_first_op():
    """The child sets one thread before any op (as a cell does) and every later op ran."""
    assert tf_results()["tf_threads"].tolist() == [1, 1]


def test_jax_adam_matches_torch_adam():
    import torch

    rng = np.random.default_rng(0)
    p0, grads = rng.standard_normal((3, 5)).astype(np.float32), [
        rng.standard_normal((3, 5)).astype(np.float32) for _ in range(3)]
    param = torch.nn.Parameter(torch.tensor(p0))
    opt = torch.optim.Adam([param], lr=lab_jax.ADAM_LR)
    init, update = lab_jax.optimizer("adam")
    params, state = {"w": jax.numpy.asarray(p0)}, None
    state = init(params)
    for g in grads:
        param.grad = torch.tensor(g)
        opt.step()
        params, state = update(params, {"w": jax.numpy.asarray(g)}, state)
    # elementwise, no sums: each step rounds the parameter once; the update's own roundings
    # are relative to the learning rate (1e-4), far below the parameters' scale: one more
    assert_close_scaled(params["w"], param, dtype="float32", reduction_len=len(grads) + 1,
                        what="parameters after 3 Adam steps")
    assert not np.allclose(np.asarray(params["w"]), p0)  # it did move


def _spec(workload: str, backend: str, threads: int = 1, repeats: int = 3) -> CellSpec:
    return CellSpec(workload=workload, backend=backend, option=None, mode="infer",
                    shape=get(workload).default_shape("cpu") if workload in TINY else {},
                    precision="fp32", device="cpu", threads=threads, repeats=repeats,
                    warmup_steps=1, warmup_seconds=0.0)


@pytest.mark.slow
@pytest.mark.parametrize("workload, backend, message", [
    ("xla_unsupported_tf", "tf-xla", "EagerPyFunc"),
    ("xla_unsupported_jax", "jax-jit", "Tracer"),
])
def test_xla_compile_failure_is_compile_error(workload, backend, message):
    from xla_cases import run_cell

    result = run_cell(_spec(workload, backend))
    assert result.status == "compile_error", result
    assert message in result.reason and "\n" not in result.reason


@pytest.mark.parametrize("backend, package", [("tf-xla", "tensorflow"), ("jax-jit", "jax")])
def test_missing_framework_is_skipped(monkeypatch, backend, package):
    from lab.cell import main as cell

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == package else real_find_spec(name, *a))
    result = cell.run(_spec("mlp", backend))
    assert (result.status, result.reason) == ("skipped", f"{package} not installed")


@pytest.mark.slow
@pytest.mark.parametrize("backend, key", [("jax-jit", "xla_cpu_threads")])
def test_compiled_cell_runs_cold_and_warm_with_threads_recorded(backend, key):
    """Through the runner: ok, same-answer accuracy, one thread recorded, and a second
    process on the same compile cache timing the warm first call."""
    from lab.cell.launch import run_cell

    outcome = run_cell(_spec("mlp", backend, threads=1), backend, timeout_s=300)
    result = outcome.result
    assert outcome.status == "ok", result
    assert result.accuracy["passed"]
    assert result.versions["threads"][key] == 1
    assert result.diagnostics["weights_from"] == "torch"
    assert len(result.samples_s) == 3 and len(result.baseline_samples_s) == 3
    assert outcome.warm.status == "ok" and outcome.warm.first_call_s > 0
