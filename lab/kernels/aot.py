"""Compile every Triton kernel in lab/kernels ahead of time for a GPU that need not be here.

`triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))` runs Triton's whole
pipeline (TTIR -> TTGIR -> LLVM IR -> PTX -> cubin, through the `ptxas` that ships in Triton's
wheel) on a machine without a GPU. That is where a kernel config that takes a minute to compile,
spills registers to local memory or asks for more shared memory than the SM has shows up, so a
CPU test can catch it before a GPU run times out.

What to compile is declared next to each kernel: a kernel module defines

    def compile_cases() -> list[CompileCase]:   # built with `cases(...)` below

covering every `@triton.jit` entry kernel (a name ending in `_kernel`), every autotune config
the launcher can pick, and each dtype. `uncovered_kernels()` lists the entry kernels that no
declaration names, so a new kernel without one fails the check instead of being skipped.

    python -m lab.kernels.aot --out aot.json            # every module, 2 compile processes
    python -m lab.kernels.aot --only attention,matmul   # some modules

Each case gets a fresh Triton cache (nothing carries over between runs), and reports compile
seconds, registers per thread, spill bytes (from ptxas' `-v` report), stack frame and shared
memory. Exit code 0: every case compiled within its budget without spilling and every kernel
is declared; 1: some did not (the table says which); 2: bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import io
import json
import os
import pkgutil
import re
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HOPPER_ARCH = 90  # H100 / H200: the GPUs the lab's kernels are tuned for
WARP_SIZE = 32
# Shared memory one block may use on sm_90 (227 KiB); a config above it cannot launch.
MAX_SHARED_BYTES_SM90 = 232448
# Per-case compile budget in CPU seconds (the compiling process and its ptxas child). On the
# 2-core CPU this lab is developed on, the slowest of the 105 attention and matmul cases took
# 2.7 s; the float32 attention configs before the fix took 9.4-44.2 s each (docs/kernels.md,
# "Ahead-of-time compile for Hopper"). 8 s is about 3x the slowest and fails all of those.
COMPILE_BUDGET_S = 8.0

# Modules of lab/kernels that hold no kernels of their own.
_NOT_KERNEL_MODULES = {"aot", "nn", "_common"}


@dataclasses.dataclass(frozen=True)
class CompileCase:
    """One compile: a kernel, its argument types and constants, and one launch config."""

    kernel: str  # the kernel's attribute name in its module, e.g. "_attention_fwd_kernel"
    group: str  # the dtype/precision family the summary table groups by, e.g. "bfloat16"
    label: str  # what distinguishes this case from the kernel's others (dtype, shape, config)
    signature: dict  # every argument -> Triton type ("*bf16", "i32", "fp32", "constexpr")
    constexprs: dict  # constexpr argument -> value (config values and launch-time constants)
    divisible_by_16: tuple  # arguments Triton would specialise as multiples of 16
    num_warps: int
    num_stages: int


@dataclasses.dataclass(frozen=True)
class CompileResult:
    """What one compile cost and what the cubin needs from the SM."""

    module: str
    kernel: str
    group: str
    label: str
    num_warps: int
    num_stages: int
    compile_seconds: float | None = None  # CPU seconds: this process and its ptxas child
    compile_wall_seconds: float | None = None
    registers: int | None = None  # per thread
    spill_store_bytes: int | None = None
    spill_load_bytes: int | None = None
    stack_bytes: int | None = None
    shared_bytes: int | None = None
    error: str | None = None

    def problems(self, budget_s: float = COMPILE_BUDGET_S) -> list[str]:
        """Why this case fails the check; empty when it passes."""
        if self.error:
            return [f"did not compile: {self.error}"]
        out = []
        if self.spill_store_bytes or self.spill_load_bytes:
            out.append(f"spills {self.spill_store_bytes} B stored / {self.spill_load_bytes} B "
                       f"loaded")
        if self.shared_bytes is not None and self.shared_bytes > MAX_SHARED_BYTES_SM90:
            out.append(f"needs {self.shared_bytes} B of shared memory, sm_90 has "
                       f"{MAX_SHARED_BYTES_SM90}")
        if self.compile_seconds is not None and self.compile_seconds > budget_s:
            out.append(f"compile took {self.compile_seconds:.1f} CPU s, budget {budget_s:.0f} s")
        return out


# ------------------------------------------------------------------- declaring the cases

_TRITON_TYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "int64": "i64",
                 "int32": "i32", "int8": "i8", "uint8": "u8", "bool": "i1"}


def pointer(dtype) -> str:
    """Triton's pointer type for a torch dtype (or its name): torch.bfloat16 -> "*bf16"."""
    name = str(dtype).removeprefix("torch.")
    if name not in _TRITON_TYPES:
        raise ValueError(f"no Triton pointer type for dtype {name}")
    return "*" + _TRITON_TYPES[name]


