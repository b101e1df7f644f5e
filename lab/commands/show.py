"""`lab list`, `lab show` and `lab report`: what the lab has, and stored runs read back."""

from __future__ import annotations

import importlib.util

from lab import report, results, table
from lab.errors import UsageError


def cmd_list(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from lab import backends, session, workloads

    console = Console()
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
    for info in backends.BACKENDS.values():
        missing = backends.missing_packages(info)
        here = f"no: {' and '.join(missing)} not installed" if missing else "yes"
        grid.add_row(info.name, ", ".join(info.options) or "-", info.baseline or "-", here,
                     info.summary)
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


def cmd_show(args) -> int:
    table.render(results.load_run(args.run, args.out))
    return 0


def cmd_report(args) -> int:
    doc = results.load_run(args.run, args.out)
    names = list(dict.fromkeys(c.get("workload") for c in results.cells(doc)))
    if args.workload and args.workload not in names:
        raise UsageError(f"no {args.workload!r} cells in {args.run}")
    # one table per workload: each has its own throughput unit
    print("\n\n".join(f"### {name}\n\n{report.markdown_table(doc, name)}"
                      for name in ([args.workload] if args.workload else names)))
    return 0
