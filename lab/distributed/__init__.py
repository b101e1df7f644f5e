"""Data-parallel training cells: one training step spread over N ranks on one machine.

A cell asked with `--ranks N` keeps its backend (`torch-eager`, `torch-compile`, `jax-jit`,
`tf-graph`, `tf-xla`) and gains a strategy: PyTorch's DistributedDataParallel (`ddp`) or
FSDP2's `fully_shard` (`fsdp`), one process per rank; JAX's data parallelism over a mesh of N
devices (`dp`); TensorFlow's MirroredStrategy over N logical devices (`mirrored`). The global
batch is the workload's batch, split evenly across the ranks, so a cell at N ranks does the
same arithmetic as the same cell at 1 rank (strong scaling), and the lab measures both in one
cell: the step at N, the step at 1, and the scaling efficiency between them.

- lab.distributed.plan: which cells a selection's `--ranks` makes, and their names.
- lab.distributed.launch: the parent side; starts the ranks, bounds them, gathers rank 0.
- lab.distributed.rank: a rank's process (`python -m lab.distributed.rank`).
- lab.distributed.timing: a step timed across ranks (the slowest rank's step is the step).
- lab.distributed.torch_dp, jax_dp, tf_dp: each framework's data-parallel step.
"""

from __future__ import annotations

# the backends that have a data-parallel version, and the strategies each can take (the first
# is the default)
STRATEGIES: dict[str, tuple[str, ...]] = {
    # `-ca`: with compiled autograd (Dynamo traces the backward too, DDP's reducer included)
    "torch-eager": ("ddp", "fsdp"), "torch-compile": ("ddp", "fsdp", "ddp-ca", "fsdp-ca"),
    "jax-jit": ("dp",), "tf-graph": ("mirrored",), "tf-xla": ("mirrored",),
}
# the frameworks whose ranks are processes of their own; the others run N devices in one
# process (JAX's host platform split into N devices, TensorFlow's logical CPU devices)
PROCESS_PER_RANK = ("torch",)
MODE = "train"  # data parallelism splits a training step's batch; infer cells have no all-reduce


def label(backend_label: str, strategy: str, ranks: int) -> str:
    """The cell's backend label: `torch-compile+ddp@2` (backend, strategy, ranks)."""
    return f"{backend_label}+{strategy}@{ranks}"
