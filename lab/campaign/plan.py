"""What the campaign measures: steps of items in value order, each item one cell or command.

A lab cell is its own `lab run` invocation (--resume into the campaign run), so the campaign
can skip a cell already stored, keep the value order across the steps, and stop between two
cells when the step's budget would be passed. The cells' names come from the lab's own planner
(`session.plan`, not on this machine), so a plan made on a CPU names the cells a GPU will store.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from lab.cell.spec import benchmark_name
from lab.core.errors import UsageError
from lab.running import loop as session
from lab.store import identity

LAB = [sys.executable, "-m", "lab.cli"]
# the settings every cell of one campaign run shares, so its cells compare (lab.running.resume)
CELL_REPEATS = 15
CELL_TIMEOUT_S = 90
LATENCY_REPEATS = 100  # per-call samples of a latency cell: p99 needs a hundred
# the kernel benchmark at the sizes that decide the kernel targets (the large end of each
# sweep, as the first H200 run measured them)
KERNEL_CASES = ("ceiling or 8192x8192 or 4096x32768 or 16384x8192 or 16384x16384 or "
                "16384x14336 or 8192x128256 or matmul-4096 or matmul-8192 or attention")


@dataclass(frozen=True)
class Item:
    """One unit of a step: a lab cell (`name` is its canonical benchmark name, `argv` its
    selection flags) or a command (`name` is the step's, `argv` the whole command line)."""

    name: str
    argv: tuple[str, ...]
    cell: bool = True
    key: tuple = ()  # (workload, backend, mode): how a cost is looked up across shapes


@dataclass
class Step:
    name: str
    what: str
    items: list[Item] = field(default_factory=list)
    needs: tuple[str, ...] = ()  # importable packages; missing -> the step is skipped
    cap_s: float | None = None  # a command step's fixed limit while no wall of it is stored


def cell_item(workload: str, backend: str, mode: str, device: str, precision: str | None = None,
              shape: dict | None = None, latency: bool = False, repeats: int = CELL_REPEATS,
              timeout_s: float = CELL_TIMEOUT_S) -> Item:
    """One cell as an Item; its name as the lab will store it (UsageError if it cannot run)."""
    shape = dict(shape or {})
    chosen = session.Selection(workloads=[workload], backends=[backend], modes=[mode],
                               device=device, precision=precision, shape=shape,
                               repeats=repeats, latency=latency)
    chosen.on_this_machine = False  # planned here, measured on the GPU
    cells, _ = session.plan(chosen, timeout_s=timeout_s)
    spec = cells[0].spec
    name = identity.canonical(benchmark_name(spec, cells[0].choice.label))
    argv = ["--workload", workload, "--backend", backend, "--mode", mode, "--device", device,
            "--precision", spec.precision, "--repeats", str(repeats),
            "--timeout", str(int(timeout_s))]
    for key, value in sorted(shape.items()):
        argv += ["--shape", f"{key}={value}"]
    if latency:
        argv.append("--latency")
    return Item(name, tuple(argv), True, (workload, cells[0].choice.label, mode))


def claim_items(claims_path: str, device: str) -> list[Item]:
    """The cells the claims file needs on `device`, in the file's order."""
    from lab.judge import claims, verdict

    todo, _ = verdict.missing_cells(claims.load(claims_path), {}, device)
    items = []
    for _key, workload, backend, mode, precision, shape, latency in todo:
        try:
            # a latency claim reads p99 of per-call samples: as many as the inference step's
            items.append(cell_item(workload, backend, mode, device, precision, shape, latency,
                                   repeats=LATENCY_REPEATS if latency else CELL_REPEATS))
        except UsageError:  # a claim's cell the selection refuses (shape, memory): not planned
            continue
    return items


def _cells(workloads, backends, modes, device, **kw) -> list[Item]:
    out = []
    for w in workloads:
        for m in modes:
            for b in backends:
                try:
                    out.append(cell_item(w, b, m, device, **kw))
                except UsageError:
                    continue
    return out


def _unique(steps: list[Step]) -> list[Step]:
    """A cell named by two steps is measured once, in the first (the more valuable)."""
    seen = set()
    for step in steps:
        kept = []
        for item in step.items:
            if item.cell and item.name in seen:
                continue
            seen.add(item.name)
            kept.append(item)
        step.items = kept
    return steps


def gpu_steps(root: str) -> list[Step]:
    """The CUDA campaign: the CUDA tests, then value order: the seed claims' cells, the kernel
    benchmark at its deciding sizes, the suite, the profile."""
    from pathlib import Path

    tests = ["tests/test_cuda.py"] + sorted(
        str(p.relative_to(root)) for p in (Path(root) / "tests").glob("test_kernel_*.py")
        if p.name != "test_kernel_aot.py")
    suite = _cells(["mlp", "transformer", "resnet50"],
                   ["torch-eager", "torch-compile", "torch-triton", "jax-jit", "tf-xla"],
                   ["infer", "train"], "cuda")
    suite += _cells(["transformer", "resnet50"], ["torch-eager", "torch-compile"],
                    ["infer", "train"], "cuda", precision="fp32")
    suite += _cells(["gpt2", "llama"], ["torch-eager", "torch-compile", "jax-jit"],
                    ["train", "infer", "generate"], "cuda")
    # the inference runtimes in strict fp32 (an exported artifact runs in the dtype it was
    # exported in), per call at batch 1; TorchScript and TensorRT first
    suite += _cells(["mlp", "transformer", "resnet50"],
                    ["torch-eager", "torchscript", "tensorrt", "onnxruntime", "torch-export"],
                    ["infer"], "cuda", precision="fp32", shape={"batch": 1}, latency=True,
                    repeats=LATENCY_REPEATS)
    return _unique([
        Step("cuda-tests", "the CUDA paths and every kernel test compiled on the GPU",
             [Item("cuda-tests", (sys.executable, "-m", "pytest", "-q", "-x", *tests), False)],
             needs=("torch", "triton"), cap_s=60),
        Step("claims", "the cells the seed's claims need, judged afterwards on the campaign run",
             claim_items(str(Path(root) / "claims" / "seed.toml"), "cuda"), needs=("torch",)),
        Step("kernels", "the lab's kernels vs eager, torch.compile and Liger at the sizes "
             "that decide the kernel targets",
             [Item("kernels", (sys.executable, "-m", "pytest", "-q", "bench/bench_kernels.py",
                               "-k", KERNEL_CASES, "--benchmark-json={json}"), False)],
             needs=("torch", "triton"), cap_s=90),
        Step("suite", "mlp, transformer, resnet50 x the torch, jax and tf compilers x infer, "
             "train (CUDA default precision), the torch pair in strict fp32, GPT-2 and Llama, "
             "the inference runtimes per call",
             suite, needs=("torch",)),
        Step("profile", "one transformer cell traced, its hot table and an ncu report",
             [Item("profile", (*LAB, "profile", "--workload", "transformer", "--backend",
                               "torch-compile", "--mode", "infer", "--device", "cuda",
                               "--timeout", "55", "--out", "{out}"), False)],
             needs=("torch",), cap_s=60),
    ])


def rehearsal_steps() -> list[Step]:
    """The same campaign on the CPU with tiny shapes: the mlp in eager torch, few samples."""
    tiny = {"repeats": 3, "timeout_s": 30}
    return _unique([
        Step("claims", "rehearsal: one claim-like cell",
             [cell_item("mlp", "torch-eager", "infer", "cpu", "fp32", {"batch": 8}, **tiny)],
             needs=("torch",)),
        Step("suite", "rehearsal: the mlp's two modes at batch 4",
             _cells(["mlp"], ["torch-eager"], ["infer", "train"], "cpu", precision="fp32",
                    shape={"batch": 4}, **tiny), needs=("torch",)),
    ])
