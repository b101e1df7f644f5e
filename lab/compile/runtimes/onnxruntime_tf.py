"""onnxruntime-tf: a Keras model converted to ONNX by tf2onnx and run by ONNX Runtime, with
tf-eager on the same model and inputs as its baseline. The torch route is `onnxruntime`.

tf2onnx converts a `tf.function` of the model's inference call at the timed input shape
(`tf2onnx.convert.from_function`); its `from_keras` entry point fails on Keras 3 models
(KeyError on a Keras tensor name, tf2onnx 1.17 with Keras 3.15), so it is not used.
"""

from __future__ import annotations

from lab.compile.protocol import Support
from lab.compile.runtimes import ort_session, runtime_tf
from lab.compile.runtimes.conversion import Conversion, timed_step
from lab.compile.runtimes.runtime_tf import (
    ConvertedTfSide,
    build_model,
    eager_side,
    input_signature,
)
from lab.compile.tf import versions as tf_versions
from lab.core.status import Status

BASE = runtime_tf  # what this module does not define, the registry takes from there


class OnnxTfSide(ConvertedTfSide):
    def __init__(self, task, mode: str, option: str | None):
        super().__init__(task, mode)
        self.option = option or "default"
        self.device = "cpu"  # support() refuses CUDA for this route
        self.runner: ort_session.Runner | None = None
        self.opset: int | None = None

    def convert(self):
        import tensorflow as tf
        import tf2onnx

        model = self.task.model
        build_model(self.task)
        call = tf.function(lambda *xs: model(*xs, training=False))
        with timed_step("tf2onnx.convert.from_function") as converted:
            proto, _ = tf2onnx.convert.from_function(call, input_signature=input_signature(
                self.task))
            serialized = proto.SerializeToString()
        self.opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                         default=None)
        with timed_step("onnxruntime.InferenceSession", Status.CONVERT_ERROR) as loaded:
            sess = ort_session.session(serialized, self.device, self.option,
                                       tf.config.threading.get_intra_op_parallelism_threads())
        # ONNX Runtime reads host arrays; the IO binding path is for torch CUDA tensors
        self.runner = ort_session.Runner(sess, self.host_inputs, self.device)
        conversion = Conversion(
            converter=f"tf2onnx.convert.from_function {tf2onnx.__version__}",
            convert_s=converted.seconds, load_s=loaded.seconds,
            artifact_bytes=len(serialized), artifact_format=".onnx",
            warnings=converted.warnings + loaded.warnings)
        return self.runner, conversion

    def outputs(self):
        import numpy as np

        self.converted()
        return [np.asarray(a, np.float64) for a in self.runner.host_outputs()]

    def runtime_diagnostics(self) -> dict:
        if self.runner is None:
            return {}
        return {**self.runner.diagnostics(), "opset": self.opset}


def onnx_tf_side(task, mode: str, option: str | None) -> OnnxTfSide:
    return OnnxTfSide(task, mode, option)


SIDES = {"tf-eager": eager_side, "onnxruntime-tf": onnx_tf_side}


def support(device: str) -> Support:
    if device == "cuda":
        return Support.no("onnxruntime-tf runs on the CPU here (the CUDA route binds torch "
                          "tensors; use onnxruntime)")
    try:  # tf2onnx pins against TensorFlow, numpy and protobuf: say so if it cannot load
        import tf2onnx  # noqa: F401
    except Exception as exc:
        return Support.no(f"tf2onnx cannot load here: {type(exc).__name__}: {str(exc)[:200]}")
    return Support.yes()


def versions() -> dict:
    import onnx
    import tf2onnx

    return {**tf_versions(), "onnxruntime": ort_session.version(), "onnx": onnx.__version__,
            "tf2onnx": tf2onnx.__version__}


def cache_env(cache_dir: str) -> dict:
    return {}  # tf2onnx and ONNX Runtime keep nothing on disk between processes
