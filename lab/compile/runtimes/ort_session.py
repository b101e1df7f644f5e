"""ONNX Runtime as the lab runs it, whichever framework the ONNX model came from.

Execution providers: the CPU provider on the CPU; on CUDA the CUDA provider, or with the
`tensorrt` option the TensorRT provider, each only where this onnxruntime build has it (the
`onnxruntime` wheel has only the CPU one; `onnxruntime-gpu` adds CUDA and TensorRT). ONNX
Runtime places nodes it cannot run on a later provider in the list without failing, so the
providers the session actually got are read back and kept in the diagnostics.

Threads: the intra-op pool gets the cell's thread count, like every framework. Spinning is
off: ONNX Runtime's idle workers otherwise busy-wait after each call, taking the cores from
the eager baseline that runs next in the interleaved (ABBA) order, which would slow the
baseline and flatter the runtime.
"""

from __future__ import annotations

from lab.core.status import CellFailure, Status

OPTIONS = ("default", "tensorrt")


def providers(device: str, option: str | None) -> list:
    """The provider list for a session, or a skip naming what this build lacks."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if option == "tensorrt":
        if device != "cuda":
            raise CellFailure(Status.SKIPPED, "onnxruntime:tensorrt needs CUDA")
        wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    elif device == "cuda":
        wanted = ["CUDAExecutionProvider"]
    else:
        wanted = []
    missing = [p for p in wanted if p not in available]
    if missing:
        raise CellFailure(Status.SKIPPED, f"this onnxruntime build has no {missing[0]} "
                                          f"(has: {', '.join(available)})")
    return [*wanted, "CPUExecutionProvider"]


def session(model, device: str, option: str | None, threads: int):
    """An InferenceSession on `model` (a path or serialized bytes) with the lab's settings and
    the cell's thread count (as the framework that fed it was set to: passed, not kept)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # sequential execution: no inter-op pool is used
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, sess_options=options,
                                providers=providers(device, option))


class Runner:
    """One ONNX Runtime call on fixed inputs. On the CPU the feed is numpy views of the input
    tensors (no copy per call). On CUDA inputs are bound in place on the device with IO
    binding, so no host copy is timed; outputs stay on the device, and Run returns only when
    the device work is done (ONNX Runtime synchronises its stream by default)."""

    def __init__(self, sess, arrays: list, device: str, torch_inputs: tuple | None = None):
        self.sess, self.device = sess, device
        names = [i.name for i in sess.get_inputs()]
        if len(names) != len(arrays):
            raise CellFailure(Status.CONVERT_ERROR,
                              f"ONNX model takes {len(names)} inputs, the workload gives "
                              f"{len(arrays)}")
        self.output_names = [o.name for o in sess.get_outputs()]
        self.feed = dict(zip(names, arrays, strict=True))
        self.binding = None
        if device == "cuda" and torch_inputs is not None:
            self.binding = sess.io_binding()
            # bound by address: the (contiguous) tensors must outlive the binding
            self._bound = [t.contiguous() for t in torch_inputs]
            for name, tensor in zip(names, self._bound, strict=True):
                self.binding.bind_input(name, "cuda", tensor.device.index or 0,
                                        _numpy_dtype(tensor), tuple(tensor.shape),
                                        tensor.data_ptr())
            for name in self.output_names:
                self.binding.bind_output(name, "cuda")

    def __call__(self):
        if self.binding is None:
            return self.sess.run(self.output_names, self.feed)
        self.sess.run_with_iobinding(self.binding)
        return self.binding.get_outputs()

    def host_outputs(self) -> list:
        """This call's outputs as host numpy arrays, for accuracy."""
        if self.binding is None:
            return self.sess.run(self.output_names, self.feed)
        self.sess.run_with_iobinding(self.binding)
        return self.binding.copy_outputs_to_cpu()

    def diagnostics(self) -> dict:
        options = self.sess.get_session_options()
        return {"providers": self.sess.get_providers(),
                "intra_op_threads": options.intra_op_num_threads,
                "io_binding": self.binding is not None}


def _numpy_dtype(tensor):
    import numpy as np

    return np.dtype(str(tensor.dtype).removeprefix("torch."))


def version() -> str:
    import onnxruntime as ort

    return ort.__version__
