"""The comparison table of `lab run` and `lab show`, drawn from a stored results document
(never from live objects), so both print exactly the same thing. What each cell says is
decided in `lab.reports.rows`, as for the markdown, HTML and CSV outputs; this lays it out for
rich."""

from __future__ import annotations

import os

from lab.reports import rows
from lab.reports.rows import format_ms  # noqa: F401  (the run table's format, used by its readers)
from lab.store import reader as results

COLUMNS = ("workload", "mode", "backend", "eager ms", "ms/step", "speedup [95% CI]",
           "compile s cold/warm", "break-even steps", "throughput", "step MiB", "status")


def table_cells(row: rows.Row) -> list[str]:
    return [row.workload, row.mode, row.backend, row.eager_ms_text, row.step_ms_text,
            row.speedup_text, row.compile_text, row.break_even.text, row.throughput_text,
            row.memory_text, row.status_text]


COUNTS_COLUMN = "M instr / M cycles"  # per step, under callgrind (lab.counts)

# the p50s are the medians already shown (eager ms, ms/step): only the tail is added
LATENCY_COLUMNS = ("p90 / p99 ms", "eager p90 / p99 ms")


def latency_cells(row: rows.Row) -> list[str]:
    """Per-call percentiles (--latency) of the row's backend and, for a compiled backend, of
    its eager baseline timed interleaved in the same process."""
    return [row.tails_text, row.eager_tails_text]


def _status(cell: dict) -> str:
    return rows.build(cell).status_text


def _memory(cell: dict) -> str:
    return rows.build(cell).memory_text


PIPED_WIDTH = 200  # piped into a file or a log, whole rows beat rich's 80 columns


def make_console(file=None):
    """The terminal's width (rich reads it, and honours COLUMNS); when piped with no COLUMNS
    set, PIPED_WIDTH, so a log keeps each row on its line. `lab list` prints through this too."""
    from rich.console import Console

    console = Console(file=file)
    if console.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        return console
    return Console(file=file, width=PIPED_WIDTH)


def render(doc: dict, console=None) -> None:
    from rich.table import Table

    console = console or make_console()
    lab = doc.get("lab", {})
    machine = doc.get("machine_info", {}).get("lab_machine_id", "?")
    state = "complete" if lab.get("complete") else "INCOMPLETE (interrupted or still running)"
    run_rows = rows.of_run(doc)
    # the arithmetic the numbers were measured in: in the title when one precision holds for
    # the whole run, else a column beside the backend
    found = list(dict.fromkeys(row.precision or "?" for row in run_rows))
    where = f", precision {found[0]}" if len(found) == 1 else ""
    table = Table(title=f"run {lab.get('run_id', '?')} on {machine}{where} - {state}")
    columns = list(COLUMNS)
    if len(found) > 1:
        columns.insert(columns.index("backend") + 1, "precision")
    # --latency cells: their percentiles beside the medians (which are their p50s)
    latency = any(row.latency_ms for row in run_rows)
    if latency:
        at = columns.index("speedup [95% CI]") + 1
        columns[at:at] = LATENCY_COLUMNS
        # per call, throughput is items / p50: it gives its place to the tails (lab report
        # keeps it)
        columns.remove("throughput")
    if any(row.counts for row in run_rows):  # lab run --counts
        columns.insert(columns.index("status"), COUNTS_COLUMN)
    for column in columns:
        # numbers stay on one line; the status (with its reason) folds, but never below a
        # readable width when --latency's columns crowd the row
        table.add_column(column, overflow="fold", no_wrap=column != "status",
                         min_width=16 if column == "status" else None)
    for row in run_rows:
        # by name, so an added column (precision, the tails) cannot shift the others
        cells = dict(zip(COLUMNS, table_cells(row), strict=True))
        cells.update(zip(LATENCY_COLUMNS, latency_cells(row), strict=True))
        cells["precision"] = row.precision or "?"
        cells[COUNTS_COLUMN] = row.counts_text
        table.add_row(*(cells[column] for column in columns))
    console.print(table)
    started_busy = rows.start_load_warning(doc)
    if started_busy:
        console.print(f"[bold]warning:[/] {started_busy}")
    busy = [row for row in run_rows if row.busy]
    if busy:
        worst = max(row.other_load_cores or 0 for row in busy)
        console.print(f"[bold]warning:[/] {len(busy)} cell(s) ran while other work used the "
                      f"machine (up to {worst:.1f} cores): their timings are suspect")
    console.print("eager ms: median of the framework's eager step (for a compiled backend, "
                  "measured interleaved in the same process); speedup = eager / compiled "
                  "medians with a bootstrap 95% interval; break-even uses the cold compile, "
                  "with the steps its interval maps to (undetermined where the speedup's "
                  "interval spans 1x).")
    console.print("step MiB: a step's peak memory above what was resident, eager / compiled "
                  "(eager over compiled as a ratio where both are measurable; docs/memory.md)."
                  + (" Latency cells: one call per sample; ms are per call and their medians "
                     "are the p50s." if latency else ""))
    if COUNTS_COLUMN in columns:
        console.print(f"{COUNTS_COLUMN}: millions of instructions and of estimated cycles per "
                      "step, counted single-threaded under valgrind's callgrind "
                      "(docs/counts.md)")


