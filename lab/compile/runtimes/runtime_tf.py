"""What every inference runtime fed from a Keras model shares: the task (infer only, Keras
workloads only), the tf-eager baseline, the float64 reference, and the model's signature.

The converted side and the tf-eager baseline share one Keras model and one set of input
tensors, so accuracy is judged on exactly the inputs that are timed, against the eager answer.
"""

from __future__ import annotations

import numpy as np

from lab.compile import flatten_outputs
from lab.compile import tf as tf_backend
from lab.compile.runtimes.conversion import ConvertedSide, refuse_autocast, require_infer
from lab.core.status import CellFailure, Status

BASE = tf_backend  # what this module does not define, the registry takes from there


def build_task(workload, shape, mode, device, precision, seed, backend_name: str):
    require_infer(mode)
    if "tf" not in workload.frameworks:
        raise CellFailure(Status.SKIPPED, f"{backend_name} converts Keras models; workload "
                                          f"{workload.name!r} has no TensorFlow version")
    task = tf_backend.build_task(workload, shape, mode, device, precision, seed, backend_name)
    import keras

    if not isinstance(task.model, keras.Model):
        raise CellFailure(Status.SKIPPED, f"{backend_name} converts Keras models; this "
                                          f"workload's TensorFlow model is not one")
    return task


def input_signature(task) -> list:
    """Fixed-shape TensorSpecs of the timed inputs: the artifact is built for this shape, as
    the eager and graph backends run it."""
    import tensorflow as tf

    return [tf.TensorSpec(x.shape, x.dtype, name=f"input_{i}") for i, x in enumerate(task.inputs)]


def build_model(task) -> None:
    """Keras builds a subclassed model's weights on its first call, and export needs them;
    one inference call does it (the eager baseline makes the same call anyway)."""
    if not task.model.built:
        task.model(*task.inputs, training=False)


class ConvertedTfSide(ConvertedSide):
    def __init__(self, task, mode: str):
        super().__init__(mode)
        self.task = task
        self.host_inputs = [x.numpy() for x in task.inputs]

    def outputs(self) -> list[np.ndarray]:
        return [np.asarray(y).astype(np.float64) if np.issubdtype(np.asarray(y).dtype,
                                                                  np.floating)
                else np.asarray(y) for y in flatten_outputs(self.converted()())]

    def reference_fp64(self) -> list[np.ndarray]:
        # the eager model rebuilt in float64 with the same weights, as tf-graph's accuracy uses
        return tf_backend.TfSide(self.task, self.mode, None).reference_fp64()


def eager_side(task, mode: str, option=None):
    return tf_backend.eager_side(task, mode, option)


def apply_precision(precision: str, device: str) -> dict:
    """The framework's switches, set as for its eager baseline (mixed precision refused)."""
    refuse_autocast(precision)
    return tf_backend.apply_precision(precision, device)
