"""Keras 3 backends: one keras_hub model definition run on TensorFlow, JAX or PyTorch, eager
(`keras-*-eager`: `model.compile(run_eagerly=True)`) or compiled (`keras-*-jit`:
`model.compile(jit_compile=True)`), the way a Keras user runs it: a step is
`model.predict_on_batch(x)` (infer) or `model.train_on_batch(x, y)` (train).

What `jit_compile=True` runs differs by backend, and each side reads it back from the model
(`diagnostics`): on TensorFlow the step is a `tf.function(jit_compile=True)` (XLA), on JAX a
`jax.jit` (XLA), on PyTorch Keras wraps its step function in `torch.compile` (Inductor; Keras's
own default, `jit_compile="auto"`, stays eager on torch). Keras drops `jit_compile` to False,
with a warning, for a model with a layer that does not support it: the read-back says so.

The backend is KERAS_BACKEND, read once when Keras is imported, so each backend is a module of
its own (lab.compile.keras_tf, keras_jax, keras_torch) that sets it in `process_env` and builds
on this one (`BASE`). Each side builds its own model from the task and loads the suite's shared
weights into it (lab.workloads.suites.keras_fixture), so the eager and compiled sides of a
cell start from identical parameters; the eager side also checks its output against the
reference backend's on those weights and inputs (`cross_backend`) before anything is timed.
"""

from __future__ import annotations

import contextlib

import numpy as np

from lab.compile import flatten_outputs
from lab.compile.protocol import SideBase, Support, in_precision
from lab.core import precision as precisions
from lab.core.status import CellFailure, Status

SGD_LR = 1e-3  # lab.compile.torch's: SGD without momentum


def _numpy(values) -> list[np.ndarray]:
    import keras

    out = []
    for t in flatten_outputs(values):
        a = np.asarray(keras.ops.convert_to_numpy(t))
        out.append(a.astype(np.float64) if a.dtype.kind == "f" else a)
    return out


@contextlib.contextmanager
def _float64_allowed():
    """JAX truncates float64 to float32 unless x64 is on; the other backends need nothing."""
    import keras

    if keras.backend.backend() != "jax":
        yield
        return
    import jax

    with jax.enable_x64(True):
        yield


