"""The `lab` command: argparse, `main`, exit codes. Nothing imports this module.

Exit codes: 0 every cell ok (or skipped for a stated reason), 1 some cell failed or the gate
found a regression, 2 bad input or unusable data (one line on stderr, nothing written), 130
interrupted (finished cells kept, the run marked incomplete).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from lab.core.errors import UsageError
from lab.core.precision import NAMES as PRECISIONS
from lab.running.defaults import (
    DEFAULT_LATENCY_REPEATS,
    DEFAULT_OUT,
    DEFAULT_REPEATS,
    DEFAULT_TIMEOUT_S,
    DTYPES,
)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples keep their lines; an option's default follows its help
    (argparse's ArgumentDefaultsHelpFormatter, less the defaults that say nothing: None,
    False, or one the help already states)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if default in (None, False, argparse.SUPPRESS) or "default" in text \
                or (not action.option_strings and action.nargs not in ("?", "*")):
            return text
        shown = ",".join(default) if isinstance(default, list) else default
        return f"{text} (default: {str(shown).replace('%', '%%')})"  # argparse %-formats it


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message):  # argparse prints usage + message; the lab prints one line
        raise UsageError(message)


def _version() -> str:
    """The installed distribution's version; the package's own where it is not installed."""
    from importlib import metadata

    try:
        return metadata.version("perflab")
    except metadata.PackageNotFoundError:
        import lab

        return lab.__version__


def _threshold(text: str) -> str:
    """`5%`, `5` (a bare number of 1 or more is a percentage) or `0.05` (below 1: a fraction),
    as the gate's `N%`; junk is refused here, the range by the gate (lab.judge.gate)."""
    raw = text.strip().removesuffix("%")
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a percentage like 5% or 5, or a fraction like 0.05, got {text!r}") from None
    return text.strip() if text.strip().endswith("%") or value < 1 else f"{raw}%"


# one example per command, shown under its --help
EXAMPLES = {
    "list": "lab list                       # what this machine can run, and why not",
    "run": "lab run --workload mlp,transformer --backend torch-eager,torch-compile \\\n"
           "    --mode infer,train --device cpu --repeats 30",
    "show": "lab show profiles/<machine>/<run id>     # or the run id alone",
    "report": "lab report <run id>                # markdown\n"
              "lab report <run id> --html r.html  # one page with plots\n"
              "lab report profiles/ --html site/  # an index of every stored run\n"
              "lab report <run id> --csv -        # CSV on stdout",
    "profile": "lab profile --workload transformer --backend torch-compile --mode infer",
    "check": "lab check claims/seed.toml --run <run id> --stored-only",
    "gate": "lab gate <baseline run> <candidate run> --threshold 5%",
    "history": "lab history --benchmark 'transformer[torch-compile|infer|cpu|fp32|batch=4]'",
    "diff": "lab diff <baseline run> <candidate run>",
}
# options whose default is worth showing but that have no help of their own
IMPLICIT_HELP = {"out": "root folder of the stored runs (run ids are looked up there)",
                 "device": "where the cells run (auto: cuda when there is one)"}


def _finish(parser: argparse.ArgumentParser, sub) -> None:
    for name, command in sub.choices.items():
        if name in EXAMPLES:
            command.epilog = "example:\n  " + EXAMPLES[name].replace("\n", "\n  ")
        for action in command._actions:
            if action.help is None and action.dest in IMPLICIT_HELP:
                action.help = IMPLICIT_HELP[action.dest]


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


# ---------------------------------------------------------------- selection shared by run/profile

