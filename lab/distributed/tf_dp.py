"""TensorFlow data parallelism in one process: tf.distribute.MirroredStrategy over N logical
CPU devices (tf.config.set_logical_device_configuration; on CUDA the first N GPUs), the model
and optimizer built in its scope (mirrored variables), the global batch split into one equal
share per replica.

A step: each replica's forward and backward on its share (`tf-xla`: that function compiled by
XLA, jit_compile=True; `tf-graph`: a tf.function), the gradients all-reduced to the mirrored
variables (the strategy's cross-device ops, `batch_reduce_to` MEAN), then the optimizer's
update of every replica's copy. The whole step is one tf.function; XLA compiles the per-replica
forward and backward, not the all-reduce and the update, which the strategy places across
devices outside any one XLA cluster.
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
    import tensorflow as tf

    from lab import workloads
    from lab.compile import tf as tf_backend

    t_start = time.perf_counter()
    n = int(spec.extra["ranks_now"])
    cuda = spec.device == "cuda"
    if not cuda:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    # one process holds every replica: its pools get every core the launcher gave it
    tf_backend.set_threads(len(usable_cores()))
    settings = tf_backend.apply_precision(spec.precision, spec.device)
    devices = [f"/gpu:{i}" for i in range(n)] if cuda else [f"/cpu:{i}" for i in range(n)]
    strategy = tf.distribute.MirroredStrategy(devices)
    xla = spec.backend == "tf-xla"
    with strategy.scope():
        task = workloads.get(spec.workload).build("tf", spec.shape, "train", spec.device,
                                                  spec.dtype, spec.seed)
        variables = task.model.trainable_variables
        optimizer = tf_backend._optimizer(spec.extra.get("optimizer") or task.optimizer)
        optimizer.build(variables)
    batch = spec.shape["batch"]
    x_all, y_all = task.inputs[0], task.target

    def share(ctx, t):
        r = ctx.replica_id_in_sync_group
        return t[r * batch // n:(r + 1) * batch // n]

    xs = strategy.experimental_distribute_values_from_function(lambda ctx: share(ctx, x_all))
    ys = strategy.experimental_distribute_values_from_function(lambda ctx: share(ctx, y_all))

    def loss_and_grads(x, y):
        with tf.GradientTape() as tape:
            loss = task.loss_fn(task.model(x, training=True), y)
        return loss, tape.gradient(loss, variables)

    compiled = tf.function(loss_and_grads, jit_compile=xla)

    def replica_fn(x, y):
        # the call placed on its replica's device by name: XLA reads only variables on the
        # device its function runs on
        i = tf.get_static_value(tf.distribute.get_replica_context().replica_id_in_sync_group)
        with tf.device(devices[int(i)]):
            return compiled(x, y)
    mean = tf.distribute.ReduceOp.MEAN

    def forward_backward():
        losses, grads = strategy.run(replica_fn, args=(xs, ys))
        # the all-reduce: every gradient averaged over the replicas onto its variable's devices
        # (destinations: the tf.Variables under Keras's, mirrored on the replicas' devices)
        reduced = strategy.extended.batch_reduce_to(
            mean, [(g, getattr(v, "value", v)) for g, v in zip(grads, variables, strict=True)])
        return strategy.reduce(mean, losses, axis=None), reduced

    @tf.function
    def first():
        loss, grads = forward_backward()
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss, [g.values[0] if hasattr(g, "values") else g for g in grads]

    @tf.function
    def train():
        loss, grads = forward_backward()
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    def sync(out):
        return None if out is None else np.asarray(out)  # waits for the step

    phases = {"setup": time.perf_counter() - t_start}
    t0 = time.perf_counter()
    loss, grads = first()
    value = float(loss.numpy())
    first_s = time.perf_counter() - t0
    leaves = [g.numpy().astype(np.float64) for g in grads]
    weights = [np.asarray(v.values[0] if hasattr(v, "values") else v, np.float64)
               for v in variables]
    np.savez(os.path.join(out_dir, f"check_{n}.npz"),
             *([np.asarray(value, np.float64)] + leaves + weights))
    # the timed step is another tf.function: its trace is part of the first steady steps
    train()
    phases["first_call"] = time.perf_counter() - t0
    if spec.extra.get("check_only"):
        return {"first_call_s": first_s, "phases_s": phases, "n_params": len(leaves)}

    none = lambda: None  # noqa: E731  one process: no barrier
    deadline = None if spec.budget_s is None else t_start + spec.budget_s
    t0 = time.perf_counter()
    longest = 10.0 if deadline is None else \
        min(10.0, max(spec.warmup_seconds, 0.25 * (deadline - time.perf_counter())))
    warm = timing.warm_up(train, sync, none, _single, spec.warmup_steps, spec.warmup_seconds,
                          longest)
    probe, _ = timing.timed(train, sync, 1, none, _single, False)
    inner = timing.inner_steps(max(probe), spec.min_sample_s)
    phases["warmup"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    times = timing.sample(train, sync, none, _single, spec.repeats, inner, deadline)
    phases["sampling"] = time.perf_counter() - t0
    # after the timed samples, apart from them: the profiler slows the steps it watches
    communication = comm_trace.tf_share(tf, train, sync, os.path.join(out_dir, "tf-trace"))
    per_rank = [{"rank": 0, "replicas": strategy.num_replicas_in_sync, "devices": devices,
                 "cores": usable_cores(),
                 "threads": tf.config.threading.get_intra_op_parallelism_threads(),
                 "median_step_s": float(np.median(times.samples_s)),
                 "communication": communication}]
    return {"first_call_s": first_s, "phases_s": phases, "warmup": warm, "inner_steps": inner,
            "samples_s": times.samples_s, "per_rank": per_rank, "rounds": len(times.samples_s),
            "precision_settings": settings, "versions": tf_backend.versions(),
            "n_params": len(leaves),
            "diagnostics": {"cross_device_ops": type(strategy.extended._cross_device_ops
                                                     or object()).__name__,
                            "jit_compile": xla}}