def jit_function(kernel):
    """The JITFunction under any autotune/heuristics wrappers."""
    from triton.runtime.jit import JITFunction

    fn = kernel
    while not isinstance(fn, JITFunction):
        if not hasattr(fn, "fn"):
            raise TypeError(f"{kernel!r} is not a Triton kernel")
        fn = fn.fn
    return fn


def cases(kernel, group: str, args: dict, constexprs: dict | None = None, *,
          variant: str = "", configs: list | None = None, num_warps: int = 4,
          num_stages: int = 3) -> list[CompileCase]:
    """The compile cases of one launch of `kernel`: one per config.

    group: the dtype or precision family ("bfloat16", "float32 ieee"); variant: the rest of
    what distinguishes this launch ("d128 causal"). Each case's label is group, variant and
    the config.

    args: each runtime argument that is not a plain int: pointers as a torch dtype (or a
    `pointer()` string), floats as a Python float, ints with a value that matters to Triton's
    specialisation (1 is compiled in as a constant, as Triton does at run time; a value not
    divisible by 16 loses the divisibility hint). An int argument not named here is taken as a
    multiple of 16, the usual case for sizes and strides.
    constexprs: the launcher's constexpr arguments other than the config's.
    configs: `triton.Config`s to compile; default: the autotuner's own list, or one launch with
    `num_warps`/`num_stages` for a kernel without autotuning.
    """
    fn = jit_function(kernel)
    constexprs = dict(constexprs or {})
    if configs is None:
        configs = list(getattr(kernel, "configs", None) or [None])
    params = {p.name: p for p in fn.params}
    unknown = sorted((set(args) | set(constexprs)) - set(params))
    if unknown:
        raise ValueError(f"{fn.__name__} has no argument(s) {', '.join(unknown)}")
    out = []
    for config in configs:
        values = {**constexprs, **(config.kwargs if config is not None else {})}
        signature, consts, divisible = {}, {}, []
        for name, param in params.items():
            if param.is_constexpr:
                if name not in values:
                    raise ValueError(f"{fn.__name__}: constexpr {name} has no value in the "
                                     f"declaration or the config")
                signature[name], consts[name] = "constexpr", values[name]
                continue
            spec = args.get(name, 16)
            if isinstance(spec, bool):
                raise ValueError(f"{fn.__name__}: argument {name} is not a constexpr; give an "
                                 f"int, a float or a pointer dtype")
            if isinstance(spec, float):
                signature[name] = "fp32"
            elif isinstance(spec, int):
                if name.endswith("_ptr"):
                    raise ValueError(f"{fn.__name__}: pointer {name} needs a dtype in args")
                if spec == 1:  # Triton compiles an int argument equal to 1 in as a constant
                    signature[name], consts[name] = "constexpr", 1
                    continue
                signature[name] = "i32" if -2**31 <= spec < 2**31 else "i64"
                if spec % 16 == 0:
                    divisible.append(name)
            else:
                signature[name] = spec if isinstance(spec, str) else pointer(spec)
                if signature[name].startswith("*"):
                    divisible.append(name)  # torch allocations are 256-byte aligned
        warps = config.num_warps if config is not None else num_warps
        stages = config.num_stages if config is not None else num_stages
        suffix = (" " + ",".join(f"{k}={v}" for k, v in config.kwargs.items())
                  if config is not None and config.kwargs else "")
        label = " ".join(filter(None, (group, variant)))
        out.append(CompileCase(
            kernel=fn.__name__, group=group, label=f"{label}{suffix} w{warps} s{stages}",
            signature=signature, constexprs=consts, divisible_by_16=tuple(divisible),
            num_warps=warps, num_stages=stages))
    return out


# ---------------------------------------------------------------------------- discovery


def kernel_modules() -> list[str]:
    """Every module of lab.kernels that may define kernels."""
    import lab.kernels as package

    return sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                  if m.name not in _NOT_KERNEL_MODULES)


def entry_kernels(module) -> list[str]:
    """The launchable `@triton.jit` kernels of a module: names ending in `_kernel` (device
    helpers such as `gelu` or `_attend_blocks` are compiled inside them)."""
    from triton.runtime.jit import KernelInterface

    return sorted(name for name, value in vars(module).items()
                  if isinstance(value, KernelInterface) and name.endswith("_kernel")
                  and getattr(jit_function(value), "__module__", None) == module.__name__)


