"""`lab list`, `lab show` and `lab report`: what the lab has, and stored runs read back."""

from __future__ import annotations

import sys
from pathlib import Path

from lab.core.errors import UsageError
from lab.reports import markdown as report
from lab.reports import rows
from lab.reports import terminal as table
from lab.store import outputs
from lab.store import reader as results


def cmd_list(args) -> int:
    """What the lab has, at once (static descriptions: no framework imported here), then what
    runs on this machine: each framework's answer comes from a child process, run side by
    side, and is cached until an installed framework or the backends' code changes."""
    if getattr(args, "suites", False):
        from lab.commands.suites import cmd_list_suites

        return cmd_list_suites(args)
    from rich.table import Table

    from lab import compile as backends
    from lab import kernels, workloads

    console = table.make_console()  # the terminal's width; when piped, the run table's
    grid = Table(title="workloads")
    for column in ("name", "frameworks", "cpu shape", "summary"):
        grid.add_column(column)
    for name in workloads.names():
        w = workloads.get(name)
        shape = ", ".join(f"{k}={v}" for k, v in w.default_shape("cpu").items())
        grid.add_row(name, ", ".join(w.frameworks), shape, w.summary)
    console.print(grid)
    console.print("  also: --workload path/to/file.py:factory (your own torch model)")

    grid = Table(title="Triton kernels (lab/kernels)")
    grid.add_column("op")
    grid.add_column("summary")
    for name, summary in kernels.DESCRIPTIONS.items():
        grid.add_row(name, summary)
    console.print(grid)

    devices = ["cpu", "cuda"] if _gpu_driver() else ["cpu"]
    supports = _supports_cached(devices)
    # CUDA is usable when a framework says so (its own check, in its child)
    cuda = any(answers.get("cuda") == "yes" for answers in supports.values())
    grid = Table(title="backends (what this machine can run)")
    for column in ("name", "options", "baseline", "runs here", "summary"):
        grid.add_column(column)
    for info in backends.BACKENDS.values():
        answers = {d: a for d, a in supports.get(info.name, {}).items() if cuda or d == "cpu"}
        grid.add_row(info.name, ", ".join(info.options) or "-", info.baseline or "-",
                     _runs_here(info, answers), info.summary)
    console.print(grid)
    console.print(f"devices: cpu{', cuda' if cuda else ' (cuda: no CUDA device available)'}")
    return 0


def _gpu_driver() -> bool:
    """An NVIDIA driver's device files or tool: only then are the frameworks asked about CUDA
    (asking costs nothing more; not asking keeps a CPU machine's list free of `cuda: no`)."""
    import glob
    import shutil

    return bool(glob.glob("/dev/nvidia[0-9]*")) or shutil.which("nvidia-smi") is not None


