"""litert: a Keras model converted by TensorFlow's TFLite converter and run by LiteRT's
interpreter (`ai_edge_litert.interpreter.Interpreter`), the edge runtime TensorFlow Lite became.
Its baseline is tf-eager on the same model and inputs.

Conversion: the model is exported as a SavedModel at the timed input shape (Keras's
`model.export(format="tf_saved_model")`), then `tf.lite.TFLiteConverter.from_saved_model`.
(`from_concrete_functions` on a Keras 3 model gave a 2.5 kB flatbuffer without its weights that
computed NaN, with TensorFlow 2.21; the SavedModel route embeds them.)

Options: `float32` (default) keeps the model's precision. `int8` is dynamic-range quantization
(`optimizations=[tf.lite.Optimize.DEFAULT]`): int8 weights, activations quantized on the fly.
It changes the answer by design, so its accuracy is a separate question with a looser, stated
tolerance (INT8_TOLERANCE): its own cell, its own label (`litert:int8`), and its error against
float32 eager on the timed inputs in the diagnostics (`quantization_error`).

Threads: the interpreter gets the cell's thread count; LiteRT applies its XNNPACK delegate on
the CPU by default, which is what a user gets.
"""

from __future__ import annotations

import os

import numpy as np

from lab.compile.protocol import Support
from lab.compile.runtimes import runtime_tf
from lab.compile.runtimes.conversion import Conversion, artifact_folder, timed_step
from lab.compile.runtimes.runtime_tf import (
    ConvertedTfSide,
    build_model,
    eager_side,
    input_signature,
)
from lab.compile.tf import versions as tf_versions
from lab.core.status import CellFailure, Status

BASE = runtime_tf  # what this module does not define, the registry takes from there

OPTIONS = ("float32", "int8")
# Dynamic-range int8 against float32 eager: elementwise |int8 - eager| <= atol + rtol*|eager|.
# Measured on the lab's workloads (float32 inputs, the timed shapes of the tests), the largest
# errors were 5.7e-3 (mlp, outputs up to 0.67), 8.7e-3 (transformer) and 3.6e-3 (resnet50 at
# 32x32): 5e-2 leaves room for other seeds and shapes while still catching a broken
# conversion (wrong weights give errors of the size of the outputs).
INT8_TOLERANCE = {"rtol": 5e-2, "atol": 5e-2}



class LiteRtSide(ConvertedTfSide):
    def __init__(self, task, mode: str, option: str | None):
        super().__init__(task, mode)
        self.precision = option or "float32"
        if self.precision not in OPTIONS:
            raise ValueError(f"litert has no option {self.precision!r}; valid: "
                             f"{', '.join(OPTIONS)}")
        self._folder = artifact_folder("lab-litert-")
        self.interpreter = None
        self._quantization_error: dict | None = None

    @property
    def accuracy_tolerance(self) -> dict | None:
        """The stated tolerance this side is judged with, where it is not the dtype's."""
        return dict(INT8_TOLERANCE, why="dynamic-range int8 quantization") \
            if self.precision == "int8" else None

    def convert(self):
        import tensorflow as tf
        from ai_edge_litert.interpreter import Interpreter

        model = self.task.model
        build_model(self.task)
        saved = os.path.join(self._folder, "saved_model")
        with timed_step("keras export + tf.lite.TFLiteConverter") as converted:
            model.export(saved, format="tf_saved_model",
                         input_signature=input_signature(self.task), verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(saved)
            if self.precision == "int8":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            flatbuffer = converter.convert()
        with timed_step("ai_edge_litert Interpreter", Status.CONVERT_ERROR) as loaded:
            interpreter = Interpreter(model_content=flatbuffer,
                                      num_threads=_tf_threads())
            interpreter.allocate_tensors()
        # inputs in signature order (input_0, input_1, ...), whatever their tensor indices
        inputs = sorted(interpreter.get_input_details(), key=_signature_position)
        outputs = interpreter.get_output_details()
        if len(inputs) != len(self.host_inputs):
            raise CellFailure(Status.CONVERT_ERROR,
                              f"the .tflite model takes {len(inputs)} inputs, the workload "
                              f"gives {len(self.host_inputs)}")
        self.interpreter = interpreter
        input_indices = [d["index"] for d in inputs]
        output_indices = [d["index"] for d in outputs]
        feeds = list(zip(input_indices, self.host_inputs, strict=True))

        def run():
            for index, array in feeds:
                interpreter.set_tensor(index, array)
            interpreter.invoke()
            return [interpreter.get_tensor(i) for i in output_indices]

        conversion = Conversion(
            converter=f"tf.lite.TFLiteConverter {tf.__version__} ({self.precision})",
            convert_s=converted.seconds, load_s=loaded.seconds,
            artifact_bytes=len(flatbuffer), artifact_format=f".tflite ({self.precision})",
            warnings=converted.warnings + loaded.warnings)
        return run, conversion

    def quantization_error(self) -> dict:
        """The converted model against float32 eager on the timed inputs: the size of the
        change quantization made (also computed for float32, where it should be ~1e-7)."""
        if self._quantization_error is None:
            converted = self.outputs()
            eager = [np.asarray(y, np.float64) for y in
                     _flat(self.task.model(*self.task.inputs, training=False))]
            diff = np.concatenate([(c - e).ravel() for c, e in zip(converted, eager,
                                                                   strict=True)])
            scale = np.concatenate([e.ravel() for e in eager])
            self._quantization_error = {
                "max_abs_err": float(np.max(np.abs(diff), initial=0.0)),
                # RMSE relative to the eager output's RMS: comparable across workloads
                "relative_rmse": float(np.sqrt(np.mean(diff ** 2)) /
                                       max(np.sqrt(np.mean(scale ** 2)), 1e-30)),
            }
        return self._quantization_error

    def runtime_diagnostics(self) -> dict:
        if self.interpreter is None:
            return {}
        return {"precision": self.precision, "threads": _tf_threads(),
                "accuracy_tolerance": self.accuracy_tolerance,
                "quantization_error": self.quantization_error()}


def _flat(out) -> list:
    from lab.compile import flatten_outputs

    return [t.numpy() for t in flatten_outputs(out)]


def _signature_position(detail: dict) -> int:
    """input_signature names the inputs input_<i>; the converter keeps the name in the
    tensor's ("serving_default_input_3:0")."""
    import re

    found = re.search(r"input_(\d+)", detail["name"])
    return int(found.group(1)) if found else detail["index"]


def litert_side(task, mode: str, option: str | None) -> LiteRtSide:
    return LiteRtSide(task, mode, option)


SIDES = {"tf-eager": eager_side, "litert": litert_side}


def support(device: str) -> Support:
    if device == "cuda":
        return Support.no("LiteRT runs on the CPU here (its GPU delegate is for mobile GPUs)")
    return Support.yes()


def _tf_threads() -> int | None:
    """The cell's thread count as TensorFlow (set first, by the base's set_threads) holds it:
    the interpreter gets the same. None where none was set (TensorFlow says 0): the
    interpreter's default, as TensorFlow's."""
    import tensorflow as tf

    return tf.config.threading.get_intra_op_parallelism_threads() or None


def versions() -> dict:
    import ai_edge_litert

    return {**tf_versions(), "ai_edge_litert": getattr(ai_edge_litert, "__version__", None)}


def cache_env(cache_dir: str) -> dict:
    return {}  # the converter and the interpreter keep nothing on disk between processes
