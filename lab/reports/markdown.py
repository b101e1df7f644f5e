"""A stored run as a markdown throughput table (`lab report RUN [--workload W]`).

One row per cell, in run order: throughput (the workload's unit, e.g. images/s) with the 95%
interval that maps the median step time's bootstrap interval, ms/step, and for a compiled
backend its speedup over its own framework's eager mode, its compile seconds (cold / warm
cache) and the break-even with its interval. Cells without samples show their status and
reason instead of numbers. A precision column (fp32, amp-bf16, ...: lab.core.precision) follows the
mode wherever the run records one. What each cell says comes from `lab.reports.rows`, as in the
terminal, HTML and CSV outputs.
"""

from __future__ import annotations

import textwrap

from lab.reports import rows
from lab.reports.rows import format_ms


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def _ms(ms: float) -> str:
    return format_ms(ms / 1e3)  # the tables' milliseconds


def _text(value: str) -> str:
    """A table cell's words: a '|' cannot add a column, a long reason ends at a word."""
    return textwrap.shorten(value.replace("|", "/"), width=160, placeholder=" ...")


def _row(row: rows.Row, with_precision: bool) -> str:
    mode = f"{row.mode} | {row.precision or '?'}" if with_precision else row.mode
    head = f"| {row.framework or '?'} | {row.backend} | {mode} |"
    if row.median_s is None and row.throughput is None:  # nothing measured: the status says why
        return f"{head} - | - | - | - | - | - | {_text(row.status_text)} |"
    lo, hi = row.throughput_ci95 or (None, None)
    interval = f"[{_fmt(lo)}, {_fmt(hi)}]" if lo is not None else "-"
    tput = "-" if row.throughput is None else _fmt(row.throughput)
    return (f"{head} {tput} | {interval} | {format_ms(row.median_s)} | "
            f"{row.speedup_text} | {row.compile_text} | {row.break_even.text} | "
            f"{_text(row.status_text)} |")


def markdown_table(doc: dict, workload: str | None = None) -> str:
    """One workload's cells (or all) as a markdown table, in run order."""
    run_rows = rows.of_run(doc, workload)
    unit = next((r.throughput_unit for r in run_rows if r.throughput_unit), "items/s")
    with_precision = any(r.precision for r in run_rows)
    mode = "mode | precision" if with_precision else "mode"
    head = (f"| framework | backend | {mode} | {unit} | 95% interval | ms/step "
            f"| speedup over own eager [95% CI] | compile s (cold / warm) | break-even steps "
            f"| status |")
    rule = "|---|---|---|" + ("---|" if with_precision else "") + "--:|--:|--:|--:|--:|--:|---|"
    return "\n".join([head, rule, *(_row(r, with_precision) for r in run_rows)])


def _interval(entry: list) -> str:
    value, lo, hi = entry
    return f"{_ms(value)} [{_ms(lo)}, {_ms(hi)}]"


def latency_table(doc: dict, workload: str | None = None) -> str:
    """The --latency cells' per-call percentiles (ms, bootstrap 95% intervals), the backend's
    and its own eager's side by side; "" when the run has none."""
    run_rows = [r for r in rows.of_run(doc, workload) if r.latency_ms]
    if not run_rows:
        return ""
    head = ("| backend | mode | shape | calls | p50 ms [95% CI] | p90 ms [95% CI] "
            "| p99 ms [95% CI] | eager p50 / p90 / p99 ms | p50 speedup over eager [95% CI] |")
    lines = [head, "|---|---|---|--:|--:|--:|--:|--:|--:|"]
    for row in run_rows:
        mine, eager = row.latency_ms, row.baseline_latency_ms
        eager_text = " / ".join(_ms(eager[p][0]) for p in ("p50", "p90", "p99")) \
            if eager else "-"
        # a latency cell's medians are its p50s: the speedup is the p50s'
        lines.append(f"| {row.backend} | {row.mode} | {row.shape} | {mine['n']} | "
                     f"{_interval(mine['p50'])} | {_interval(mine['p90'])} | "
                     f"{_interval(mine['p99'])} | {eager_text} | {row.speedup_text} |")
    return "\n".join(lines)


def memory_table(doc: dict, workload: str | None = None) -> str:
    """Peak memory per cell (lab.cell.memory): the step's above what was resident, eager's beside
    it, their ratio, and the first call's (compile or conversion) apart; "" when none."""
    run_rows = [r for r in rows.of_run(doc, workload) if r.memory]
    if not run_rows:
        return ""

    def mib(value) -> str:
        return "-" if value is None else f"{value:,.1f}"

    lines = ["| backend | mode | step MiB | eager step MiB | eager / step | first call MiB "
             "| peak above import MiB | probe |", "|---|---|--:|--:|--:|--:|--:|---|"]
    for row in run_rows:
        mem = row.memory
        ratio = mem.get("ratio_eager_over_candidate")
        ratio_text = f"{ratio:.2f}x" if ratio is not None else \
            ("-" if mem.get("baseline_step_peak_above_resident_mib") is None
             else f"none: {mem.get('ratio_unresolved') or 'not measurable'}")
        lines.append(f"| {row.backend} | {row.mode} | "
                     f"{mib(mem.get('step_peak_above_resident_mib'))} | "
                     f"{mib(mem.get('baseline_step_peak_above_resident_mib'))} | {ratio_text} | "
                     f"{mib(mem.get('first_call_peak_above_start_mib'))} | "
                     f"{mib(mem.get('peak_above_import_mib'))} | {mem.get('probe')} |")
    return "\n".join(lines)


def profile_markdown(doc: dict, folder) -> str:
    """A `lab profile` run (traced, not timed): per traced cell its status, each side's
    hottest rows and the trace and table files, in place of a table of dashes."""
    from lab.reports import terminal as table

    parts = []
    for name, entry, sides in table.profile_sides(doc, folder):
        reason = f": {_text(entry['reason'])}" if entry.get("reason") else ""
        parts.append(f"### {name}\n\nprofile: {entry.get('status') or '?'}{reason}")
        for backend, hot, top, side in sides:
            files = " · ".join(f"{what} `{folder / side[key]}`" for what, key in
                               (("trace", "trace"), ("table", "hot_csv")) if side.get(key))
            if hot is None:
                why = side.get("hot_error") or "none stored"
                parts.append(f"**{backend}**: no hot table ({_text(why)}); {files}")
                continue
            lines = [f"**{backend}**: hottest by self time, median traced step "
                     f"{hot.get('step_us', 0):.0f} us over {hot.get('steps', '?')} steps; "
                     f"{hot.get('kernels_per_step', 0):g} {hot.get('kernel_unit', '')}; "
                     f"{files}", "",
                     "| section | kernel / event | kind | calls/step | self us/step "
                     "| % of step | mean us/call |", "|---|---|---|--:|--:|--:|--:|"]
            lines += [f"| {r.get('section', '-')} | `{r['name'].replace('|', '/')}` | "
                      f"{r.get('kind', '?')} | {r.get('count_per_step', 0):g} | "
                      f"{r.get('self_us_per_step', 0):.1f} | {100 * (r.get('share') or 0):.1f} "
                      f"| {r.get('mean_us', 0):.1f} |" for r in top]
            parts.append("\n".join(lines))
    return "\n\n".join(parts) or "a profile run with no traces stored"