def _cache_key(devices: list[str]) -> str:
    """What the answers depend on: the interpreter, where each framework package is installed
    and when (a reinstall changes it), the backends' code, and the devices asked about."""
    import hashlib
    import importlib.util

    from lab import compile as backends

    digest = hashlib.sha256(f"{sys.executable}|{','.join(devices)}".encode())
    packages = sorted({p for info in backends.BACKENDS.values()
                       for p in [backends.FRAMEWORK_PACKAGE[info.framework], *info.requires]})
    for package in packages:
        spec = importlib.util.find_spec(package)
        origin = Path(spec.origin) if spec is not None and spec.origin else None
        stamp = origin.stat().st_mtime_ns if origin is not None and origin.exists() else None
        digest.update(f"|{package}:{origin}:{stamp}".encode())
    for source in sorted(Path(backends.__file__).parent.rglob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()


def _cache_file() -> Path:
    import os

    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "perflab" / "list-support.json"


def _supports_cached(devices: list[str]) -> dict[str, dict[str, str]]:
    """The children's answers, from the cache when nothing they depend on changed; a set of
    answers with an `unknown` (a child that died or hung) is not kept."""
    import json

    from lab.store import folders as store

    key, path = _cache_key(devices), _cache_file()
    try:
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached["answers"]
    except (OSError, ValueError, AttributeError, KeyError):
        pass  # no cache yet, or one that cannot be read: ask
    print("asking each framework what runs here (a child process each; cached after)...",
          file=sys.stderr)
    answers = _supports(devices)
    if not any(a.startswith("unknown") for d in answers.values() for a in d.values()):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            store.atomic_write_text(path, json.dumps({"key": key, "answers": answers}))
        except OSError:
            pass  # a read-only home: the next list asks again
    return answers


SUPPORT_TIMEOUT_S = 180.0  # a framework's import on a busy 2-core machine takes 10-30 s


def _support_child(framework: str, devices: str) -> None:
    """In a child process: each backend of one framework asked whether it runs on each device,
    printed as JSON. One process per framework, as cells run: TensorFlow, torch's Triton and
    JAX each bring an LLVM, and two of them in one process abort it."""
    import json

    from lab import compile as backends

    answers = {}
    for name in backends.for_framework(framework):
        info, answers[name] = backends.BACKENDS[name], {}
        for device in devices.split(","):
            try:
                support = backends.support(info, device)
                answers[name][device] = "yes" if support.ok else f"no: {support.reason}"
            except Exception as exc:  # a broken install: its own answer, the rest still asked
                first = (str(exc).strip().splitlines() or [""])[0][:100]
                answers[name][device] = f"no: {type(exc).__name__}: {first}"
    print("LAB-SUPPORT " + json.dumps(answers))


def _supports(devices: list[str]) -> dict[str, dict[str, str]]:
    """backend name -> device -> "yes" or "no: reason", from one child per framework (run
    side by side); a child that dies or hangs makes its backends "unknown"."""
    import json
    import subprocess

    from lab import compile as backends

    children = {}
    for framework in backends.Framework:
        code = ("from lab.commands.show import _support_child; "
                f"_support_child({framework.value!r}, {','.join(devices)!r})")
        children[framework.value] = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
    found: dict[str, dict[str, str]] = {}
    for framework, child in children.items():
        try:
            out, err = child.communicate(timeout=SUPPORT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
            err = f"no answer in {SUPPORT_TIMEOUT_S:.0f} s"
        lines = [line for line in out.splitlines() if line.startswith("LAB-SUPPORT ")]
        if lines:
            found.update(json.loads(lines[-1].removeprefix("LAB-SUPPORT ")))
            continue
        why = (err.strip().splitlines() or [f"exit {child.returncode}"])[-1][:100]
        for name in backends.for_framework(framework):
            found[name] = {d: f"unknown: the {framework} check failed ({why})" for d in devices}
    return found


def _runs_here(info, answers: dict[str, str]) -> str:
    """The packages a backend lacks, or each device's answer from the backend itself."""
    from lab import compile as backends

    missing = backends.missing_packages(info)
    if missing:
        return f"no: {' and '.join(missing)} not installed"
    return "; ".join(f"{device}: {answer}" for device, answer in answers.items())


def cmd_show(args) -> int:
    path = results.find_run(args.run, args.out)
    doc = results.load(path)
    if rows.is_profile_run(doc):  # traced, not timed: its traces and hot tables instead
        table.render_profile(doc, results.resolve(path).parent)
    else:
        from lab.judge import scorecard

        summary = scorecard.summarize(results.cells(doc))
        if getattr(args, "json", False):  # the suite summary, for a dashboard or a script
            import json

            from lab.reports import keras_table

            print(json.dumps({"run": results.resolve(path).parent.name, "suites": summary,
                              "keras_table": keras_table.rows(results.cells(doc))},
                             indent=2, default=str))
            return 0
        console = table.make_console()
        table.render(doc, console)
        scorecard.render(summary, console)
        from lab.reports import keras_table

        keras_table.render(keras_table.rows(results.cells(doc)), console)
    return 0


def _verdicts_file(path: str | None, flag: str, key: str) -> list[dict] | None:
    """The verdicts a `lab check --json` / `lab gate --json` wrote (lab.commands.verdicts)."""
    if path is None:
        return None
    import json

    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UsageError(f"{flag} {path}: not JSON") from None
    items = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise UsageError(f"{flag} {path}: no {key!r} list (expected the output of "
                         f"`lab {flag.lstrip('-')} ... --json`)")
    return items


def _is_runs_folder(text: str) -> bool:
    """A folder holding run folders (profiles/), not a run folder itself."""
    from lab.reports.html.runs import KERNELS_FILE

    path = Path(text)
    return path.is_dir() and not (path / results.RESULTS).is_file() \
        and not (path / KERNELS_FILE).is_file()


HTML_FOLDER_FILE = "index.html"  # a folder named by --html gets the page as its index


def _say_skipped(folder, exc) -> None:
    print(f"lab: skipped an unreadable run: {exc}", file=sys.stderr)


def _report_html(args) -> None:
    """One page for the given runs at PATH (a folder, existing or ending in /, gets it as
    index.html), or for a folder of runs the folder PATH: index.html and a page per run."""
    from lab.reports import html as html_report

    if len(args.runs) == 1 and _is_runs_folder(args.runs[0]):
        if args.claims or args.gate:
            raise UsageError("--claims and --gate go with a report on runs, not an index")
        site = outputs.folder(args.html, "--html")
        index = html_report.write_index(args.runs[0], site, on_skip=_say_skipped)
        print(f"wrote {index}", file=sys.stderr)
        return
    sources = [results.find_run(text, args.out) for text in args.runs]
    claims = _verdicts_file(args.claims, "--claims", "claims")
    gate = _verdicts_file(args.gate, "--gate", "verdicts")
    # refused before the page is drawn; the page's links are relative to where it lands
    _, target = outputs.target(args.html, "--html", folder_file=HTML_FOLDER_FILE)
    page = html_report.write_report(sources, target, title=args.title, claims=claims,
                                    gate=gate)
    print(f"wrote {page}", file=sys.stderr)


def _one_run(args, what: str) -> dict:
    if len(args.runs) > 1:
        raise UsageError(f"{what} is of one run; several runs go into one page with --html")
    return results.load_run(args.runs[0], args.out)


def cmd_report(args) -> int:
    if (args.claims or args.gate or args.title) and not args.html:
        raise UsageError("--claims, --gate and --title go with --html")
    suites_csv = getattr(args, "suites_csv", None)
    if args.csv == "-" and suites_csv == "-":
        raise UsageError("--csv - and --suites-csv - would share stdout: give one a file")
    for flag, path in (("--csv", args.csv), ("--suites-csv", suites_csv)):
        if path and path != "-":
            outputs.target(path, flag)  # refused before anything is written
    if args.html:
        _report_html(args)
    for flag, path, what in (("--csv", args.csv, "cells_csv"),
                             ("--suites-csv", suites_csv, "suites_csv")):
        if not path:
            continue
        from lab.reports import csv_export as export

        text = getattr(export, what)(_one_run(args, flag))
        if path == "-":
            sys.stdout.write(text)
        else:
            outputs.write(path, text, flag)
            print(f"wrote {path}", file=sys.stderr)
    if args.html or args.csv or suites_csv:
        return 0
    doc = _one_run(args, "the markdown report")
    if rows.is_profile_run(doc):  # traced, not timed: its traces and hot tables instead
        folder = results.resolve(results.find_run(args.runs[0], args.out)).parent
        print(report.profile_markdown(doc, folder))
        return 0
    names = list(dict.fromkeys(c.get("workload") for c in results.cells(doc)))
    if args.workload and args.workload not in names:
        raise UsageError(f"no {args.workload!r} cells in {args.runs[0]}")
    # one table per workload: each has its own throughput unit; then per-call latency
    # (--latency cells) and peak memory, where the run has them
    from lab.judge import scorecard
    from lab.reports import keras_table

    chosen = [c for c in results.cells(doc)
              if not args.workload or c.get("workload") == args.workload]
    keras_rows = keras_table.rows(chosen)
    print("\n\n".join(filter(None, [scorecard.markdown(scorecard.summarize(chosen)),
                                     keras_table.markdown(keras_rows) if keras_rows else None, *(
        f"### {name}\n\n" + "\n\n".join(filter(None, [
            report.markdown_table(doc, name), report.latency_table(doc, name),
            report.memory_table(doc, name)]))
        for name in ([args.workload] if args.workload else names))])))
    return 0
