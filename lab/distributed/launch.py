"""The parent side of a data-parallel cell: the same cell at 1 rank and at N ranks, each a
set of processes started, bounded and torn down here, then one outcome in the lab's result
format with the ranks' fields and the scaling efficiency.

PyTorch: one process per rank (torchrun's environment: MASTER_ADDR 127.0.0.1, a free port,
RANK, WORLD_SIZE, LOCAL_RANK), each pinned to `threads` cores of its own. JAX and TensorFlow:
one process holding N devices (the host platform split into N, N logical CPU devices), pinned
to N x threads cores. Every process gets its own process group; when one rank exits with an
error the others, which would wait for it in a collective until gloo's 30-minute timeout, are
killed at once, and a rank that hangs ends the cell at `timeout` with every group killed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lab import compile as backends
from lab import workloads
from lab.cell import accuracy
from lab.cell.launch import cell_env, kill_group, reap_group, scratch
from lab.cell.spec import CellOutcome, CellResult, CellSpec
from lab.core.cores import usable_cores
from lab.core.status import OOM_MARKERS, Status
from lab.distributed import PROCESS_PER_RANK, comm
from lab.distributed import rank as rank_main

POLL_S = 0.05


def free_port() -> int:
    """A TCP port free on the loopback now (the rendezvous binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_cores(ranks: int, threads: int, per_process: bool) -> list[list[int]]:
    """The cores of each process: `threads` each, in order, from the cores this process may
    use (per_process False: one process with ranks x threads)."""
    cores = usable_cores()
    if not per_process:
        return [cores[:ranks * threads]]
    return [cores[r * threads:(r + 1) * threads] for r in range(ranks)]


def process_env(spec: CellSpec, ranks: int) -> dict:
    """What the framework must know before it is imported to see N devices in one process."""
    framework = backends.BACKENDS[spec.backend].framework.value
    if framework == "jax":
        flags = os.environ.get("XLA_FLAGS", "")
        return {"XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={ranks}".strip()}
    return {}


def run_ranks(spec: CellSpec, ranks: int, timeout_s: float, folder: Path,
              cache_dir: str | None = None) -> tuple[CellResult, dict]:
    """The cell at `ranks` ranks; (its result, facts about its processes). `cache_dir`: the
    compile cache (the 1-rank pass fills it cold, the N ranks start from it warm)."""
    framework = backends.BACKENDS[spec.backend].framework.value
    per_process = framework in PROCESS_PER_RANK
    spec = spec.replace(extra={**spec.extra, "ranks_now": ranks})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tmp").mkdir(exist_ok=True)
    spec_path = folder / "spec.json"
    spec_path.write_text(spec.to_json())
    base = cell_env(spec, cache_dir, extra=process_env(spec, ranks))
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), TMPDIR=str(folder / "tmp"),
                WORLD_SIZE=str(ranks if per_process else 1),
                LOCAL_WORLD_SIZE=str(ranks if per_process else 1))
    cores = rank_cores(ranks, spec.threads, per_process)
    procs, logs = [], []
    t0 = time.perf_counter()
    try:
        for r, mine in enumerate(cores):
            env = {**base, "RANK": str(r), "LOCAL_RANK": str(r),
                   rank_main.CORES_VAR: ",".join(map(str, mine))}
            log = open(folder / f"rank{r}.log", "w")
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "lab.distributed.rank", str(spec_path), str(folder)],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        failed = _wait(procs, t0 + timeout_s)
    except BaseException:  # Ctrl-C: never leave a rank running
        for p in procs:
            kill_group(p)
        raise
    finally:
        for log in logs:
            log.close()
    facts = {"pids": [p.pid for p in procs], "cores": cores,
             "wall_s": round(time.perf_counter() - t0, 3)}
    for p in procs:  # whatever a rank left behind (compile workers), and a rank still waiting
        kill_group(p) if p.poll() is None else reap_group(p)
    if failed == "timeout":
        return CellResult.failed(Status.TIMEOUT, f"{ranks} ranks: no result after "
                                                 f"{timeout_s:.0f} s"), facts
    if failed is not None:
        r, code = failed
        tail = (folder / f"rank{r}.log").read_text(errors="replace").strip().splitlines()[-20:]
        text = "\n".join(tail)
        status = Status.OOM if code in (-9, 137) or any(
            m in text.lower() for m in OOM_MARKERS) else Status.RUN_ERROR
        last = tail[-1] if tail else ""
        return CellResult.failed(status, f"rank {r} of {ranks} exited {code}: {last}"[:500],
                                 log_tail=text[-4000:]), facts
    result_path = folder / "result.json"
    if not result_path.is_file():
        return CellResult.failed(Status.RUN_ERROR, f"{ranks} ranks ended without a result"), facts
    return CellResult.from_dict(json.loads(result_path.read_text())), facts


def _wait(procs: list[subprocess.Popen], deadline: float):
    """None when every rank exited 0; (rank, code) of the first that did not; "timeout"."""
    while True:
        codes = [p.poll() for p in procs]
        for r, code in enumerate(codes):
            if code not in (None, 0):
                return r, code
        if all(code == 0 for code in codes):
            return None
        if time.perf_counter() > deadline:
            return "timeout"
        time.sleep(POLL_S)