def _rmse(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    diffs = np.concatenate([(x - y).ravel() for x, y in zip(a, b, strict=True)] or [[0.0]])
    return float(np.sqrt(np.mean(diffs ** 2)))


def compare(outputs: list[np.ndarray], ref32: list[np.ndarray], ref64: list | None,
            precision: str) -> dict:
    """`outputs` against another backend's `ref32` on the same weights and inputs, by the rule
    the cell judges a compiler with (lab.cell.accuracy): every element within the precision's
    rtol, and its atol times the output's largest |value| (a sum's rounding follows the size
    of what it sums); failing that, an RMSE against the float64 reference `ref64` within
    twice the reference backend's own RMSE against it (plus a tenth of the atol's scale)."""
    rtol, atol = precisions.tolerance(precision)
    if [np.shape(o) for o in outputs] != [np.shape(r) for r in ref32]:
        return {"passed": False, "method": "structure",
                "detail": f"output shapes {[np.shape(o) for o in outputs]} vs the reference "
                          f"backend's {[np.shape(r) for r in ref32]}"}
    scale = max((float(np.max(np.abs(r), initial=0.0)) for r in ref32), default=0.0)
    finite = all(np.all(np.isfinite(o)) for o in outputs)
    max_abs = max((float(np.max(np.abs(o - r), initial=0.0)) for o, r in
                   zip(outputs, ref32, strict=True)), default=0.0)
    close = finite and all(np.allclose(o, r, rtol=rtol, atol=atol * max(
        float(np.max(np.abs(r), initial=0.0)), 1e-30)) for o, r in zip(outputs, ref32,
                                                                      strict=True))
    verdict = {"passed": close, "method": "allclose", "rtol": rtol, "atol": atol,
               "atol_scale": scale, "max_abs_err": max_abs}
    if close or not finite or ref64 is None:
        if not finite:
            verdict["detail"] = "NaN or Inf in the output"
        return verdict
    err, err_ref = _rmse(outputs, ref64), _rmse(ref32, ref64)
    limit = 2.0 * err_ref + atol * scale / 10
    return {**verdict, "method": "fp64_rmse", "passed": err <= limit,
            "rmse_vs_fp64": err, "reference_rmse_vs_fp64": err_ref, "rmse_limit": limit}


def describe(verdict: dict) -> str:
    if verdict["method"] == "fp64_rmse":
        return (f"RMSE vs float64 {verdict['rmse_vs_fp64']:.3g} > limit "
                f"{verdict['rmse_limit']:.3g} (2x the reference backend's "
                f"{verdict['reference_rmse_vs_fp64']:.3g})")
    if verdict["method"] == "allclose":
        return (f"max abs error {verdict['max_abs_err']:.3g} (rtol {verdict['rtol']:g}, atol "
                f"{verdict['atol']:g} x max |reference| {verdict['atol_scale']:.3g})"
                + (f"; {verdict['detail']}" if verdict.get("detail") else ""))
    return verdict.get("detail", verdict["method"])


def cross_backend_check(task, eager_outputs: list[np.ndarray]) -> dict:
    """This backend's eager output against the reference backend's (the fixture's)."""
    import keras

    fixture = task.fixture
    meta = fixture.meta()
    verdict = compare(eager_outputs, fixture.outputs("float32"), fixture.outputs("float64"),
                      task.precision)
    return {**verdict, "backend": keras.backend.backend(), "reference_backend": meta["backend"],
            "float64_reference": meta["float64_reference"],
            **({"float64_left_out": meta["float64_left_out"]} if not meta["float64_reference"]
               else {})}


def _loss():
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _reachable(fn, depth: int = 5) -> list:
    """`fn` and what its closures and `__wrapped__` hold, a few levels down: Keras wraps the
    compiled step in plain Python functions (the iterator loop, the distribution wrapper)."""
    seen, found, todo = set(), [], [(fn, 0)]
    while todo:
        obj, level = todo.pop()
        if id(obj) in seen or level > depth:
            continue
        seen.add(id(obj))
        found.append(obj)
        cells = getattr(obj, "__closure__", None) or ()
        todo += [(c.cell_contents, level + 1) for c in cells
                 if c.cell_contents is not None and callable(c.cell_contents)]
        for attr in ("__wrapped__", "_torchdynamo_orig_callable", "_python_function"):
            inner = getattr(obj, attr, None)
            if inner is not None:
                todo.append((inner, level + 1))
    return found


def compiled_by(fn) -> str | None:
    """What really compiles a Keras step function, read from the objects it is made of:
    `tf.function(jit_compile=True)`, `tf.function` (a graph, no XLA), `jax.jit`,
    `torch.compile`, or `none` (Python calling the backend's ops one by one)."""
    if fn is None:
        return None
    kinds = set()
    for obj in _reachable(fn):
        name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        if hasattr(obj, "_torchdynamo_orig_callable") or name.startswith("torch._dynamo"):
            kinds.add("torch.compile")
        elif name.startswith("tensorflow") and hasattr(obj, "_jit_compile"):
            kinds.add("tf.function(jit_compile=True)" if obj._jit_compile else "tf.function")
        elif "PjitFunction" in name or name.startswith("jaxlib") or \
                name.startswith("jax._src.pjit"):
            kinds.add("jax.jit")
    for kind in ("torch.compile", "tf.function(jit_compile=True)", "jax.jit", "tf.function"):
        if kind in kinds:
            return kind
    return "none"


class KerasSide(SideBase):
    """One side of a Keras cell: its own model, compiled eager (`jit=False`) or with
    `jit_compile=True`."""

    def __init__(self, task, mode: str, jit: bool):
        import keras

        self.task, self.mode, self.jit = task, mode, jit
        self.model = task.make_model()
        self.model.compile(optimizer=keras.optimizers.SGD(learning_rate=SGD_LR), loss=_loss(),
                           jit_compile=jit, run_eagerly=not jit)
        self._graphs_after_first_call = None
        if keras.backend.backend() == "torch" and jit:
            import torch

            torch._dynamo.reset()
            torch._dynamo.utils.counters.clear()
        if not jit and task.cross_backend is None:
            # the model as it is, called directly: eager on every backend
            task.cross_backend = cross_backend_check(
                task, _numpy(self.model(task.inputs, training=False)))
            if not task.cross_backend["passed"]:
                raise CellFailure(Status.FAIL_ACCURACY, (
                    f"{task.cross_backend['backend']} backend's output differs from the "
                    f"{task.cross_backend['reference_backend']} backend's on the same weights "
                    f"and inputs: {describe(task.cross_backend)}"))

    def step(self):
        if self.mode == "infer":
            return self.model.predict_on_batch(self.task.inputs)  # numpy: the step is done
        return self.model.train_on_batch(self.task.inputs, self.task.target)

    def outputs(self) -> list[np.ndarray]:
        """Infer: the predicted outputs. Train: the loss at the current weights from the
        side's own (compiled or eager) test step, which updates nothing."""
        if self.mode == "infer":
            return _numpy(self.model.predict_on_batch(self.task.inputs))
        logs = self.model.test_on_batch(self.task.inputs, self.task.target, return_dict=True)
        return [np.asarray(logs["loss"], np.float64)]

    def reference_fp64(self) -> list[np.ndarray]:
        """Infer: the fixture's float64 outputs (the weights never change in infer). Train: the
        loss of a float64 copy of this side's current weights, eager, on this backend."""
        import keras

        if self.mode == "infer":
            ref = self.task.fixture.outputs("float64")
            if ref is None:
                raise RuntimeError(self.task.fixture.meta()["float64_left_out"])
            return ref
        with _float64_allowed():
            model64 = self.task.make_model(dtype="float64")
            model64.set_weights([w.astype(np.float64) if w.dtype.kind == "f" else w
                                 for w in self.model.get_weights()])
            inputs = keras.tree.map_structure(
                lambda t: keras.ops.cast(t, "float64")
                if "float" in str(keras.backend.standardize_dtype(t.dtype)) else t,
                self.task.inputs)
            loss = _loss()(self.task.target, model64(inputs, training=False))
            return [np.asarray(keras.ops.convert_to_numpy(loss), np.float64)]

    def mark_first_call_done(self) -> None:
        self._graphs_after_first_call = self._dynamo_graphs()

    def _dynamo_graphs(self) -> int | None:
        import keras

        if keras.backend.backend() != "torch" or not self.jit:
            return None
        import torch

        return int(torch._dynamo.utils.counters["stats"].get("unique_graphs", 0))

    def diagnostics(self) -> dict:
        import keras

        model = self.model
        fn = model.predict_function if self.mode == "infer" else model.train_function
        out = {"execution": "keras", "keras_backend": keras.backend.backend(),
               # read back: Keras lowers jit_compile to False for a model it cannot compile
               "jit_compile": bool(model.jit_compile), "run_eagerly": bool(model.run_eagerly),
               "step_compiled_by": compiled_by(fn), "weights_from": "keras fixture",
               "layer_policies": sorted({layer.dtype_policy.name
                                         for layer in model._flatten_layers()}),
               "variable_dtypes": sorted({str(v.dtype) for v in model.weights})}
        if self.task.cross_backend is not None:
            out["cross_backend"] = self.task.cross_backend
        graphs = self._dynamo_graphs()
        if graphs is not None:
            import torch

            from lab.workloads.llm.recompiles import dynamo_summary

            summary = dynamo_summary(torch._dynamo.utils.counters)
            first = self._graphs_after_first_call
            out.update(graph_count=summary["graphs"], graph_breaks=summary["graph_breaks"],
                       graph_break_reasons=summary["graph_break_reasons"],
                       recompiles=max(0, graphs - first) if first is not None else None)
        return out


def eager_side(task, mode: str, option=None) -> KerasSide:
    return KerasSide(task, mode, jit=False)


def jit_side(task, mode: str, option=None) -> KerasSide:
    return KerasSide(task, mode, jit=True)


def sides(backend: str) -> dict:
    """The two side factories of one Keras backend: `keras-BACKEND-eager`, `keras-BACKEND-jit`."""
    return {f"keras-{backend}-eager": eager_side, f"keras-{backend}-jit": jit_side}


PRECISIONS = ("fp32", "amp-bf16", "amp-fp16")


def build_task(workload, shape, mode, device, precision, seed, backend_name: str):
    precision = precisions.resolve(precision).value
    task = workload.build("keras", shape, mode, device,
                          precisions.policy(precision).storage_dtype, seed)
    return in_precision(task, precision, device)


def apply_precision(precision: str, device: str) -> dict:
    """Keras's global dtype policy, on every backend alike: float32, or mixed (float32
    variables, computation in bfloat16 or float16) for amp-*; other precisions are not
    Keras policies."""
    import keras

    name = precisions.resolve(precision).value
    if name not in PRECISIONS:
        raise CellFailure(Status.SKIPPED, f"{name}: the Keras suite runs {', '.join(PRECISIONS)}"
                                          f" (Keras dtype policies)")
    policy = precisions.policy(name)
    keras.mixed_precision.set_global_policy(
        f"mixed_{policy.compute_dtype}" if policy.autocast else "float32")
    return {"precision": name, "keras_backend": keras.backend.backend(),
            "keras_global_policy": keras.mixed_precision.global_policy().name}


def versions() -> dict:
    from importlib.metadata import version

    import keras

    return {"keras": keras.__version__, "keras_hub": version("keras-hub"),
            "keras_backend": keras.backend.backend()}


def support(device: str) -> Support:
    return Support.yes()


def keras_env() -> dict:
    return {"TF_CPP_MIN_LOG_LEVEL": "2"}  # keras_hub imports TensorFlow on every backend
