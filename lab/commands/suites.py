"""Suites on the command line: `--suite`/`--size` as workloads and shape, and `lab list
--suites`, every model of every suite with its size and whether it builds here."""

from __future__ import annotations

from lab.core.errors import UsageError
from lab.reports import terminal as table


def suite_selection(args) -> tuple[list[str], dict]:
    """(workload names, shape keys) of --workload, --suite and --size: the suites' models after
    the workloads named, and the size as the suite workloads' `tiny` shape key."""
    from lab.workloads import suites

    named = list(getattr(args, "workload", None) or [])
    asked = list(getattr(args, "suite", None) or [])
    if not named and not asked:
        raise UsageError("give --workload, --suite or both (`lab list`, `lab list --suites`)")
    chosen = list(named)
    for suite in asked:
        try:
            chosen += [n for n in suites.names(suite) if n not in chosen]
        except suites.UnknownSuite as exc:
            raise UsageError(f"--suite: {exc}") from None
    size = getattr(args, "size", None)
    if size is None:
        return chosen, {}
    if not any(suites.suite_of(n) for n in chosen):
        raise UsageError(f"--size {size}: no suite model is selected (--suite hf, or "
                         f"--workload hf/bert)")
    return chosen, suites.size_shape(size)


DEFAULT_BACKENDS = ["torch-eager", "torch-compile"]


def default_backends(chosen: list[str]) -> list[str]:
    """The backends when --backend is not given: torch eager and compiled, and for the keras
    suite's models its compiled backends on TensorFlow, JAX and PyTorch (each cell times its
    eager side too, in the same process)."""
    from lab.workloads import suites
    from lab.workloads.suites import keras

    on_keras = [n for n in chosen if suites.suite_of(n) == keras.SUITE]
    return ([] if len(on_keras) == len(chosen) else list(DEFAULT_BACKENDS)) + \
        (list(keras.BACKENDS) if on_keras else [])


def _millions(count: int) -> str:
    return f"{count / 1e6:,.1f}M" if count >= 1e6 else f"{count / 1e6:.2f}M"


def suite_rows() -> list[dict]:
    """Every suite model: its suite, head, task, parameters at both sizes (counted on the
    meta device: nothing is allocated) and `status`: `builds`, or the build's error."""
    from lab.workloads import suites

    rows = []
    for suite in suites.SUITES:
        module = suites._module(suite)
        for entry in suites.entries(suite):
            row = {"suite": suite, "model": entry.workload_name, "group": entry.group,
                   "head": entry.model, "task": entry.task, "note": entry.note}
            try:
                row["params_real"] = module.parameters(entry, tiny=False)
                row["params_tiny"] = module.parameters(entry, tiny=True)
                row["status"] = "builds"
            except Exception as exc:  # a model that cannot be built is listed, with why
                row["status"] = f"build_error: {type(exc).__name__}: " \
                                f"{str(exc).splitlines()[0] if str(exc) else ''}"[:200]
            rows.append(row)
    return rows


def cmd_list_suites(args) -> int:
    from rich.table import Table

    console = table.make_console()
    rows = suite_rows()
    grid = Table(title="suite models (lab run --suite NAME [--size tiny])")
    for column in ("model", "group", "head (task)", "params", "tiny params", "status",
                   "real size"):
        grid.add_column(column)
    for r in rows:
        grid.add_row(r["model"], r["group"], f"{r['head']} ({r['task']})",
                     _millions(r["params_real"]) if "params_real" in r else "-",
                     _millions(r["params_tiny"]) if "params_tiny" in r else "-",
                     r["status"], r["note"] or "the config class's defaults")
    console.print(grid)
    building = sum(r["status"] == "builds" for r in rows)
    console.print(f"{len(rows)} models, {building} build here; whether each runs in eager and "
                  f"compiles is what `lab run --suite` measures (its status column)")
    return 0
