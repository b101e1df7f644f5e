"""The `lab` command: list, run, show, report, profile, check, gate, history.

Bad input ends with one line on stderr and exit status 2, before anything that looks like a
result is written.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

DEFAULT_OUT = "profiles"
DEFAULT_REPEATS = 30
DEFAULT_TIMEOUT_S = 900.0
DTYPES = ("float32", "bfloat16", "float16")


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + message; the lab prints one line
        raise UsageError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _csv(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def _shape_overrides(args) -> tuple[dict, dict]:
    """(named, explicit): named flags (--batch...) apply to the workloads that have them;
    explicit --shape keys must exist in every selected workload."""
    explicit = {}
    for item in args.shape or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"--shape expects key=value, got {item!r}")
        try:
            explicit[key] = int(value)
        except ValueError:
            raise UsageError(f"--shape {key} expects an integer, got {value!r}") from None
    named = {key: getattr(args, key) for key in ("batch", "seq", "image_size")
             if getattr(args, key, None) is not None}
    return named, explicit


def cuda_available() -> bool:
    """Whether a CUDA device is usable, asked of an installed framework (torch, else JAX)."""
    if importlib.util.find_spec("torch") is not None:
        import torch

        return torch.cuda.is_available()
    if importlib.util.find_spec("jax") is not None:
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    return False


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cuda" and not cuda_available():
        raise UsageError("--device cuda: no CUDA device is available on this machine")
    return device


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# ---------------------------------------------------------------- selection shared by run/profile

def add_selection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workload", type=_csv, required=True,
                   help="comma-separated workload names, or path/to/file.py:factory")
    p.add_argument("--backend", type=_csv, default=["torch-eager", "torch-compile"],
                   help="comma-separated backends (see `lab list`); NAME:OPTION selects a mode")
    p.add_argument("--mode", type=_csv, default=["infer"], help="infer, train or infer,train")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--batch", type=_positive_int, help="batch size (overrides the default)")
    p.add_argument("--seq", type=_positive_int, help="sequence length (transformer)")
    p.add_argument("--image-size", dest="image_size", type=_positive_int,
                   help="image side (resnet50)")
    p.add_argument("--shape", action="append", metavar="KEY=VALUE",
                   help="any other shape parameter, e.g. --shape d_model=512")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="threads for every framework (default: the cores this process may use)")
    p.add_argument("--out", default=DEFAULT_OUT, help="root folder for run folders")
    p.add_argument("--timeout", type=_positive_float, default=DEFAULT_TIMEOUT_S,
                   help="seconds before a cell is stopped and marked timeout")


def plan(args) -> tuple[list, str]:
    """Validate the selection and return (cells, device); UsageError on anything unknown."""
    from lab import backends
    from lab import workloads
    from lab.cell import CellSpec
    from lab.workloads.user import UserWorkloadError

    for mode in args.mode:
        if mode not in workloads.MODES:
            raise UsageError(f"unknown mode {mode!r}; valid: {', '.join(workloads.MODES)}")
    try:
        choices = [backends.resolve(b) for b in args.backend]
    except backends.UnknownBackend as exc:
        raise UsageError(str(exc)) from None
    device = resolve_device(args.device)
    try:
        loaded = [workloads.get(w) for w in args.workload]
    except (workloads.UnknownWorkload, UserWorkloadError) as exc:
        raise UsageError(str(exc)) from None
    named, explicit = _shape_overrides(args)
    threads = args.threads or default_threads()
    cells = []
    for workload in loaded:
        known = workload.shape_for(device)
        try:
            shape = workload.shape_for(device, {**{k: v for k, v in named.items() if k in known},
                                                **explicit})
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        for mode in args.mode:
            for choice in choices:
                spec = CellSpec(
                    workload=workload.name, backend=choice.info.name, option=choice.option,
                    mode=mode, shape=shape, dtype=args.dtype, device=device, threads=threads,
                    repeats=getattr(args, "repeats", DEFAULT_REPEATS),
                    cold_l2=getattr(args, "cold_l2", False),
                    cuda_graphs=getattr(args, "cuda_graphs", False),
                )
                cells.append((spec, choice, workload))
    return cells, device


# ---------------------------------------------------------------- commands

def cmd_list(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from lab import backends
    from lab import workloads

    console = Console()
    table = Table(title="workloads")
    for column in ("name", "frameworks", "cpu shape", "summary"):
        table.add_column(column)
    for name in workloads.names():
        w = workloads.get(name)
        shape = ", ".join(f"{k}={v}" for k, v in w.default_shape("cpu").items())
        table.add_row(name, ", ".join(w.frameworks), shape, w.summary)
    console.print(table)
    console.print("  also: --workload path/to/file.py:factory (your own torch model)")

    cuda = cuda_available()
    table = Table(title="backends (what this machine can run)")
    for column in ("name", "options", "baseline", "runs here", "summary"):
        table.add_column(column)
    for info in backends.BACKENDS.values():
        missing = backends.missing_packages(info)
        here = f"no: {' and '.join(missing)} not installed" if missing else "yes"
        table.add_row(info.name, ", ".join(info.options) or "-", info.baseline or "-", here,
                      info.summary)
    console.print(table)
    console.print(f"devices: cpu{', cuda' if cuda else ' (cuda: no CUDA device available)'}")

    if importlib.util.find_spec("lab.kernels") is not None:
        try:
            from lab.kernels import KERNELS
        except ImportError as exc:
            console.print(f"kernels: unavailable ({exc})")
        else:
            table = Table(title="Triton kernels (lab/kernels)")
            table.add_column("op")
            table.add_column("summary")
            for name, summary in KERNELS.items():
                table.add_row(name, summary if isinstance(summary, str)
                              else (summary.__doc__ or "").strip().splitlines()[0])
            console.print(table)
    return 0


def cmd_run(args) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from lab import report, runner, store

    cells, device = plan(args)
    console = report.make_console()
    fp = store.fingerprint(threads=cells[0][0].threads if cells else None)
    run_dir = Path(args.out) / store.machine_id(fp["hardware"]) / store.new_run_id(device)
    recorder = runner.RunRecorder(run_dir, fp, sys.argv[1:])
    interrupted = False
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total}"), TimeElapsedColumn(), console=console) as progress:
        bar = progress.add_task("cells", total=len(cells))
        try:
            for spec, choice, workload in cells:
                progress.update(bar, description=f"{spec.workload} {spec.mode} {choice.label}")
                if spec.backend not in _backends_for(workload):
                    fw = choice.info.framework.value
                    outcome = runner.CellOutcome(spec, choice.label, {
                        "status": "skipped",
                        "reason": f"workload {spec.workload} has no {fw} version"}, 0.0)
                else:  # --processes N: the gate compares runs through per-process medians
                    outcome = runner.run_cell_processes(spec, choice.label, args.timeout,
                                                        args.processes)
                recorder.add(outcome, workload)
                progress.advance(bar)
        except KeyboardInterrupt:
            interrupted = True
    if args.profile and not interrupted:
        from lab.profile import profile_recorded_cells

        # a separate pass: timing is already stored
        profile_recorded_cells(recorder, console, timeout_s=args.timeout)
    path = recorder.save(complete=not interrupted)
    report.render(store.load_results(path), console)
    console.print(f"stored: {path}")
    if interrupted:
        console.print("interrupted: finished cells are kept; the run is marked incomplete")
        return 130
    return 0


def _backends_for(workload) -> set[str]:
    from lab import backends

    return {name for name, info in backends.BACKENDS.items()
            if info.framework.value in workload.frameworks}


def find_run(text: str, out: str = DEFAULT_OUT) -> Path:
    """A run folder, a results.json, or a run id searched under the runs root."""
    path = Path(text)
    if path.exists():
        return path
    matches = sorted(Path(out).glob(f"*/{text}"))
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UsageError(f"run id {text!r} is ambiguous: {', '.join(map(str, matches))}")
    raise UsageError(f"no run at {text!r} (give a run folder, its results.json, or a run id)")


def cmd_show(args) -> int:
    from lab import report, store

    try:
        doc = store.load_results(find_run(args.run, args.out))
    except store.StoreError as exc:
        raise UsageError(str(exc)) from None
    report.render(doc)
    return 0


def cmd_report(args) -> int:
    from lab import store
    from lab.throughput import markdown_table

    try:
        doc = store.load_results(find_run(args.run, args.out))
    except store.StoreError as exc:
        raise UsageError(str(exc)) from None
    cells = [*doc["benchmarks"], *doc.get("lab", {}).get("unmeasured", [])]
    names = list(dict.fromkeys(c["extra_info"].get("workload") for c in cells))
    if args.workload and args.workload not in names:
        raise UsageError(f"no {args.workload!r} cells in {args.run}")
    # one table per workload: each has its own throughput unit
    print("\n\n".join(f"### {name}\n\n{markdown_table(doc, name)}"
                      for name in ([args.workload] if args.workload else names)))
    return 0


def _delegate(module: str, function: str):
    def run(args) -> int:
        import importlib

        return importlib.import_module(module).__dict__[function](args)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lab", description="perflab: eager vs compilers, measured fairly")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="workloads, backends and kernels; what runs here")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="measure workloads x backends; store and print the table")
    add_selection_arguments(p)
    p.add_argument("--repeats", type=_positive_int, default=DEFAULT_REPEATS,
                   help="samples per side (each sample times enough steps to last >= 2 ms)")
    p.add_argument("--cold-l2", dest="cold_l2", action="store_true",
                   help="CUDA: flush the L2 before every sample")
    p.add_argument("--cuda-graphs", dest="cuda_graphs", action="store_true",
                   help="CUDA: capture each infer step in a CUDA graph and replay it")
    p.add_argument("--profile", action="store_true",
                   help="after timing, capture a trace per cell in a separate pass")
    p.add_argument("--processes", type=_positive_int, default=1,
                   help="cell processes per cell; `lab gate` compares their medians")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("show", help="print a stored run's table")
    p.add_argument("run", help="run folder, results.json or run id")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("report", help="a stored run as a markdown throughput table")
    p.add_argument("run", help="run folder, results.json or run id")
    p.add_argument("--workload", help="only this workload's cells")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("profile", help="trace cells in a pass apart from timing")
    add_selection_arguments(p)
    p.set_defaults(func=_delegate("lab.profile", "cmd_profile"))

    p = sub.add_parser("check", help="verdicts on performance claims (TOML)")
    p.add_argument("claims", help="claim file, e.g. claims/seed.toml")
    p.add_argument("--run", help="stored run to read samples from (default: run what is needed)")
    p.add_argument("--stored-only", dest="stored_only", action="store_true",
                   help="judge only the cells of --run; never run missing cells")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.set_defaults(func=_delegate("lab.verdict", "cmd_check"))

    p = sub.add_parser("gate", help="regression gate: exit 1 when CANDIDATE is slower")
    p.add_argument("baseline")
    p.add_argument("candidate")
    p.add_argument("--threshold", default="5%")
    p.add_argument("--force", action="store_true", help="compare runs of different machines")
    p.add_argument("--markdown", help="also write the summary to this file")
    p.add_argument("--noise-floor", dest="noise_floor", type=_positive_float, default=None,
                   help="between-process sd of log step time on this machine (default: the "
                        "lab's calibrated floor; bench/calibrate_gate.py measures yours)")
    p.set_defaults(func=_delegate("lab.verdict", "cmd_gate"))

    p = sub.add_parser("history", help="change points in a benchmark's stored series")
    p.add_argument("--machine", help="machine id (default: this machine)")
    p.add_argument("--benchmark", help="benchmark name (default: all)")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.set_defaults(func=_delegate("lab.verdict", "cmd_history"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except UsageError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # `python -m lab.cli`: run the imported module's main, so that UsageError raised by the
    # commands (which import lab.cli) is the class main() catches, not a __main__ copy
    from lab.cli import main as _main

    sys.exit(_main())