def add_selection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workload", type=_csv, default=None,
                   help="comma-separated workload names, or path/to/file.py:factory "
                        "(this, --suite or both)")
    p.add_argument("--suite", type=_csv, default=None,
                   help="every model of these suites (`lab list --suites`): hf, keras")
    p.add_argument("--size", choices=("real", "tiny"), default=None,
                   help="suite models' size: real (their published sizes, the default) or "
                        "tiny (a cell in seconds on a CPU)")
    p.add_argument("--backend", type=_csv, default=None,
                   help="comma-separated backends (see `lab list`); NAME:OPTION selects a mode "
                        "(default: torch-eager,torch-compile), for the keras suite's models "
                        "keras-tf-jit,keras-jax-jit,keras-torch-jit (each times its eager "
                        "side too)")
    p.add_argument("--mode", type=_csv, default=["infer"],
                   help="infer, train, generate (greedy decoding: gpt2, llama), comma-separated")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="arithmetic in every framework alike (docs/precision.md); default: "
                        "fp32 on the CPU, amp-bf16 on CUDA")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="alias: float32 = --precision fp32, bfloat16 = bf16, float16 = fp16")
    p.add_argument("--batch", type=_positive_int, help="batch size (overrides the default)")
    p.add_argument("--seq", type=_positive_int, help="sequence length (transformer)")
    p.add_argument("--image-size", dest="image_size", type=_positive_int,
                   help="image side (resnet50)")
    p.add_argument("--shape", action="append", metavar="KEY=VALUE",
                   help="any other shape parameter, e.g. --shape d_model=512")
    p.add_argument("--full-size", dest="full_size", action="store_true",
                   help="the workloads' real sizes (their CUDA defaults: GPT-2 124M, "
                        "Llama-3.2-1B) on any device")
    p.add_argument("--allow-large", dest="allow_large", action="store_true",
                   help="run cells whose estimated memory exceeds what this machine has "
                        "(refused otherwise; docs/contract.md)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="threads for every framework (default: the cores this process may use)")
    p.add_argument("--out", default=DEFAULT_OUT, help="root folder for run folders")
    p.add_argument("--timeout", type=_positive_float, default=DEFAULT_TIMEOUT_S,
                   help="seconds before a cell is stopped and marked timeout")
    p.add_argument("--allow-nan", dest="allow_nan", action="store_true",
                   help="accept NaN/Inf in outputs where eager has them in the same places")


def _delegate(module: str, function: str):
    """The command's function, imported only when it runs: `lab --help` and bad input stay
    fast and never import a framework."""

    def run(args) -> int:
        import importlib

        return getattr(importlib.import_module(module), function)(args)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lab", description="perflab: eager vs compilers, measured fairly",
                     epilog="`lab COMMAND --help` shows a command's options and an example; "
                            "exit codes: docs/contract.md")
    parser.add_argument("--version", action="version", version=f"lab {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="workloads, backends and kernels; what runs here")
    p.add_argument("--suites", action="store_true",
                   help="the models of each suite (--suite): size in parameters and whether "
                        "each builds here")
    p.set_defaults(func=_delegate("lab.commands.show", "cmd_list"))

    p = sub.add_parser("run", help="measure workloads x backends; store and print the table")
    add_selection_arguments(p)
    p.add_argument("--repeats", type=_positive_int, default=None,
                   help=f"samples per side (default {DEFAULT_REPEATS}; each sample times "
                        f"enough steps to last >= 2 ms; with --latency one call, default "
                        f"{DEFAULT_LATENCY_REPEATS})")
    p.add_argument("--latency", action="store_true",
                   help="infer cells: time one call per sample and report p50/p90/p99 per "
                        "call (the serving view; with --batch 1 a call is a request)")
    p.add_argument("--cold-l2", dest="cold_l2", action="store_true",
                   help="CUDA: flush the L2 before every timed step (each step then timed "
                        "by its own event pair)")
    p.add_argument("--cuda-graphs", dest="cuda_graphs", action="store_true",
                   help="CUDA: capture each infer step in a CUDA graph and replay it")
    p.add_argument("--profile", action="store_true",
                   help="after timing, capture a trace per cell in a separate pass")
    p.add_argument("--ranks", type=_positive_int, default=None,
                   help="train cells data parallel over N ranks on this machine, each with "
                        "--threads cores of its own (docs/distributed.md)")
    p.add_argument("--parallel", type=_csv, default=None,
                   help="with --ranks: torch's strategies, ddp and/or fsdp (default ddp)")
    p.add_argument("--counts", action="store_true",
                   help="after timing, count each CPU cell's instructions per step under "
                        "valgrind's callgrind (docs/counts.md)")
    p.add_argument("--counts-steps", dest="counts_steps", type=_positive_int, default=None,
                   help="steps counted per cell, each by itself (default 3)")
    p.add_argument("--counts-cycles", dest="counts_cycles", action="store_true",
                   help="with --counts: also estimated cycles from callgrind's cache "
                        "simulation (several times slower)")
    p.add_argument("--processes", type=_positive_int, default=1,
                   help="cell processes per cell; `lab gate` compares their medians")
    p.add_argument("--env", action="append", metavar="NAME=PYTHON", default=None,
                   help="run every cell under this interpreter, named NAME (repeatable: "
                        "two framework versions in one run; `lab gate RUN --env A,B` compares "
                        "them); NAME=pip:torch==2.14.1 builds a cached environment with "
                        "those requirements (docs/upgrades.md)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where cells run: one at a time here, or as tasks on a Ray cluster")
    p.add_argument("--ray-address", dest="ray_address", default=None,
                   help="Ray cluster address (default: start or join a local one)")
    p.add_argument("--resume", metavar="RUN", default=None,
                   help="continue a stored run (folder or run id): run only the cells of this "
                        "selection it does not hold as finished, into its folder")
    p.add_argument("--resume-anyway", dest="resume_anyway", action="store_true",
                   help="with --resume: continue even on another machine, lab commit or "
                        "cell setting")
    p.set_defaults(func=_delegate("lab.commands.run", "cmd_run"))

    p = sub.add_parser("show", help="print a stored run's table")
    p.add_argument("run", help="run folder, results.json or run id")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--json", action="store_true",
                   help="print the run's suite summary (pass rate, geomean speedup, compile "
                        "time, memory compression per suite and backend) as JSON")
    p.set_defaults(func=_delegate("lab.commands.show", "cmd_show"))

    p = sub.add_parser("report", help="stored runs as markdown, an HTML page with plots, or CSV")
    p.add_argument("runs", nargs="+", metavar="run",
                   help="run folder, results.json or run id (several: --html only); with "
                        "--html DIR, a folder of stored runs (profiles/) for an index")
    p.add_argument("--workload", help="only this workload's cells (markdown)")
    p.add_argument("--html", metavar="PATH",
                   help="write one self-contained HTML page (docs/report.md); for a folder of "
                        "runs, PATH is the folder for the index and a page per run")
    p.add_argument("--csv", metavar="FILE", help="the run's cells with the lab's fields as "
                                                 "CSV; - for stdout")
    p.add_argument("--suites-csv", dest="suites_csv", metavar="FILE",
                   help="the run's suite summary (one row per suite, size, mode and backend) "
                        "as CSV; - for stdout")
    p.add_argument("--claims", metavar="JSON",
                   help="with --html: the claim verdicts of `lab check --json`")
    p.add_argument("--gate", metavar="JSON",
                   help="with --html: the benchmark verdicts of `lab gate --json`")
    p.add_argument("--title", help="with --html: the page's title")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.set_defaults(func=_delegate("lab.commands.show", "cmd_report"))

    p = sub.add_parser("profile", help="trace cells in a pass apart from timing")
    add_selection_arguments(p)
    p.set_defaults(func=_delegate("lab.commands.run", "cmd_profile"))

    p = sub.add_parser("check", help="verdicts on performance claims (TOML)")
    p.add_argument("claims", help="claim file, e.g. claims/seed.toml")
    p.add_argument("--run", help="stored run to read samples from (default: run what is needed)")
    p.add_argument("--stored-only", dest="stored_only", action="store_true",
                   help="judge only the cells of --run; never run missing cells")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--json", action="store_true",
                   help="print the verdicts as JSON on stdout (progress goes to stderr)")
    p.set_defaults(func=_delegate("lab.commands.verdicts", "cmd_check"))

    p = sub.add_parser("gate", help="regression gate: exit 1 when CANDIDATE is slower")
    p.add_argument("baseline", help="the reference run: folder, results.json or run id")
    p.add_argument("candidate", nargs="?", default=None,
                   help="the run under test: folder, results.json or run id (none: the "
                        "baseline run, with --env OLD,NEW)")
    p.add_argument("--env", metavar="OLD,NEW", default=None,
                   help="compare framework environments (lab run --env): the baseline's OLD "
                        "cells against the candidate's NEW ones (docs/upgrades.md)")
    p.add_argument("--threshold", type=_threshold, default="5%",
                   help="the slowdown that fails the gate: 10%%, 10 (a percentage) or 0.1 "
                        "(a fraction below 1)")
    p.add_argument("--counts-threshold", dest="counts_threshold", type=_threshold,
                   default="0.5%",
                   help="where both runs counted a benchmark (lab run --counts): the change "
                        "in instructions per step that fails the gate (docs/counts.md)")
    p.add_argument("--detect", type=_threshold, default=None,
                   help="the slowdown the gate's process-count guidance plans for (default: "
                        "twice --threshold): how many processes per side see it at 95%% power")
    p.add_argument("--force", action="store_true",
                   help="compare runs of different machines, threads, precision or device")
    p.add_argument("--allow-missing", dest="allow_missing", action="store_true",
                   help="pass even when the candidate lacks benchmarks the baseline measured")
    p.add_argument("--markdown", help="also append the summary to this file (e.g. "
                                      "$GITHUB_STEP_SUMMARY)")
    p.add_argument("--json", action="store_true",
                   help="print the verdicts as JSON on stdout instead of the markdown")
    p.add_argument("--noise-floor", dest="noise_floor", type=_positive_float, default=None,
                   help="between-process sd of log step time on this machine (default: the "
                        "lab's calibrated floor; bench/calibrate_gate.py measures yours)")
    p.set_defaults(func=_delegate("lab.commands.verdicts", "cmd_gate"))

    p = sub.add_parser("history", help="change points in a benchmark's stored series")
    p.add_argument("--machine", help="machine id (default: this machine)")
    p.add_argument("--benchmark", help="benchmark name (default: all)")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--json", action="store_true", help="print the change points as JSON")
    p.set_defaults(func=_delegate("lab.commands.verdicts", "cmd_history"))

    p = sub.add_parser("diff", help="what changed between two runs: step time, kernels and ops, "
                                    "graphs, compile, memory, generated code, versions")
    p.add_argument("baseline", help="run folder, its results.json, or run id")
    p.add_argument("candidate", help="run folder, its results.json, or run id")
    p.add_argument("--benchmark", action="append",
                   help="only this benchmark (repeatable; default: every shared one)")
    p.add_argument("--out", default=DEFAULT_OUT, help="where run ids are looked up")
    p.add_argument("--json", action="store_true", help="print the diff as JSON on stdout")
    p.set_defaults(func=_delegate("lab.commands.diff", "cmd_diff"))
    _finish(parser, sub)
    return parser


