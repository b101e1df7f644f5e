"""JAX data parallelism in one process: the host platform split into N devices (the launcher
sets XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX loads), a 1-d Mesh over
them, the batch sharded along it and the weights and optimizer state replicated
(NamedSharding), and the lab's train step under jax.jit: XLA's SPMD partitioner splits the
step and inserts the all-reduce of the gradients, which the compiled step's HLO shows.

One process holds every device, so the step's end (block_until_ready on the replicated
result) is already the slowest device's end: the step is timed once, by the host clock.
"""

from __future__ import annotations

import os
import time

import numpy as np

from lab.core.cores import usable_cores
from lab.distributed import comm_trace, timing


def _single(values: list[float]) -> list[list[float]]:
    return [values]


def run(spec, rank: int, world: int, local_rank: int, out_dir: str) -> dict:
    import jax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from lab import workloads
    from lab.compile import jax as jax_backend

    t_start = time.perf_counter()
    n = int(spec.extra["ranks_now"])
    devices = jax.devices("gpu" if spec.device == "cuda" else "cpu")
    if len(devices) < n:
        raise RuntimeError(f"{n} devices asked, JAX sees {len(devices)}")
    mesh = Mesh(np.array(devices[:n]), ("data",))
    replicated, by_batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    settings = jax_backend.apply_precision(spec.precision, spec.device)
    task = jax_backend.build_task(workloads.get(spec.workload), spec.shape, "train",
                                  spec.device, spec.precision, spec.seed, spec.backend)
    params = jax.device_put(task.params, replicated)
    inputs = jax.device_put(task.inputs, by_batch)
    target = jax.device_put(task.target, by_batch)
    _, loss_and_grads = jax_backend._functions(
        task, jax_backend._mixed_compute_dtype(spec.precision))
    opt_init, opt_update = jax_backend.optimizer(spec.extra.get("optimizer") or task.optimizer)
    opt_state = jax.device_put(opt_init(params), replicated)

    def train(params, opt_state, inputs, target):
        value, grads, _ = loss_and_grads(params, None, inputs, target)
        params, opt_state = opt_update(params, grads, opt_state)
        return value, grads, params, opt_state

    # weights, optimizer state and gradients replicated on every device: the all-reduce
    train_jit = jax.jit(train, out_shardings=replicated, donate_argnums=(1,))
    phases = {"setup": time.perf_counter() - t_start}
    state = {"params": params, "opt": opt_state}

    def step():
        value, _, state["params"], state["opt"] = train_jit(state["params"], state["opt"],
                                                            inputs, target)
        return value

    sync = jax.block_until_ready
    t0 = time.perf_counter()
    value, grads, state["params"], state["opt"] = sync(train_jit(params, state["opt"], inputs,
                                                                 target))
    first = time.perf_counter() - t0
    leaves = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(grads)]
    weights = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(state["params"])]
    np.savez(os.path.join(out_dir, f"check_{n}.npz"),
             *([np.asarray(value, np.float64)] + leaves + weights))
    hlo = train_jit.lower(state["params"], state["opt"], inputs, target).compile().as_text()
    phases["first_call"] = time.perf_counter() - t0
    if spec.extra.get("check_only"):
        return {"first_call_s": first, "phases_s": phases, "n_params": len(leaves)}

    none = lambda: None  # noqa: E731  one process: no barrier
    deadline = None if spec.budget_s is None else t_start + spec.budget_s
    t0 = time.perf_counter()
    longest = 10.0 if deadline is None else \
        min(10.0, max(spec.warmup_seconds, 0.25 * (deadline - time.perf_counter())))
    warm = timing.warm_up(step, sync, none, _single, spec.warmup_steps, spec.warmup_seconds,
                          longest)
    probe, _ = timing.timed(step, sync, 1, none, _single, False)
    inner = timing.inner_steps(max(probe), spec.min_sample_s)
    phases["warmup"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    times = timing.sample(step, sync, none, _single, spec.repeats, inner, deadline)
    phases["sampling"] = time.perf_counter() - t0
    # after the timed samples, apart from them: the profiler slows the steps it watches
    communication = comm_trace.jax_share(jax, step, sync, os.path.join(out_dir, "jax-trace"))
    per_rank = [{"rank": 0, "devices": n, "mesh": dict(mesh.shape),
                 "cores": usable_cores(),
                 # XLA's CPU pool is the schedulable CPUs (lab.compile.jax.set_threads)
                 "threads": len(usable_cores()),
                 "median_step_s": float(np.median(times.samples_s)),
                 "communication": communication}]
    return {"first_call_s": first, "phases_s": phases, "warmup": warm, "inner_steps": inner,
            "samples_s": times.samples_s, "per_rank": per_rank, "rounds": len(times.samples_s),
            "precision_settings": settings, "versions": jax_backend.versions(),
            "n_params": len(leaves),
            "diagnostics": {"hlo_all_reduce": hlo.count(" all-reduce("),
                            "hlo_collectives": sum(hlo.count(f" {op}(") for op in (
                                "all-reduce", "all-gather", "reduce-scatter",
                                "collective-permute", "all-to-all"))}}
