"""TensorFlow backends: eager execution, tf.function (graph) and tf.function with XLA.

The three sides share one Keras model, as the torch sides share one module: weights updated by
one side's train step are the weights the next side sees, so accuracy is judged on identical
parameters. Each side has its own optimizer. A train step is the whole step (forward, loss,
GradientTape backward, optimizer update) inside one function, so `tf-graph` and `tf-xla` compile
the optimizer too, as Keras's own `fit` does with `jit_compile=True`.

Threads: intra-op and inter-op pools are both set to the cell's thread count before any op
runs; XLA's CPU code runs on the intra-op pool, so `tf-xla` gets the same count.

Precision (lab.core.precision): `apply_precision` turns TF32 execution on or off (TensorFlow's
default is on) and sets Keras's global dtype policy. The workload builders build their models
under a float policy of their own (lab.workloads.weights.keras_floatx), so for mixed precision
`build_task` sets the mixed policy ("mixed_bfloat16", "mixed_float16": float32 variables,
computation in the low dtype) on every layer of the built model; the loss is computed in
float32. No LossScaleOptimizer: the other frameworks scale no loss either.
"""

from __future__ import annotations

import numpy as np

from lab.compile import flatten_outputs
from lab.compile.protocol import SideBase, Support, in_precision
from lab.core import precision as precisions
from lab.core.status import CellFailure, Status
from lab.workloads.base import TfTask

# Same optimizer hyperparameters as lab.compile.torch: SGD without momentum, lr 1e-3; Adam
# lr 1e-4 with torch's eps (Keras's default eps is 1e-7, which would change the update).
SGD_LR = 1e-3
ADAM_LR, ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 1e-4, 0.9, 0.999, 1e-8



def _optimizer(kind: str):
    import keras

    if kind == "adam":
        return keras.optimizers.Adam(learning_rate=ADAM_LR, beta_1=ADAM_BETA1,
                                     beta_2=ADAM_BETA2, epsilon=ADAM_EPS)
    return keras.optimizers.SGD(learning_rate=SGD_LR)


def _to_numpy(t) -> np.ndarray:
    import tensorflow as tf

    if t.dtype.is_floating:
        return tf.cast(t, tf.float64).numpy()
    return t.numpy()


class TfSide(SideBase):
    """One side of a TensorFlow cell. `jit` is None for eager, False for tf.function, True
    for tf.function(jit_compile=True)."""

    def __init__(self, task: TfTask, mode: str, jit: bool | None):
        import tensorflow as tf

        self.tf, self.task, self.mode, self.jit = tf, task, mode, jit
        model = task.model
        variables = model.trainable_variables
        self.optimizer = _optimizer(task.optimizer) if mode == "train" else None
        if self.optimizer is not None:
            # Keras creates its slot variables here, outside any tf.function trace
            self.optimizer.build(variables)

        def infer():
            return model(*task.inputs, training=False)

        mixed = precisions.policy(task.precision).autocast

        def loss_and_grads():
            with tf.GradientTape() as tape:
                out = model(*task.inputs, training=True)
                if mixed:  # the loss in float32, as in the other frameworks
                    out = tf.nest.map_structure(
                        lambda t: tf.cast(t, tf.float32) if t.dtype.is_floating else t, out)
                loss = task.loss_fn(out, task.target)
            return loss, tape.gradient(loss, variables)

        def train():
            loss, grads = loss_and_grads()
            self.optimizer.apply_gradients(zip(grads, variables, strict=True))
            return loss

        wrap = (lambda f: f) if jit is None else (lambda f: tf.function(f, jit_compile=jit))
        self._step = wrap(infer if mode == "infer" else train)
        self._infer, self._loss_and_grads = wrap(infer), wrap(loss_and_grads)

    def step(self):
        return self._step()

    @staticmethod
    def sync(out):
        # .numpy() copies the result to the host, which waits for the step to finish
        for t in flatten_outputs(out):
            t.numpy()
        return out

    def outputs(self) -> list[np.ndarray]:
        """Infer outputs, or train loss and every gradient, computed by this side's own
        function; BatchNorm moving statistics touched by a training forward are restored."""
        return _outputs(self.task, self.mode, self._infer, self._loss_and_grads)

    def reference_fp64(self) -> list[np.ndarray]:
        import tensorflow as tf

        task = self.task
        if task.rebuild is None:
            raise RuntimeError("this TensorFlow workload has no float64 rebuild")
        task64 = task.rebuild("float64")
        for dst, src in zip(task64.model.weights, task.model.weights, strict=True):
            dst.assign(tf.cast(src, tf.float64))
        side = TfSide(task64, self.mode, None)
        return side.outputs()

    def diagnostics(self) -> dict:
        precision = _model_precision(self.task)
        if self.jit is None:
            return {"execution": "eager", "weights_from": self.task.weights_source,
                    "precision": precision}
        traced = getattr(self._step, "experimental_get_tracing_count", lambda: None)()
        return {"execution": "xla" if self.jit else "graph", "jit_compile": self.jit,
                "weights_from": self.task.weights_source, "precision": precision,
                # a trace after the first is a retrace: the compiled graph was rebuilt
                "trace_count": traced,
                "retraces": max(0, traced - 1) if traced else None}