INTERRUPTED = 130  # the shell's code for SIGINT; SIGTERM and SIGHUP end a run the same way


class _ReaderMayClose:
    """sys.stdout for a reader that may stop reading (`lab history --json | head`): once the
    pipe is closed the rest of the output is dropped and the command runs to its end, so what
    it measures is stored and its exit code is its own, with no traceback. On any failure to
    write, the descriptor is pointed at /dev/null (the Python docs' advice for SIGPIPE), so the
    interpreter's last flush cannot fail again. Any other failure (a full disk) is kept in
    `failure` and the rest dropped alike: the command still runs to its end and stores what it
    measured, then main says it in one line and exits 2."""

    def __init__(self, stream):
        self._stream = stream
        self.reader_gone = False
        self.failure: OSError | None = None

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def _failed(self, exc: OSError) -> None:
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):  # not a file (a test's capture)
            fd = None
        if fd is not None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
        if not isinstance(exc, BrokenPipeError):
            self.failure = exc
        self.reader_gone = True

    def write(self, text):
        if not self.reader_gone:
            try:
                return self._stream.write(text)
            except OSError as exc:
                self._failed(exc)
        return len(text)

    def flush(self):
        if not self.reader_gone:
            try:
                self._stream.flush()
            except OSError as exc:
                self._failed(exc)