def declared_cases(module) -> list[CompileCase]:
    declare = getattr(module, "compile_cases", None)
    return list(declare()) if declare is not None else []


def uncovered_kernels(modules: list[str]) -> list[str]:
    """`module.kernel` for every entry kernel that no compile case names."""
    missing = []
    for name in modules:
        module = importlib.import_module(f"lab.kernels.{name}")
        covered = {case.kernel for case in declared_cases(module)}
        missing += [f"{name}.{k}" for k in entry_kernels(module) if k not in covered]
    return missing


# ------------------------------------------------------------------------------ compiling

_PTXAS_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                           r"(\d+) bytes spill loads")
_PTXAS_REGISTERS = re.compile(r"Used (\d+) registers")


def parse_ptxas_report(log: str) -> dict:
    """registers, spill and stack bytes from `ptxas -v` (one kernel per cubin)."""
    spills = _PTXAS_SPILLS.search(log)
    registers = _PTXAS_REGISTERS.search(log)
    if spills is None or registers is None:
        raise ValueError(f"no resource report in the ptxas output: {log.strip()[:300]!r}")
    stack, stores, loads = map(int, spills.groups())
    return {"registers": int(registers.group(1)), "stack_bytes": stack,
            "spill_store_bytes": stores, "spill_load_bytes": loads}


