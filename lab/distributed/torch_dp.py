"""One PyTorch rank of a data-parallel training cell: DistributedDataParallel or FSDP2's
`fully_shard`, eager or through torch.compile, over gloo (CPU) or NCCL (CUDA).

Every rank builds the workload from the same seed (the same weights and the same global
batch), keeps its contiguous share of the batch, and runs the lab's train step on it: loss,
backward (DDP all-reduces the gradients in buckets as they are ready; FSDP2 reduce-scatters
them and all-gathers the weights around each wrapped block), the optimizer step. The loss is a
mean over the rank's share, and the gradients are averaged over the ranks, so with equal
shares the step is the 1-rank step on the global batch, up to the order of the sums.
"""

from __future__ import annotations

import os
import time

import numpy as np

from lab.core.cores import usable_cores
from lab.distributed import comm, timing

STRATEGIES = ("ddp", "fsdp")
COMPILED_AUTOGRAD = "-ca"  # a strategy's suffix: torch.compile with compiled autograd


def _wrap(torch, model, strategy: str, device: str, world: int):
    """The model under its data-parallel wrapper."""
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [torch.device(device).index] if device.startswith("cuda") else None
        return DistributedDataParallel(model, device_ids=ids)
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cuda" if device.startswith("cuda") else "cpu", (world,))
        # each block of a stack (GPT-2's layers) its own unit, as FSDP2's examples wrap
        # transformers: its weights are gathered only while it runs; then the root
        for module in list(model.modules()):
            if isinstance(module, torch.nn.ModuleList):
                for block in module:
                    fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")


def _full(t) -> np.ndarray:
    """A tensor, or a sharded DTensor gathered whole (a collective: every rank calls it)."""
    if hasattr(t, "full_tensor"):
        t = t.full_tensor()
    return t.detach().float().cpu().numpy().astype(np.float64)


def run(spec, rank: int, world: int, local_rank: int, out_dir: str) -> dict | None:
    """The rank's cell; rank 0 returns what the result holds, the others None."""
    import torch
    import torch.distributed as dist

    from lab import workloads
    from lab.compile import torch as torch_backend
    from lab.workloads.llm.recompiles import dynamo_summary

    t_start = time.perf_counter()
    cuda = spec.device == "cuda"
    device = f"cuda:{local_rank}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(local_rank)
    torch_backend.set_threads(spec.threads)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    phases = {"init_process_group": time.perf_counter() - t_start}

    def gather(values: list[float]) -> list[list[float]]:
        t = torch.tensor(values, dtype=torch.float64, device=device)
        out = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(out, t)
        return [o.tolist() for o in out]

    def sync(out):
        if cuda:
            torch.cuda.synchronize()
        return out

    t0 = time.perf_counter()
    settings = torch_backend.apply_precision(spec.precision, spec.device)
    workload = workloads.get(spec.workload)
    task = workload.build("torch", spec.shape, "train", device, spec.dtype, spec.seed)
    batch = spec.shape["batch"]
    share = slice(rank * batch // world, (rank + 1) * batch // world)
    inputs = tuple(x[share] for x in task.inputs)
    target = task.target[share] if task.target is not None else None  # a user's model
    strategy = spec.extra["strategy"]
    if strategy.endswith(COMPILED_AUTOGRAD):
        # Dynamo traces the backward as well; DDP then reduces through its Python reducer,
        # which compiled autograd traces (torch._dynamo.config's optimize_ddp), in place of
        # splitting the forward graph at the buckets
        strategy = strategy.removesuffix(COMPILED_AUTOGRAD)
        torch._dynamo.config.compiled_autograd = True
        if strategy == "ddp":
            torch._dynamo.config.optimize_ddp = "python_reducer"
    model = _wrap(torch, task.model, strategy, device, world)
    fn = model
    if spec.backend == "torch-compile":
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        mode, dynamic = torch_backend.compile_settings(spec.option)
        fn = torch.compile(model, mode=mode, dynamic=dynamic)
    # the optimizer over the wrapped parameters (FSDP2's are DTensor shards of this rank)
    optimizer = torch_backend._optimizer(torch, model.parameters(),
                                         spec.extra.get("optimizer") or task.optimizer)
    phases["setup"] = time.perf_counter() - t0

    def forward_backward():
        with torch_backend._autocast(torch, spec.precision, spec.device):
            loss = task.loss_fn(fn(*inputs), target)
        loss.backward()
        return loss

    def update():
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def step():
        loss = forward_backward()
        update()
        return loss

    # the first step, timed as every step is, then its gradients and updated weights kept
    # (outside the timing) for the check against the 1-rank step on the same global batch
    dist.barrier()
    t0 = time.perf_counter()
    loss = sync(forward_backward())
    fb = time.perf_counter() - t0
    grads = [_full(p.grad) for p in model.parameters()]
    t1 = time.perf_counter()
    update()
    sync(None)
    own_first = fb + time.perf_counter() - t1
    first = max(r[0] for r in gather([own_first]))
    total_loss = loss.detach().clone().float()
    dist.all_reduce(total_loss)
    weights = [_full(p) for p in model.parameters()]
    if rank == 0:
        np.savez(os.path.join(out_dir, f"check_{world}.npz"),
                 *([np.array(total_loss.item() / world)] + grads + weights))
    n_params = len(grads)
    graphs_after_first = (dynamo_summary(torch._dynamo.utils.counters)["graphs"]
                          if spec.backend == "torch-compile" else None)
    phases["first_call"] = time.perf_counter() - t0
    if spec.extra.get("check_only"):
        dist.barrier()
        return {"first_call_s": first, "phases_s": phases, "n_params": n_params} \
            if rank == 0 else None

    barrier = dist.barrier
    budget = spec.budget_s
    deadline = None if budget is None else t_start + budget
    t0 = time.perf_counter()
    longest = 10.0 if deadline is None else \
        min(10.0, max(spec.warmup_seconds, 0.25 * (deadline - time.perf_counter())))
    warm = timing.warm_up(step, sync, barrier, gather, spec.warmup_steps, spec.warmup_seconds,
                          longest)
    probe, _ = timing.timed(step, sync, 1, barrier, gather, False)
    inner = timing.inner_steps(max(probe), spec.min_sample_s)
    phases["warmup"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    times = timing.sample(step, sync, barrier, gather, spec.repeats, inner, deadline)
    phases["sampling"] = time.perf_counter() - t0

    # after the timed samples, apart from them: the profiler slows the steps it watches
    communication = comm.share(torch, step, sync, cuda)
    dist.barrier()

    own = [row[rank] for row in times.per_rank_s]
    diag = {"rank": rank, "cores": usable_cores(),
            "threads": torch.get_num_threads(),  # read back from torch
            "median_step_s": float(np.median(own)) if own else None,
            "backend": dist.get_backend(), "communication": communication}
    if spec.backend == "torch-compile":
        summary = dynamo_summary(torch._dynamo.utils.counters)
        diag.update(graph_count=summary["graphs"], graph_breaks=summary["graph_breaks"],
                    graph_break_reasons=summary["graph_break_reasons"][:5],
                    recompiles=max(0, summary["graphs"] - graphs_after_first))
    per_rank = [None] * world
    dist.all_gather_object(per_rank, diag)
    dist.barrier()
    if rank != 0:
        return None
    return {"first_call_s": first, "phases_s": phases, "warmup": warm, "inner_steps": inner,
            "samples_s": times.samples_s, "per_rank": per_rank,
            "rounds": len(times.samples_s), "precision_settings": settings,
            "versions": torch_backend.versions(), "n_params": n_params}
