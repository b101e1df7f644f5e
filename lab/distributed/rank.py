"""A rank's process: `python -m lab.distributed.rank SPEC.json OUT_DIR`, started by
lab.distributed.launch with a torchrun-style environment (MASTER_ADDR, MASTER_PORT, RANK,
WORLD_SIZE, LOCAL_RANK) and the cores it may use (LAB_RANK_CORES).

The rank pins itself to its cores before any framework is imported (their thread pools are
sized and placed at import), runs its framework's data-parallel step, and rank 0 writes the
cell's result. A rank that fails writes nothing and exits non-zero: the launcher then ends the
other ranks, which would otherwise wait in a collective for it.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

_PROCESS_START = time.perf_counter()
CORES_VAR = "LAB_RANK_CORES"
FAILED_EXIT = 3  # the rank failed and said why in its log


def pin() -> list[int]:
    """This process on the cores the launcher gave it (comma-separated), if it gave any."""
    text = os.environ.get(CORES_VAR, "")
    cores = [int(c) for c in text.split(",") if c.strip()]
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    return cores


def main(argv: list[str]) -> int:
    spec_path, out_dir = argv
    pin()
    from lab.cell.spec import CellResult, CellSpec
    from lab.compile import BACKENDS
    from lab.core.status import Status

    with open(spec_path) as f:
        spec = CellSpec.from_json(f.read())
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    framework = BACKENDS[spec.backend].framework.value
    if framework == "torch":
        from lab.distributed import torch_dp as module
    elif framework == "jax":
        from lab.distributed import jax_dp as module
    else:
        from lab.distributed import tf_dp as module
    try:
        got = module.run(spec, rank, world, int(os.environ.get("LOCAL_RANK", rank)), out_dir)
    except Exception:
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(FAILED_EXIT)
    if got is not None:
        got["phases_s"] = {k: round(v, 6) for k, v in got.get("phases_s", {}).items()}
        result = CellResult(
            status=Status.OK, versions=got.get("versions"),
            precision_settings=got.get("precision_settings"),
            first_call_s=got.get("first_call_s"), warmup=got.get("warmup"),
            timer="perf_counter (slowest rank)", inner_steps=got.get("inner_steps"),
            samples_s=got.get("samples_s"), phases_s=got["phases_s"],
            sampling={"rounds_planned": spec.repeats, "rounds": got.get("rounds"),
                      "cut_by_budget": (got.get("rounds") or 0) < spec.repeats,
                      "budget_s": spec.budget_s} if got.get("samples_s") else None,
            diagnostics={"per_rank": got.get("per_rank"), "n_params": got.get("n_params"),
                         **got.get("diagnostics", {})})
        path = os.path.join(out_dir, "result.json")
        with open(path + ".tmp", "w") as f:
            json.dump(result.to_dict(), f)
        os.replace(path + ".tmp", path)
    # as lab.cell.main: no teardown wait (compile workers, process groups); the launcher reaps
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
