"""`lab list`, `lab show` and `lab report`: what the lab has, and stored runs read back."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from lab import outputs, report, results, table
from lab.errors import UsageError


def cmd_list(args) -> int:
    from rich.table import Table

    from lab import backends, session, workloads

    console = table.make_console()  # wide enough when piped, like the run table
    grid = Table(title="workloads")
    for column in ("name", "frameworks", "cpu shape", "summary"):
        grid.add_column(column)
    for name in workloads.names():
        w = workloads.get(name)
        shape = ", ".join(f"{k}={v}" for k, v in w.default_shape("cpu").items())
        grid.add_row(name, ", ".join(w.frameworks), shape, w.summary)
    console.print(grid)
    console.print("  also: --workload path/to/file.py:factory (your own torch model)")

    cuda = session.cuda_available()
    grid = Table(title="backends (what this machine can run)")
    for column in ("name", "options", "baseline", "runs here", "summary"):
        grid.add_column(column)
    supports = _supports(["cpu", "cuda"] if cuda else ["cpu"])
    for info in backends.BACKENDS.values():
        grid.add_row(info.name, ", ".join(info.options) or "-", info.baseline or "-",
                     _runs_here(info, supports.get(info.name, {})), info.summary)
    console.print(grid)
    console.print(f"devices: cpu{', cuda' if cuda else ' (cuda: no CUDA device available)'}")

    if importlib.util.find_spec("lab.kernels") is not None:
        try:
            from lab.kernels import KERNELS
        except ImportError as exc:
            console.print(f"kernels: unavailable ({exc})")
        else:
            grid = Table(title="Triton kernels (lab/kernels)")
            grid.add_column("op")
            grid.add_column("summary")
            for name, summary in KERNELS.items():
                grid.add_row(name, summary if isinstance(summary, str)
                             else (summary.__doc__ or "").strip().splitlines()[0])
            console.print(grid)
    return 0


SUPPORT_TIMEOUT_S = 180.0  # a framework's import on a busy 2-core machine takes 10-30 s


def _support_child(framework: str, devices: str) -> None:
    """In a child process: each backend of one framework asked whether it runs on each device,
    printed as JSON. One process per framework, as cells run: TensorFlow, torch's Triton and
    JAX each bring an LLVM, and two of them in one process abort it."""
    import json

    from lab import backends

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

    from lab import backends

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
    from lab import backends

    missing = backends.missing_packages(info)
    if missing:
        return f"no: {' and '.join(missing)} not installed"
    return "; ".join(f"{device}: {answer}" for device, answer in answers.items())


def cmd_show(args) -> int:
    table.render(results.load_run(args.run, args.out))
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
    from lab.html_report.runs import KERNELS_FILE

    path = Path(text)
    return path.is_dir() and not (path / results.RESULTS).is_file() \
        and not (path / KERNELS_FILE).is_file()


HTML_FOLDER_FILE = "index.html"  # a folder named by --html gets the page as its index


def _say_skipped(folder, exc) -> None:
    print(f"lab: skipped an unreadable run: {exc}", file=sys.stderr)


def _report_html(args) -> None:
    """One page for the given runs at PATH (a folder, existing or ending in /, gets it as
    index.html), or for a folder of runs the folder PATH: index.html and a page per run."""
    from lab import html_report

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
    if args.csv and args.csv != "-":
        outputs.target(args.csv, "--csv")  # refused before anything is written
    if args.html:
        _report_html(args)
    if args.csv:
        from lab import export

        text = export.cells_csv(_one_run(args, "--csv"))
        if args.csv == "-":
            sys.stdout.write(text)
        else:
            outputs.write(args.csv, text, "--csv")
            print(f"wrote {args.csv}", file=sys.stderr)
    if args.html or args.csv:
        return 0
    doc = _one_run(args, "the markdown report")
    names = list(dict.fromkeys(c.get("workload") for c in results.cells(doc)))
    if args.workload and args.workload not in names:
        raise UsageError(f"no {args.workload!r} cells in {args.runs[0]}")
    # one table per workload: each has its own throughput unit; then per-call latency
    # (--latency cells) and peak memory, where the run has them
    print("\n\n".join(
        f"### {name}\n\n" + "\n\n".join(filter(None, [
            report.markdown_table(doc, name), report.latency_table(doc, name),
            report.memory_table(doc, name)]))
        for name in ([args.workload] if args.workload else names)))
    return 0
