"""A stored run as a markdown throughput table (`lab report RUN [--workload W]`).

One row per cell, in run order: throughput (the workload's unit, e.g. images/s) with the 95%
interval that maps the median step time's bootstrap interval, ms/step, and for a compiled
backend its speedup over its own framework's eager mode and its compile seconds (cold / warm
cache). Cells without samples show their status and reason instead of numbers. A precision
column (fp32, amp-bf16, ...: lab.precision) follows the mode wherever the run records one.
"""

from __future__ import annotations

from lab import precision, results


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def _ms(ms: float) -> str:
    return f"{ms:.1f}" if ms >= 1 else f"{ms:.3f}"  # sub-millisecond steps keep 3 digits


def _row(info: dict, with_precision: bool) -> str:
    backend = info.get("backend", "?")
    status = info.get("status", "?")
    mode = f"{info.get('mode')} | {precision.of_cell(info) or '?'}" if with_precision \
        else info.get("mode")
    if info.get("throughput") is None:
        reason = (info.get("reason") or "").replace("|", "/")[:120]
        return (f"| {info.get('framework', '?')} | {backend} | {mode} | - | - | - | - "
                f"| - | "
                f"{status}: {reason} |")
    lo, hi = info["throughput_ci95"]
    speedup = "-"
    if info.get("speedup") is not None:
        s_lo, s_hi = info["speedup_ci95"]
        speedup = f"{info['speedup']:.2f}x [{s_lo:.2f}, {s_hi:.2f}]"
    compile_s = "-"
    if info.get("compile_s_cold") is not None:
        warm = info.get("compile_s_warm")
        compile_s = f"{info['compile_s_cold']:.1f} / {'-' if warm is None else f'{warm:.1f}'}"
    noisy = " (noisy)" if info.get("noisy") else ""
    return (f"| {info['framework']} | {backend} | {mode} | {_fmt(info['throughput'])} | "
            f"[{_fmt(lo)}, {_fmt(hi)}] | {_ms(info['median_s'] * 1e3)} | {speedup} | "
            f"{compile_s} | {status}{noisy} |")


def markdown_table(doc: dict, workload: str | None = None) -> str:
    """One workload's cells (or all) as a markdown table, in run order."""
    rows = [c for c in results.cells(doc) if not workload or c.get("workload") == workload]
    unit = next((r["throughput_unit"] for r in rows if r.get("throughput_unit")), "items/s")
    with_precision = any(precision.of_cell(r) for r in rows)
    mode = "mode | precision" if with_precision else "mode"
    head = (f"| framework | backend | {mode} | {unit} | 95% interval | ms/step "
            f"| speedup over own eager [95% CI] | compile s (cold / warm) | status |")
    rule = "|---|---|---|" + ("---|" if with_precision else "") + "--:|--:|--:|--:|--:|---|"
    return "\n".join([head, rule, *(_row(r, with_precision) for r in rows)])


def _interval(entry: list) -> str:
    value, lo, hi = entry
    return f"{_ms(value)} [{_ms(lo)}, {_ms(hi)}]"


def latency_table(doc: dict, workload: str | None = None) -> str:
    """The --latency cells' per-call percentiles (ms, bootstrap 95% intervals), the backend's
    and its own eager's side by side; "" when the run has none."""
    rows = [c for c in results.cells(doc) if c.get("latency_ms")
            and (not workload or c.get("workload") == workload)]
    if not rows:
        return ""
    head = ("| backend | mode | shape | calls | p50 ms [95% CI] | p90 ms [95% CI] "
            "| p99 ms [95% CI] | eager p50 / p90 / p99 ms | p50 speedup over eager [95% CI] |")
    lines = [head, "|---|---|---|--:|--:|--:|--:|--:|--:|"]
    for row in rows:
        mine, eager = row["latency_ms"], row.get("baseline_latency_ms")
        eager_text = " / ".join(_ms(eager[p][0]) for p in ("p50", "p90", "p99")) \
            if eager else "-"
        speedup = "-"
        if row.get("speedup") is not None:  # a latency cell's medians are its p50s
            lo, hi = row["speedup_ci95"]
            speedup = f"{row['speedup']:.2f}x [{lo:.2f}, {hi:.2f}]"
        shape = ", ".join(f"{k}={v}" for k, v in (row.get("shape") or {}).items())
        lines.append(f"| {row.get('backend')} | {row.get('mode')} | {shape} | {mine['n']} | "
                     f"{_interval(mine['p50'])} | {_interval(mine['p90'])} | "
                     f"{_interval(mine['p99'])} | {eager_text} | {speedup} |")
    return "\n".join(lines)


def memory_table(doc: dict, workload: str | None = None) -> str:
    """Peak memory per cell (lab.memory): the step's above what was resident, eager's beside
    it, their ratio, and the first call's (compile or conversion) apart; "" when none."""
    rows = [c for c in results.cells(doc) if c.get("memory")
            and (not workload or c.get("workload") == workload)]
    if not rows:
        return ""

    def mib(value) -> str:
        return "-" if value is None else f"{value:,.1f}"

    lines = ["| backend | mode | step MiB | eager step MiB | eager / step | first call MiB "
             "| peak above import MiB | probe |", "|---|---|--:|--:|--:|--:|--:|---|"]
    for row in rows:
        mem = row["memory"]
        ratio = mem.get("ratio_eager_over_candidate")
        ratio_text = f"{ratio:.2f}x" if ratio is not None else \
            ("-" if mem.get("baseline_step_peak_above_resident_mib") is None
             else f"none: {mem.get('ratio_unresolved') or 'not measurable'}")
        lines.append(f"| {row.get('backend')} | {row.get('mode')} | "
                     f"{mib(mem.get('step_peak_above_resident_mib'))} | "
                     f"{mib(mem.get('baseline_step_peak_above_resident_mib'))} | {ratio_text} | "
                     f"{mib(mem.get('first_call_peak_above_start_mib'))} | "
                     f"{mib(mem.get('peak_above_import_mib'))} | {mem.get('probe')} |")
    return "\n".join(lines)