def _cpu_seconds() -> float:
    # CPU time, not wall time: the budget must hold on a machine shared with other jobs,
    # where wall time doubles when another process takes the second core. ptxas runs as a
    # child process, so its time is in RUSAGE_CHILDREN.
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def compile_case(module_name: str, case: CompileCase, arch: int = HOPPER_ARCH) -> CompileResult:
    """Compile one case for `arch` in this process and measure it (never raises on a compile
    failure: the error is the result)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    module = importlib.import_module(f"lab.kernels.{module_name}")
    fn = jit_function(getattr(module, case.kernel))
    index = {name: i for i, name in enumerate(fn.arg_names)}
    attrs = {(index[name],): [["tt.divisibility", 16]] for name in case.divisible_by_16}
    base = {"module": module_name, "kernel": case.kernel, "group": case.group,
            "label": case.label,
            "num_warps": case.num_warps, "num_stages": case.num_stages}
    # ptxas' `-v` report (registers, spills) is printed to stdout when this knob is on.
    triton.knobs.nvidia.dump_ptxas_log = True
    log = io.StringIO()
    start, start_cpu = time.perf_counter(), _cpu_seconds()
    try:
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(
                ASTSource(fn=fn, signature=case.signature, constexprs=case.constexprs,
                          attrs=attrs),
                target=GPUTarget("cuda", arch, WARP_SIZE),
                options={"num_warps": case.num_warps, "num_stages": case.num_stages})
    except Exception as e:  # noqa: BLE001 (any compiler failure is this case's result)
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return CompileResult(**base, error=f"{type(e).__name__}: {first_line[:300]}")
    return CompileResult(**base, compile_seconds=round(_cpu_seconds() - start_cpu, 2),
                         compile_wall_seconds=round(time.perf_counter() - start, 2),
                         shared_bytes=compiled.metadata.shared,
                         **parse_ptxas_report(log.getvalue()))


def _worker_init(cache_root: str) -> None:
    # A cache of its own per process: every compile in this run is a cold one.
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(dir=cache_root)


def _compile_indexed(module_name: str, position: int, arch: int) -> CompileResult:
    module = importlib.import_module(f"lab.kernels.{module_name}")
    return compile_case(module_name, declared_cases(module)[position], arch)


def compile_all(modules: list[str], *, workers: int = 2, arch: int = HOPPER_ARCH,
                progress=None) -> list[CompileResult]:
    """Compile every declared case of `modules` in `workers` processes; results come back in
    declaration order."""
    import multiprocessing

    jobs = []
    for name in modules:
        module = importlib.import_module(f"lab.kernels.{name}")
        jobs += [(name, i) for i in range(len(declared_cases(module)))]
    with tempfile.TemporaryDirectory(prefix="lab-aot-") as cache_root:
        with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init,
                                 initargs=(cache_root,),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_compile_indexed, name, i, arch) for name, i in jobs]
            results = []
            for future in futures:
                results.append(future.result())
                if progress is not None:
                    progress(results[-1])
    return results


# ------------------------------------------------------------------------------------ CLI


def summary_markdown(results: list[CompileResult]) -> str:
    """One row per (module, kernel, group), over its configs and variants: the table in
    docs/kernels.md."""
    groups: dict[tuple, list[CompileResult]] = {}
    for r in results:
        groups.setdefault((r.module, r.kernel, r.group), []).append(r)
    lines = ["| kernel | dtype | cases | compile CPU s (max) | registers (max) | spill bytes "
             "| shared KiB (max) | failed |", "|---|---|--:|--:|--:|--:|--:|--:|"]
    for (module, kernel, group), rs in groups.items():
        ok = [r for r in rs if not r.error]
        spills = sum(r.spill_store_bytes + r.spill_load_bytes for r in ok)
        lines.append(
            f"| {module}.{kernel} | {group} | {len(rs)} | "
            f"{max((r.compile_seconds for r in ok), default=0):.1f} | "
            f"{max((r.registers for r in ok), default=0)} | {spills} | "
            f"{max((r.shared_bytes for r in ok), default=0) / 1024:.0f} | "
            f"{sum(bool(r.problems()) for r in rs)} |")
    return "\n".join(lines)


def _row(r: CompileResult, budget_s: float) -> str:
    if r.error:
        return f"{r.module:14} {r.kernel:28} {r.label:44} ERROR {r.error}"
    verdict = "; ".join(r.problems(budget_s)) or "ok"
    return (f"{r.module:14} {r.kernel:28} {r.label:44} {r.compile_seconds:6.1f} s "
            f"{r.registers:4d} regs {r.spill_store_bytes + r.spill_load_bytes:6d} B spill "
            f"{r.shared_bytes:7d} B smem  {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.kernels.aot", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--out", type=Path, help="write every case's result here as JSON")
    parser.add_argument("--only", help="comma-separated kernel modules (default: all)")
    parser.add_argument("--arch", type=int, default=HOPPER_ARCH,
                        help="CUDA compute capability x 10 (default 90, Hopper)")
    parser.add_argument("--workers", type=int, default=2, help="compile processes (default 2)")
    parser.add_argument("--summary", action="store_true",
                        help="print a markdown table per kernel and dtype at the end")
    parser.add_argument("--budget-s", type=float, default=COMPILE_BUDGET_S,
                        help=f"per-case compile budget in seconds (default {COMPILE_BUDGET_S})")
    args = parser.parse_args(argv)

    # The kernels must be defined as GPU kernels, not for the interpreter: Triton reads this
    # when a kernel module is imported, which happens below and in the spawned workers.
    os.environ["TRITON_INTERPRET"] = "0"
    if any(m.startswith("lab.kernels.") for m in sys.modules if m != __name__):
        print("error: lab.kernels modules were imported before the compile check; run it as "
              "`python -m lab.kernels.aot`", file=sys.stderr)
        return 2
    available = kernel_modules()
    modules = args.only.split(",") if args.only else available
    unknown = [m for m in modules if m not in available]
    if unknown:
        print(f"error: unknown kernel module(s) {', '.join(unknown)}; choose from "
              f"{', '.join(available)}", file=sys.stderr)
        return 2
    if args.workers < 1 or args.budget_s <= 0:
        print("error: --workers must be >= 1 and --budget-s > 0", file=sys.stderr)
        return 2

    uncovered = uncovered_kernels(modules)
    start = time.perf_counter()
    results = compile_all(modules, workers=args.workers, arch=args.arch,
                          progress=lambda r: print(_row(r, args.budget_s), flush=True))
    wall_s = time.perf_counter() - start
    failed = [r for r in results if r.problems(args.budget_s)]
    if args.summary:
        print(summary_markdown(results))
    for name in uncovered:
        print(f"{name}: no compile case declares it (add it to its module's compile_cases())")
    print(f"{len(results)} cases in {wall_s:.0f} s with {args.workers} workers; "
          f"{len(failed)} failed; {len(uncovered)} kernels undeclared")
    if args.out:
        record = {"arch": args.arch, "budget_s": args.budget_s, "workers": args.workers,
                  "wall_seconds": round(wall_s, 1), "uncovered_kernels": uncovered,
                  "cases": [dataclasses.asdict(r) for r in results]}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(args.out)
    return 1 if failed or uncovered else 0


if __name__ == "__main__":
    # Run the importable module's main, so the worker processes (spawned, they import
    # lab.kernels.aot by name) and this one share the same functions.
    from lab.kernels.aot import main as _main

    sys.exit(_main())
