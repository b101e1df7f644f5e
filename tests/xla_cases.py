"""Test helpers for the TensorFlow and JAX backends: workloads that XLA cannot compile, and a
launcher that runs a cell through the real cell process with those workloads registered.

Each workload is written so that its eager backend runs it and only the compiler fails:
`tf.py_function` calls back into Python, which XLA has no kernel for; a Python `if` on a traced
value has no concrete value to branch on under `jax.jit`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from lab.cell.spec import CellResult
from lab.workloads.base import JaxTask, TfTask, Workload

HERE = Path(__file__).resolve().parent


class _PyFunctionModel:
    """A model whose forward calls back into Python through tf.py_function."""

    trainable_variables: list = []
    non_trainable_variables: list = []

    def __call__(self, x, training=False):
        import tensorflow as tf

        return tf.py_function(lambda a: a * 2.0, [x], tf.float32)


def _build_tf_py_function(shape, mode, device, dtype, seed) -> TfTask:
    import tensorflow as tf

    return TfTask(model=_PyFunctionModel(), inputs=(tf.ones((4,), tf.float32),))


def _python_branch(params, x):
    return x * 2.0 if x.sum() > 0 else x  # needs a concrete value: fails under jit


def _build_jax_python_branch(shape, mode, device, dtype, seed) -> JaxTask:
    import jax.numpy as jnp

    return JaxTask(apply=_python_branch, params={}, inputs=(jnp.ones((4,), jnp.float32),))


WORKLOADS = {
    "xla_unsupported_tf": Workload("xla_unsupported_tf", "tf.py_function inside the step",
                                   lambda device: {}, lambda shape, mode: 1.0,
                                   lambda shape: 1, "steps/s", {"tf": _build_tf_py_function}),
    "xla_unsupported_jax": Workload("xla_unsupported_jax", "Python branch on a traced value",
                                    lambda device: {}, lambda shape, mode: 1.0,
                                    lambda shape: 1, "steps/s",
                                    {"jax": _build_jax_python_branch}),
}


def register() -> None:
    """Make the cases resolvable by name in this process (the cell subprocess calls it)."""
    from lab import workloads

    for name in WORKLOADS:
        workloads._BUILTIN[name] = f"{__name__}_{name}"
        module = type(sys)(f"{__name__}_{name}")
        module.WORKLOAD = WORKLOADS[name]
        sys.modules[module.__name__] = module


def run_cell(spec, timeout_s: float = 180.0):
    """lab.cell.main.main in a fresh process with the runner's environment, the cases registered."""
    from lab.cell.launch import cell_env

    env = cell_env(spec, None)
    env["PYTHONPATH"] = f"{HERE}:{env['PYTHONPATH']}"
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, result_path = Path(tmp, "spec.json"), Path(tmp, "result.json")
        spec_path.write_text(spec.to_json())
        code = ("import sys, xla_cases; xla_cases.register(); from lab.cell.main import main; "
                "sys.exit(main(sys.argv[1:]))")
        proc = subprocess.run([sys.executable, "-c", code, str(spec_path), str(result_path)],
                              env=env, capture_output=True, text=True, timeout=timeout_s)
        if not result_path.is_file():
            raise AssertionError(f"cell process wrote no result:\n{proc.stdout[-2000:]}"
                                 f"\n{proc.stderr[-2000:]}")
        return CellResult.from_dict(json.loads(result_path.read_text()))


# ---------------------------------------------------------------- TensorFlow, out of process
# TensorFlow must not load in the test process: with TensorFlow loaded first, a later import
# of triton (torch.compile's tests) aborts the process ("LLVM ERROR: inconsistency in
# registered CommandLine options"). So TensorFlow's answers are computed in a child process.

TINY = {"mlp": {"batch": 4},
        "transformer": {"batch": 2, "seq": 8, "d_model": 32, "heads": 4}}


def _in_torch_layout(name: str, value):
    # TF and JAX keep linear weights (in, out); torch keeps (out, in)
    return value.T if value.ndim == 2 and name.endswith(".weight") else value


def _dump_tf(path: str) -> None:
    """Child process: every TF side's outputs (torch names and layouts) and Keras facts."""
    import numpy as np

    from lab.compile import tf as lab_tf
    from lab.compile.tf import TfSide
    from lab.workloads import get
    from lab.workloads.mlp import keras_sequential
    from lab.workloads.resnet import keras_resnet50

    lab_tf.set_threads(1)  # as the cell process does, before the first op
    threads = lab_tf.versions()["threads"]
    out = {"tf_threads": np.array([threads["intra_op_threads"], threads["inter_op_threads"]])}
    for workload, shape in TINY.items():
        torch_names = list(get(workload).build("torch", shape, "train", "cpu", "float32", 0)
                           .model.state_dict())
        for mode in ("infer", "train"):
            for label, jit in (("tf-eager", None), ("tf-graph", False), ("tf-xla", True)):
                task = get(workload).build("tf", shape, mode, "cpu", "float32", 0)
                values = TfSide(task, mode, jit).outputs()
                keys = ["out"] if mode == "infer" else ["loss", *torch_names]
                for key, value in zip(keys, values, strict=True):
                    out[f"{workload}|{mode}|{label}|{key}"] = _in_torch_layout(key, value)
    mlp = keras_sequential()
    out["keras_mlp_units"] = np.array([layer.units for layer in mlp.layers])
    out["keras_mlp_relu"] = np.array([layer.activation.__name__ == "relu"
                                      for layer in mlp.layers])
    out["keras_mlp_params"] = np.array(mlp.count_params())
    keras_resnet = keras_resnet50(32)
    out["keras_resnet50_params"] = np.array(keras_resnet.count_params())
    out["keras_resnet50_trainable"] = np.array(sum(int(np.prod(v.shape))
                                                   for v in keras_resnet.trainable_variables))
    np.savez(path, **out)


_TF_CACHE: dict = {}


def tf_results(timeout_s: float = 600.0) -> dict:
    """The child's results, computed once per pytest run."""
    if "results" not in _TF_CACHE:
        import numpy as np

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "tf.npz")
            env = {**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                   "KERAS_BACKEND": "tensorflow",
                   "PYTHONPATH": f"{HERE}:{HERE.parent}"}
            proc = subprocess.run([sys.executable, "-c",
                                   f"import xla_cases; xla_cases._dump_tf({str(path)!r})"],
                                  env=env, capture_output=True, text=True, timeout=timeout_s)
            if proc.returncode != 0:
                raise AssertionError(f"TensorFlow child failed:\n{proc.stderr[-3000:]}")
            with np.load(path) as data:
                _TF_CACHE["results"] = {k: data[k] for k in data.files}
    return _TF_CACHE["results"]
