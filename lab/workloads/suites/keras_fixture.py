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

The process runs lab.workloads.suites.keras_reference:

    python -m lab.workloads.suites.keras_reference keras/bert '{"batch":1,"seq":128,"tiny":1}' 0 DIR
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REFERENCE_BACKEND = "tensorflow"
FIXTURES_VAR = "LAB_KERAS_FIXTURES"
FORMAT = 1  # bump when what a fixture holds changes
FP64_PARAMS = 400_000_000  # 3.2 GB in float64: above this no float64 reference is made
MAKE_TIMEOUT_S = 1800.0
MAKER = "lab.workloads.suites.keras_reference"  # the module a fixture's process runs


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
        [sys.executable, "-m", MAKER, entry.workload_name, json.dumps(shape), str(seed),
         str(folder)], env=env, capture_output=True, text=True, timeout=MAKE_TIMEOUT_S)
    if done.returncode != 0 or not (folder / "meta.json").exists():
        lines = [line for line in (done.stderr or "").splitlines() if line.strip()]
        raise RuntimeError(f"the {REFERENCE_BACKEND} fixture of {entry.workload_name} failed "
                           f"(exit {done.returncode}): {lines[-1] if lines else 'no output'}")
    return Fixture(folder)
