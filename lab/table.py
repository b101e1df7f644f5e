"""The comparison table of `lab run` and `lab show`, drawn from a stored results document
(never from live objects), so both print exactly the same thing."""

from __future__ import annotations

import math

from lab import precision, results


def format_ms(seconds) -> str:
    """Seconds as milliseconds with the digits a table needs; `-` for none."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def _speedup(row: dict) -> str:
    if row.get("status") != "ok" or row.get("speedup") is None:
        return "-"
    lo, hi = row["speedup_ci95"]
    return f"{row['speedup']:.2f}x [{lo:.2f}, {hi:.2f}]"


def _compile(row: dict) -> str:
    cold, warm = row.get("compile_s_cold"), row.get("compile_s_warm")
    if cold is None:
        return "-"
    return f"{cold:.1f} / {warm:.1f}" if warm is not None else f"{cold:.1f} / -"


def _break_even(row: dict) -> str:
    if row.get("status") != "ok" or row.get("compile_s_cold") is None:
        return "-"
    steps = row.get("break_even_steps_cold")
    return "never" if steps is None else f"{steps:,.0f}"


def _throughput(row: dict) -> str:
    value = row.get("throughput")
    if not value:
        return "-"
    unit = row.get("throughput_unit") or "/s"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.1f} {unit}"


def _status(row: dict) -> str:
    status = row.get("status", "?")
    if status == "ok":
        # busy: other work used the machine's cores while the cell ran (lab.machine_load)
        sampling = row.get("sampling") or {}
        cut = (f"{sampling.get('rounds')} of {sampling.get('rounds_planned')} samples: budget"
               if sampling.get("cut_by_budget") else None)
        # a shape cycle (llama-varlen): how many graphs the cycle's lengths cost the compiler
        cycle = (row.get("diagnostics") or {}).get("cycle") or {}
        graphs = (f"{cycle['graphs']} graphs, {cycle['recompiles']} recompiles over the cycle"
                  if "graphs" in cycle else None)
        flags = [flag for flag, on in (("noisy", row.get("noisy")),
                                       ("busy", row.get("machine_busy")), (cut, cut),
                                       (graphs, graphs)) if on]
        return f"ok ({', '.join(flags)})" if flags else "ok"
    reason = row.get("reason")
    return f"{status}: {reason}" if reason else status


COLUMNS = ("workload", "mode", "backend", "eager ms", "ms/step", "speedup [95% CI]",
           "compile s cold/warm", "break-even steps", "throughput", "step MiB", "status")


def table_cells(row: dict) -> list[str]:
    compiled = row.get("baseline_backend") is not None
    eager_ms = row.get("baseline_median_s") if compiled else row.get("median_s")
    return [row["workload"], row["mode"], row["backend"], format_ms(eager_ms),
            format_ms(row.get("median_s")) if compiled else "-", _speedup(row), _compile(row),
            _break_even(row), _throughput(row), _memory(row), _status(row)]


def _memory(row: dict) -> str:
    """The step's peak above what was resident; for a compiled backend eager's beside it
    (eager / compiled is the compression ratio)."""
    mem = row.get("memory") or {}
    mine = mem.get("step_peak_above_resident_mib")
    if mine is None:
        return "-"
    eager = mem.get("baseline_step_peak_above_resident_mib")
    if eager is None:
        return f"{mine:,.1f}"
    ratio = mem.get("ratio_eager_over_candidate")  # None below the probe's resolution
    return f"{eager:,.1f} / {mine:,.1f}" + (f" ({ratio:.2f}x)" if ratio is not None else "")


# the p50s are the medians already shown (eager ms, ms/step): only the tail is added
LATENCY_COLUMNS = ("p90 / p99 ms", "eager p90 / p99 ms")


def _percentiles(latency: dict | None) -> str:
    if not latency:
        return "-"
    return " / ".join(format_ms(latency[p][0] / 1e3) for p in ("p90", "p99"))


def latency_cells(row: dict) -> list[str]:
    """Per-call percentiles (--latency) of the row's backend and, for a compiled backend, of
    its eager baseline timed interleaved in the same process."""
    return [_percentiles(row.get("latency_ms")), _percentiles(row.get("baseline_latency_ms"))]


def make_console():
    """A console wide enough for the table even when output is piped (rich assumes 80)."""
    from rich.console import Console

    return Console(width=max(Console().width, 200))


def render(doc: dict, console=None) -> None:
    from rich.table import Table

    console = console or make_console()
    lab = doc.get("lab", {})
    machine = doc.get("machine_info", {}).get("lab_machine_id", "?")
    state = "complete" if lab.get("complete") else "INCOMPLETE (interrupted or still running)"
    rows = results.cells(doc)
    # the arithmetic the numbers were measured in: in the title when one precision holds for
    # the whole run, else a column beside the backend
    found = list(dict.fromkeys(precision.of_cell(row) or "?" for row in rows))
    where = f", precision {found[0]}" if len(found) == 1 else ""
    table = Table(title=f"run {lab.get('run_id', '?')} on {machine}{where} - {state}")
    columns = list(COLUMNS)
    if len(found) > 1:
        columns.insert(columns.index("backend") + 1, "precision")
    # --latency cells: their percentiles beside the medians (which are their p50s)
    latency = any(row.get("latency_ms") for row in rows)
    if latency:
        at = columns.index("speedup [95% CI]") + 1
        columns[at:at] = LATENCY_COLUMNS
        # per call, throughput is items / p50: it gives its place to the tails (lab report
        # keeps it)
        columns.remove("throughput")
    for column in columns:
        # numbers stay on one line; the status (with its reason) folds, but never below a
        # readable width when --latency's columns crowd the row
        table.add_column(column, overflow="fold", no_wrap=column != "status",
                         min_width=16 if column == "status" else None)
    for row in rows:
        cells = table_cells(row)
        if len(found) > 1:
            cells.insert(columns.index("precision"), precision.of_cell(row) or "?")
        if latency:
            del cells[COLUMNS.index("throughput")]
            at = columns.index(LATENCY_COLUMNS[0])
            cells[at:at] = latency_cells(row)
        table.add_row(*cells)
    console.print(table)
    hardware = doc.get("machine_info", {}).get("lab_hardware", {})
    load = lab.get("load_avg_1m_at_start")
    if load is not None and hardware.get("cpu_count") and load > 0.5 * hardware["cpu_count"]:
        console.print(f"[bold]warning:[/] the machine was busy when the run started (load "
                      f"{load:.1f} on {hardware['cpu_count']} cores): CPU timings are suspect")
    busy = [row for row in results.cells(doc) if row.get("machine_busy")]
    if busy:
        worst = max(row.get("other_load_cores") or 0 for row in busy)
        console.print(f"[bold]warning:[/] {len(busy)} cell(s) ran while other work used the "
                      f"machine (up to {worst:.1f} cores): their timings are suspect")
    console.print("eager ms: median of the framework's eager step (for a compiled backend, "
                  "measured interleaved in the same process); speedup = eager / compiled "
                  "medians with a bootstrap 95% interval; break-even uses the cold compile.")
    console.print("step MiB: a step's peak memory above what was resident, eager / compiled "
                  "(eager over compiled as a ratio where both are measurable; docs/memory.md)."
                  + (" Latency cells: one call per sample; ms are per call and their medians "
                     "are the p50s." if latency else ""))
