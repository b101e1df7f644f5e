"""The Keras suite's shared weights and inputs: made once per model, size, shape and seed, on
one backend, and loaded by every backend's cell (lab.workloads.suites.keras).

A cell runs on one Keras backend for its whole life (KERAS_BACKEND is read once, at import),
so the fixture is made in a process of its own on the reference backend (TensorFlow): the
model built from its constructor with random weights drawn from `seed`, saved with
`save_weights` (a `.weights.h5` file, which every backend loads), the inputs and labels, and
the model's outputs on them in float32 and, built again with a float64 dtype policy and the
same weights, in float64: the reference every backend's own eager output is judged against.
The float64 copy is left out above FP64_PARAMS parameters (it would take 8 bytes each); the
check then rests on the float32 tolerance alone, and says so.

Fixtures live in a cache folder (LAB_KERAS_FIXTURES, else the user's cache), keyed by a hash of
everything that makes them: the constructor arguments, shape, seed, and the Keras and
keras_hub versions. A fixture is written to a temporary folder and renamed into place, so
two cells making the same one at once leave one whole copy.

    python -m lab.workloads.suites.keras_fixture keras/bert '{"batch":1,"seq":128,"tiny":1}' 0 DIR
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REFERENCE_BACKEND = "tensorflow"
FIXTURES_VAR = "LAB_KERAS_FIXTURES"
FORMAT = 1  # bump when what a fixture holds changes
FP64_PARAMS = 400_000_000  # 3.2 GB in float64: above this no float64 reference is made
MAKE_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class Fixture:
    folder: Path

    @property
    def weights_path(self) -> Path:
        return self.folder / "model.weights.h5"

    def meta(self) -> dict:
        return json.loads((self.folder / "meta.json").read_text())

    def arrays(self) -> dict:
        import numpy as np

        with np.load(self.folder / "arrays.npz") as f:
            return {k: f[k] for k in f.files}

    def outputs(self, dtype: str) -> list | None:
        """The reference backend's outputs in `dtype` ("float32", "float64"), in order;
        None where that reference was not made."""
        import numpy as np

        path = self.folder / f"outputs_{dtype}.npz"
        if not path.exists():
            return None
        with np.load(path) as f:
            return [f[f"out{i}"] for i in range(len(f.files))]


def root() -> Path:
    if os.environ.get(FIXTURES_VAR):
        return Path(os.environ[FIXTURES_VAR])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "perflab" / "keras-fixtures"


def key(entry, shape: dict, seed: int) -> str:
    from importlib.metadata import version

    made_of = {"format": FORMAT, "model": entry.workload_name, "args": entry.args(
        bool(shape.get("tiny"))), "task_args": entry.task_args, "shape": shape, "seed": seed,
        "keras": version("keras"), "keras_hub": version("keras-hub"),
        "backend": REFERENCE_BACKEND}
    digest = hashlib.sha256(json.dumps(made_of, sort_keys=True).encode()).hexdigest()[:16]
    return f"{entry.name}-{digest}"


def ensure(entry, shape: dict, seed: int) -> Fixture:
    """The fixture of (entry, shape, seed), made first in a process of its own if missing."""
    folder = root() / key(entry, shape, seed)
    if (folder / "meta.json").exists():
        return Fixture(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KERAS_BACKEND": REFERENCE_BACKEND, "TF_CPP_MIN_LOG_LEVEL": "2"}
    import lab

    repo_root = str(Path(lab.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo_root, env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", __name__, entry.workload_name, json.dumps(shape), str(seed),
         str(folder)], env=env, capture_output=True, text=True, timeout=MAKE_TIMEOUT_S)
    if done.returncode != 0 or not (folder / "meta.json").exists():
        lines = [line for line in (done.stderr or "").splitlines() if line.strip()]
        raise RuntimeError(f"the {REFERENCE_BACKEND} fixture of {entry.workload_name} failed "
                           f"(exit {done.returncode}): {lines[-1] if lines else 'no output'}")
    return Fixture(folder)


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