def _layers(model) -> list:
    """Every Keras layer of a model, itself included; [] for a model that is no Keras layer."""
    flatten = getattr(model, "_flatten_layers", None)  # Keras's own recursive walk
    return list(flatten(include_self=True, recursive=True)) if flatten else []


def _model_precision(task: TfTask) -> dict:
    """The dtype policies the model's layers really have and the dtypes they store."""
    layers = _layers(task.model)
    return {"layer_policies": sorted({layer.dtype_policy.name for layer in layers}),
            "variable_dtypes": sorted({str(v.dtype) for v in task.model.weights}),
            "input_dtypes": sorted({t.dtype.name for t in task.inputs
                                    if getattr(t, "dtype", None) is not None})}


def _outputs(task: TfTask, mode: str, infer, loss_and_grads) -> list[np.ndarray]:
    if mode == "infer":
        return [_to_numpy(t) for t in flatten_outputs(infer())]
    frozen = [v.numpy() for v in task.model.non_trainable_variables]
    loss, grads = loss_and_grads()
    result = [_to_numpy(loss)] + [_to_numpy(g) for g in grads if g is not None]
    for v, value in zip(task.model.non_trainable_variables, frozen, strict=True):
        v.assign(value)
    return result


def eager_side(task: TfTask, mode: str, option=None) -> TfSide:
    return TfSide(task, mode, None)


def graph_side(task: TfTask, mode: str, option=None) -> TfSide:
    return TfSide(task, mode, False)


def xla_side(task: TfTask, mode: str, option=None) -> TfSide:
    return TfSide(task, mode, True)


SIDES = {"tf-eager": eager_side, "tf-graph": graph_side, "tf-xla": xla_side}


def build_task(workload, shape, mode, device, precision, seed, backend_name: str):
    import tensorflow as tf

    precision = precisions.resolve(precision).value
    with tf.device("/GPU:0" if device == "cuda" else "/CPU:0"):
        task = workload.build("tf", shape, mode, device,
                              precisions.policy(precision).storage_dtype, seed)
    in_precision(task, precision, device)
    if precisions.policy(precision).autocast:
        layers = _layers(task.model)
        if not layers:
            raise CellFailure(Status.SKIPPED, f"{precision}: the TensorFlow model "
                                              f"is not a Keras layer (no dtype policy to set)")
        mixed = _mixed_policy_name(precision)
        for layer in layers:
            layer.dtype_policy = mixed  # float32 variables stay; compute in the low dtype
    return task


def _mixed_policy_name(precision: str) -> str:
    return f"mixed_{precisions.policy(precision).compute_dtype}"


def support(device: str) -> Support:
    import tensorflow as tf

    if device == "cuda" and not tf.config.list_physical_devices("GPU"):
        return Support.no("no GPU visible to TensorFlow (tensorflow-cpu, or no CUDA build)")
    return Support.yes()


def set_threads(threads: int) -> None:
    import tensorflow as tf

    # Must run before the first op: TensorFlow sizes its pools once, at context creation.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def versions() -> dict:
    import keras
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__,
            "cuda": tf.sysconfig.get_build_info().get("cuda_version"),
            # what set_threads applied, as TensorFlow reports it
            "threads": {"intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()}}


def apply_precision(precision: str, device: str) -> dict:
    """TF32 on only where the precision allows it (TensorFlow enables it by default); Keras's
    global policy mixed for mixed precision, float32 otherwise (the builders set the storage
    dtype themselves)."""
    import keras
    import tensorflow as tf

    policy = precisions.policy(precision)
    tf.config.experimental.enable_tensor_float_32_execution(policy.tf32)
    keras.mixed_precision.set_global_policy(
        _mixed_policy_name(precision) if policy.autocast else "float32")
    return precision_settings(precisions.resolve(precision).value)


def precision_settings(precision: str) -> dict:
    """The precision switches as TensorFlow and Keras report them."""
    import keras
    import tensorflow as tf

    return {"precision": precision,
            "tensor_float_32_execution": tf.config.experimental.tensor_float_32_execution_enabled(),
            "keras_global_policy": keras.mixed_precision.global_policy().name,
            "gpus_visible": len(tf.config.list_physical_devices("GPU"))}


def process_env(threads: int, device: str) -> dict:
    """Set before TensorFlow loads: Keras on the TF backend, quiet C++ logs, and on a GPU
    grow memory as needed instead of taking the whole card."""
    return {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_FORCE_GPU_ALLOW_GROWTH": "true"}


def cache_env(cache_dir: str) -> dict:
    """XLA clusters compiled by `jit_compile=True` persist in `cache_dir` (TensorFlow's own
    persistent XLA cache), so the second cell process measures a warm compile. tf.function
    without XLA has no persistent cache: its tracing and graph optimisation repeat in every
    process, so for `tf-graph` cold and warm measure the same work."""
    import os

    flags = os.environ.get("TF_XLA_FLAGS", "")
    return {"TF_XLA_FLAGS": f"{flags} --tf_xla_persistent_cache_directory={cache_dir}".strip()}
