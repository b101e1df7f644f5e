"""The kernel benchmark's sizes that decide the kernel targets, one campaign item each.

The benchmark (bench/bench_kernels.py) is CUDA-only and imports torch at its top, so its tables
(`SWEEPS`, `WITH_BACKWARD`, `IMPLS`, `LIGER_FUNCTIONS`) are read from its source as literals
here: a size added to a sweep there is planned here without a second copy to keep in step.
Which sizes decide a target follows the benchmark's `TARGETS`: the memory-bound targets hold
"at large sizes", read as at least 2^26 elements (128 MB in bf16, beyond any GPU's L2 by far;
cross-entropy's 8192 x 128256 among them), matmul's at 4096^3 and 8192^3 (the sizes with
M >= 4096, the fused bias+GELU one too), attention's at seq 4096 and seq 1024 (every
attention size). Each size is its own pytest invocation (`-k` on the
case ids), so a lease that cannot fit the whole benchmark still stores some sizes, and the
next lease runs the rest; the ceilings (copy bandwidth, bf16 matmul peak) come first, as
their own item, since every fraction of a ceiling reads them.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

BENCH = "bench/bench_kernels.py"
TABLES = ("SWEEPS", "WITH_BACKWARD", "IMPLS", "LIGER_FUNCTIONS")
LARGE_MATMUL_M = 4096  # matmul's target sizes: 4096^3 and 8192^3 (TARGETS["matmul"])
LARGE_ELEMENTS = 1 << 26  # a memory-bound op's "large size": 128 MB of bf16 per operand


@dataclass(frozen=True)
class SizeCase:
    name: str  # the item's name: `kernels:<op>-<size id>`
    select: str  # pytest -k expression picking this size's cases and no other
    cases: int  # how many test cases it runs (implementations x passes)


def read_tables(root: str | Path) -> dict:
    """The benchmark's tables as Python values, from its source (no import, no torch)."""
    tree = ast.parse((Path(root) / BENCH).read_text())
    found = {}
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and target.id in TABLES and node.value is not None:
            found[target.id] = ast.literal_eval(node.value)
    missing = [t for t in TABLES if t not in found]
    if missing:
        raise ValueError(f"{BENCH}: no literal {', '.join(missing)} to plan the kernel sizes from")
    return found


def size_id(op: str, size: tuple) -> str:
    """The case id's size part, as bench_kernels._cases writes it: `4096x4096x4096-bias+gelu_tanh`,
    `4x16x4096x128-causal`."""
    ints = "x".join(str(s) for s in size if type(s) is int)
    extra = [f"bias+{s}" for s in size if isinstance(s, str)]
    extra += ["causal"] if op == "attention" and size[-1] is True else []
    return "-".join([ints, *extra])


def deciding(op: str, sizes: list[tuple]) -> list[tuple]:
    if op == "attention":
        return list(sizes)
    if op == "matmul":
        return [s for s in sizes if s[0] >= LARGE_MATMUL_M]
    return [s for s in sizes if s[0] * s[-1] >= LARGE_ELEMENTS]


def size_cases(root: str | Path) -> list[SizeCase]:
    tables = read_tables(root)
    out = [SizeCase("kernels:ceilings", "ceiling", 2)]
    for op, sizes in tables["SWEEPS"].items():
        passes = 2 if op in tables["WITH_BACKWARD"] else 1
        impls = sum(1 for i in tables["IMPLS"]
                    if i != "liger" or op in tables["LIGER_FUNCTIONS"])
        for size in deciding(op, [tuple(s) for s in sizes]):
            sid = size_id(op, size)
            # `-fwd` right after the size id: `matmul-4096x4096x4096-fwd` leaves out the
            # bias+gelu case, `attention-4x16x4096x128-fwd` the causal one; it matches both
            # `-fwd-` and `-fwd+bwd-` of the size
            out.append(SizeCase(f"kernels:{op}-{sid}", f"{op}-{sid}-fwd", passes * impls))
    return out
