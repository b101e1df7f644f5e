"""The Keras suite's reference: a fixture (lab.workloads.suites.keras_fixture) made in a
process of its own on the reference backend: the model built with random weights from the
seed, saved, its inputs, and its outputs on them in float32 and float64.

    KERAS_BACKEND=tensorflow python -m lab.workloads.suites.keras_reference MODEL SHAPE SEED DIR
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from lab.workloads.suites.keras_fixture import FP64_PARAMS


def _flat_numpy(out) -> list:
    import keras
    import numpy as np

    # keras.tree's order (dict keys sorted), as lab.compile.flatten_outputs's
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.tree.flatten(out)]


def make(entry, shape: dict, seed: int, folder: Path) -> None:
    """Build, save and run the model on this process's backend (the reference), into
    `folder` by way of a temporary folder renamed into place."""
    import keras
    import numpy as np

    from lab.workloads.suites import keras as suite

    tiny = bool(shape.get("tiny"))
    keras.utils.set_random_seed(seed)
    keras.config.set_floatx("float32")
    vocab = entry.args(tiny).get("vocabulary_size", 0)
    arrays = suite.make_arrays(entry, shape, seed, vocab, entry.task_args.get("num_classes", 0))
    side = arrays["images"].shape[1] if entry.inputs == "image" else None
    model = suite.make_model(entry, tiny, side)
    inputs = suite.model_inputs(entry, arrays)
    params = int(sum(np.prod(v.shape) for v in model.weights))
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        model.save_weights(str(work / "model.weights.h5"))
        np.savez(work / "arrays.npz", **arrays)
        out32 = _flat_numpy(model(inputs, training=False))
        np.savez(work / "outputs_float32.npz", **{f"out{i}": o for i, o in enumerate(out32)})
        made64 = params <= FP64_PARAMS
        if made64:
            del model
            model64 = suite.make_model(entry, tiny, side, dtype="float64")
            model64.load_weights(str(work / "model.weights.h5"))
            inputs64 = keras.tree.map_structure(
                lambda a: a.astype("float64") if a.dtype.kind == "f" else a, inputs)
            out64 = _flat_numpy(model64(inputs64, training=False))
            np.savez(work / "outputs_float64.npz",
                     **{f"out{i}": o for i, o in enumerate(out64)})
        from importlib.metadata import version

        (work / "meta.json").write_text(json.dumps({
            "model": entry.workload_name, "shape": shape, "seed": seed, "params": params,
            "backend": keras.backend.backend(), "keras": version("keras"),
            "keras_hub": version("keras-hub"), "float64_reference": made64,
            "float64_left_out": None if made64 else
            f"{params:,} parameters: above {FP64_PARAMS:,}, no float64 copy is made"}))
        try:
            os.rename(work, folder)  # atomic; fails when another process made it first
        except OSError:
            if not (folder / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str]) -> int:
    from lab.workloads import suites

    name, shape, seed, folder = argv
    make(suites.entry(name), json.loads(shape), int(seed), Path(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