def compare(folder_n: Path, folder_1: Path, ranks: int, precision: str) -> dict:
    """The N-rank first step against the 1-rank one on the same global batch: the loss and
    every averaged gradient, by the lab's accuracy rule (lab.cell.accuracy.check), and the largest
    difference of the updated weights."""
    def load(folder: Path, n: int) -> list[np.ndarray]:
        with np.load(folder / f"check_{n}.npz") as z:
            return [z[f"arr_{i}"] for i in range(len(z.files))]

    multi, single = load(folder_n, ranks), load(folder_1, 1)
    if len(multi) != len(single):
        return {"passed": False, "method": "structure",
                "detail": f"{len(multi)} arrays at {ranks} ranks vs {len(single)} at 1"}
    half = (len(single) - 1) // 2  # loss, gradients, updated weights
    verdict = accuracy.check(multi[:1 + half], single[:1 + half], precision)
    verdict["compared_with"] = "the same cell at 1 rank, same global batch (loss, gradients)"
    verdict["weights_max_abs_diff"] = max(
        (float(np.max(np.abs(a - b), initial=0.0)) for a, b in
         zip(multi[1 + half:], single[1 + half:], strict=True)), default=0.0)
    if not verdict["passed"]:
        verdict["status"] = Status.FAIL_ACCURACY.value
        verdict["detail"] = accuracy.describe_failure(verdict)
    return verdict


def run_cell(spec: CellSpec, label: str, timeout_s: float, on_phase=None) -> CellOutcome:
    """The data-parallel cell: at 1 rank, then at N, with the check and the scaling."""
    ranks = int(spec.extra["ranks"])
    t0 = time.perf_counter()
    walls = []
    with scratch("lab-ranks-") as tmp:
        # the compile cache is shared: the 1-rank pass is the cold compile, and the ranks'
        # first calls are warm ones (N cold compiles on N cores would time the compiler
        # fighting itself for the cores)
        cache = str(tmp / "compile-cache")
        single, facts1 = run_ranks(spec, 1, timeout_s, tmp / "r1", cache)
        walls.append(facts1["wall_s"])
        if on_phase:
            on_phase("1 rank", facts1["wall_s"])
        if not single.ok:
            single.reason = f"at 1 rank: {single.reason}"
            return CellOutcome(spec, label, single, time.perf_counter() - t0,
                               process_wall_s=walls, extra={"ranks": ranks})
        result, facts = run_ranks(spec, ranks, timeout_s, tmp / f"r{ranks}", cache)
        walls.append(facts["wall_s"])
        if on_phase:
            on_phase(f"{ranks} ranks", facts["wall_s"])
        extra = {"ranks": ranks, "strategy": spec.extra.get("strategy"),
                 "rank_cores": facts["cores"], "rank_pids": facts["pids"]}
        if not result.ok:
            return CellOutcome(spec, label, result, time.perf_counter() - t0,
                               process_wall_s=walls, extra=extra)
        result.accuracy = compare(tmp / f"r{ranks}", tmp / "r1", ranks, spec.precision)
        if not result.accuracy["passed"]:
            result.status = Status.FAIL_ACCURACY
            result.reason = result.accuracy["detail"]
    extra.update(scaling(spec, single, result, ranks))
    extra.update(comm.cell_fields(result.diagnostics))
    warm = None
    info = backends.BACKENDS[spec.backend]
    if info.compiles and info.framework.value in PROCESS_PER_RANK:
        # the table's cold / warm compile: the 1-rank pass's first call on an empty cache,
        # the N ranks' on the cache it filled (the slowest rank's): each rank compiles the
        # program the 1-rank pass compiled. JAX's and TensorFlow's N-device program is
        # another one (sharded, with its collectives): no warm compile of it, its first call
        # is `ranks_first_call_s`
        warm = CellResult(first_call_s=result.first_call_s)
        result.first_call_s = single.first_call_s
    # the timed processes are the N ranks' (their phases are the result's); the 1-rank pass's
    # wall is its own field
    extra["single_rank_wall_s"] = walls[0]
    return CellOutcome(spec, label, result, time.perf_counter() - t0, warm=warm,
                       process_wall_s=walls[1:], extra=extra)


def scaling(spec: CellSpec, single: CellResult, multi: CellResult, ranks: int) -> dict:
    """Throughput at N over N x throughput at 1 (the same global batch: strong scaling),
    from the medians of the two passes of this cell."""
    if not single.samples_s or not multi.samples_s:
        return {}
    items = workloads.get(spec.workload).items(spec.shape, spec.mode)
    t1, tn = float(np.median(single.samples_s)), float(np.median(multi.samples_s))
    return {"single_rank_median_s": t1, "ranks_first_call_s": multi.first_call_s,
            "single_rank_samples_s": single.samples_s,
            "single_rank_throughput": items / t1, "single_rank_first_call_s": single.first_call_s,
            "single_rank_diagnostics": single.diagnostics,
            "scaling_efficiency": round((items / tn) / (ranks * items / t1), 4)}