PROFILE_TOP = 10  # hot rows per side; the rest is in the side's hot.csv


def profile_sides(doc: dict, folder):
    """(cell name, its profile entry, [(backend, hot table or None, top rows, side)]) for every
    traced cell of a run, the traces found on disk included (an interrupted `lab profile`)."""
    from lab.reports.html.runs import Run, hot_rows, profile_entries

    run = Run(doc, folder, results.cells(doc))
    for name, entry in profile_entries(run):
        sides = [(backend, *hot_rows(run, side, PROFILE_TOP), side)
                 for backend, side in (entry.get("sides") or {}).items()]
        yield name, entry, sides


def render_profile(doc: dict, folder, console=None) -> None:
    """A `lab profile` run has no timings, so its table would be dashes: what it holds is
    shown instead, per traced cell its status, each side's hottest rows and the files."""
    from rich.table import Table

    console = console or make_console()
    lab = doc.get("lab", {})
    state = "complete" if lab.get("complete") else "INCOMPLETE (interrupted or still running)"
    traced = list(profile_sides(doc, folder))
    console.print(f"profile run {lab.get('run_id', '?')} on "
                  f"{doc.get('machine_info', {}).get('lab_machine_id', '?')} - {state}: "
                  f"{len(traced)} traced cell(s), no timings (`lab run` measures)")
    for name, entry, sides in traced:
        reason = f": {entry['reason']}" if entry.get("reason") else ""
        console.print(f"[bold]{name}[/]: {entry.get('status') or '?'}{reason}")
        for backend, hot, top, side in sides:
            files = " ".join(f"{what}: {folder / side[key]}" for what, key in
                             (("trace", "trace"), ("table", "hot_csv")) if side.get(key))
            if hot is None:
                why = side.get("hot_error") or "none stored"
                console.print(f"  {backend}: no hot table ({why}) {files}")
                continue
            grid = Table(title=f"{backend}: hottest by self time, median traced step "
                               f"{hot.get('step_us', 0):.0f} us over {hot.get('steps', '?')} "
                               f"steps; {hot.get('kernels_per_step', 0):g} "
                               f"{hot.get('kernel_unit', '')}")
            for column in ("section", "kernel / event", "kind", "calls/step", "self us/step",
                           "% of step", "mean us/call"):
                grid.add_column(column, overflow="fold")
            for r in top:
                grid.add_row(r.get("section", "-"), r["name"], r.get("kind", "?"),
                             f"{r.get('count_per_step', 0):g}",
                             f"{r.get('self_us_per_step', 0):.1f}",
                             f"{100 * (r.get('share') or 0):.1f}", f"{r.get('mean_us', 0):.1f}")
            console.print(grid)
            console.print(f"  {files}")
        if entry.get("generated_code"):
            console.print(f"  generated code: {', '.join(entry['generated_code'][:4])}")