def _interrupt(signum, frame):
    """SIGTERM (CI runners, `timeout`) and SIGHUP (a closed terminal) stop a run as Ctrl-C
    does: the running cell's process group is killed, its temp folders removed, finished cells
    kept, the run marked incomplete. Later signals are ignored so that clean-up finishes."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _resumed_selection(parser, args, argv: list[str] | None):
    """`lab run --resume RUN` with no --workload or --suite: the selection is RUN's own command
    line (lab.running.resume checks it as any other), with the flags given now after it (they
    win)."""
    if getattr(args, "command", None) != "run" or args.resume is None or args.workload \
            or args.suite:
        return args
    from lab.store import reader as results

    stored = results.load_run(args.resume, args.out)["lab"].get("argv") or []
    if not stored or stored[0] != "run":
        raise UsageError(f"--resume {args.resume}: the run stores no `lab run` command line; "
                         f"give its selection (--workload, --suite)")
    given = list(sys.argv[1:] if argv is None else argv)
    return parser.parse_args([*stored, *given[given.index("run") + 1:]])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    stdout = sys.stdout
    sys.stdout = guard = _ReaderMayClose(stdout)
    # handlers can only be set in the main thread; main() called from another keeps Python's
    previous = {}
    if threading.current_thread() is threading.main_thread():
        # SIGINT too: a second Ctrl-C during clean-up is ignored, not a death by SIGINT
        previous = {sig: signal.signal(sig, _interrupt)
                    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        args = _resumed_selection(parser, parser.parse_args(argv), argv)
        code = args.func(args)
        guard.flush()  # what is still buffered: a full disk shows here, not at exit
        if guard.failure is not None:  # the output is lost: not the command's own outcome
            raise UsageError(f"cannot write to stdout: {guard.failure.strerror or guard.failure}")
        return code
    except UsageError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before or after the run loop, which handles its own
        print("lab: interrupted", file=sys.stderr)
        return INTERRUPTED
    finally:
        guard.flush()  # what is still buffered, while a closed reader is still handled
        sys.stdout = stdout
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
