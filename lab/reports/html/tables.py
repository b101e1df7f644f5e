"""The report's HTML tables: the cells, hot kernels with their links, claims and gate verdicts.

Every value is escaped here; what a cell's row says comes from `lab.reports.rows` (as in the
terminal, markdown and CSV outputs); numbers carry a `data-sort` key so the page's sorter orders
them as numbers (a `never` break-even sorts after every finite one).
"""

from __future__ import annotations

import html
import math
import os
import shutil
from pathlib import Path
from urllib.parse import quote

from lab.reports import rows
from lab.reports.html.runs import Run, hot_rows, profile_entries

HOT_TOP = 10  # rows per hot-kernel table: the tail is in hot.csv, linked beside it
STATUS_CLASSES = ("ok", "noisy", "fail_accuracy", "compile_error", "run_error", "timeout",
                  "oom", "skipped")


def esc(value) -> str:
    return html.escape("" if value is None else str(value))


def _td(text, sort=None, cls: str = "") -> str:
    sort_attr = f' data-sort="{esc(sort)}"' if sort is not None else ""
    class_attr = f' class="{cls}"' if cls else ""
    return f"<td{class_attr}{sort_attr}>{esc(text)}</td>"


def status_class(cell: dict) -> str:
    row = rows.build(cell)
    if row.ok and (row.noisy or row.busy):  # a number to read with care
        return "status-noisy"
    return f"status-{row.status}" if row.status in STATUS_CLASSES else "status-other"


def status_text(cell: dict) -> str:
    return rows.build(cell).status_text


CELL_COLUMNS = ("workload", "mode", "backend", "device", "precision", "shape", "eager ms",
                "ms/step", "speedup [95% CI]", "compile s cold/warm", "break-even steps",
                "throughput", "step MiB", "samples", "status")
LATENCY_COLUMNS = ("p90 / p99 ms", "eager p90 / p99 ms")  # beside the speedup, as in the terminal


def cells_table(runs: list[Run]) -> str:
    many = len(runs) > 1
    latency = any(c.get("latency_ms") for run in runs for c in run.cells)
    columns = list(CELL_COLUMNS)
    if latency:
        at = columns.index("speedup [95% CI]") + 1
        columns[at:at] = LATENCY_COLUMNS
    head = "".join(f"<th>{esc(c)}</th>" for c in (["run"] if many else []) + columns)
    body = []
    for run in runs:
        for c in run.cells:
            row = rows.build(c)
            speed = row.speedup_text
            tails = [_td(row.tails_text), _td(row.eager_tails_text)] if latency else []
            memory = row.memory.get("step_peak_above_resident_mib")
            cells = [_td(run.run_id)] if many else []
            cells += [_td(row.workload), _td(row.mode), _td(row.backend), _td(row.device),
                      _td(row.precision), _td(row.shape, cls="wrap"),
                      _td(row.eager_ms_text, row.eager_s), _td(row.step_ms_text, row.step_s),
                      _td(speed, row.speedup if speed != "-" else None), *tails,
                      _td(row.compile_text, row.compile_s_cold),
                      _td(row.break_even.text, row.break_even.sort_key),
                      _td(row.throughput_text, row.throughput),
                      _td(row.memory_text, memory), _td(row.samples or "-", row.samples),
                      _td(row.status_text, cls=f"status {status_class(c)}")]
            body.append(f'<tr title="{esc(row.name)}">{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table class="sortable cells"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


# ---------------------------------------------------------------- hot kernels

def link(run: Run, rel: str | None, out_dir: Path, text: str | None = None,
         assets: Path | None = None) -> str:
    """A link from the page to a file stored in the run folder: relative, so the page and the
    runs can move together; or, with `assets` (the pages of an index), to a copy under
    assets/<machine>/<run id>/, so the written folder holds all it links (an artefact
    uploaded alone has no dead links). The bare path where the run's folder is unknown or the
    file is gone."""
    if not rel:
        return ""
    label = esc(text or Path(rel).name)
    if run.folder is None:
        return f"<code>{esc(rel)}</code>"
    target = run.folder / rel
    if not target.is_file():
        return f'<span class="missing" title="not found: {esc(rel)}">{label} (missing)</span>'
    if assets is not None:
        copy = assets / run.machine / run.run_id / rel
        if not copy.is_file() or copy.stat().st_mtime < target.stat().st_mtime:
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(target, copy)
        target = copy
    href = Path(os.path.relpath(target.resolve(), out_dir.resolve())).as_posix()
    return f'<a href="{esc(quote(href))}">{label}</a>'


def hot_sections(runs: list[Run], out_dir: Path, assets: Path | None = None) -> str:
    parts = []
    for run in runs:
        for cell_name, entry in profile_entries(run):
            title = f"{cell_name}" + (f" ({run.run_id})" if len(runs) > 1 else "")
            status = entry.get("status")
            links = []
            for key, text in (("ncu", "Nsight Compute report"), ("nsys", "Nsight Systems report")):
                tool = entry.get(key) or {}
                if tool.get("report"):
                    links.append(link(run, tool["report"], out_dir, text, assets))
                    if tool.get("csv"):
                        links.append(link(run, tool["csv"], out_dir, f"{key} CSV", assets))
                elif tool.get("status"):
                    links.append(f"{key}: {esc(tool['status'])}")
            for code in (entry.get("generated_code") or [])[:4]:
                links.append(link(run, code, out_dir, f"generated code {Path(code).name}",
                                  assets))
            parts.append(f"<h3>{esc(title)}</h3>")
            if status not in (None, "ok"):
                parts.append(f'<p class="note">profile: {esc(status)}'
                             f'{": " + esc(entry.get("reason")) if entry.get("reason") else ""}'
                             "</p>")
            if links:
                parts.append(f'<p class="links">{" · ".join(links)}</p>')
            for backend, side in (entry.get("sides") or {}).items():
                parts.append(_hot_table(run, backend, side, out_dir, assets))
    return "".join(parts)


def _hot_table(run: Run, backend: str, side: dict, out_dir: Path,
               assets: Path | None = None) -> str:
    table, rows = hot_rows(run, side, HOT_TOP)
    side_links = " · ".join(filter(None, [
        link(run, side.get("trace"), out_dir, "trace", assets),
        link(run, side.get("hot_csv"), out_dir, "hot.csv", assets)]))
    if table is None:
        why = side.get("hot_error") or "no hot-kernel table stored"
        return f"<p><b>{esc(backend)}</b>: {esc(why)} {side_links}</p>"
    caption = (f"{esc(backend)}: hottest by self time, median traced step "
               f"{table.get('step_us', 0):.0f} us over {table.get('steps', '?')} steps; "
               f"{table.get('kernels_per_step', 0):g} {esc(table.get('kernel_unit', ''))}")
    head = "".join(f"<th>{c}</th>" for c in ("section", "op / kernel", "kind", "calls/step",
                                              "self us/step", "% of step", "mean us/call"))
    body = "".join(
        "<tr>" + _td(r.get("section", "-")) + f'<td class="name">{esc(r.get("name"))}</td>'
        + _td(r.get("kind")) + _td(f"{r.get('count_per_step', 0):g}", r.get("count_per_step"))
        + _td(f"{r.get('self_us_per_step', 0):.1f}", r.get("self_us_per_step"))
        + _td(f"{100 * (r.get('share') or 0):.1f}", r.get("share"))
        + _td(f"{r.get('mean_us', 0):.1f}", r.get("mean_us")) + "</tr>" for r in rows)
    return (f'<div class="scroll"><table class="sortable hot"><caption>{caption} {side_links}'
            f"</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


# ---------------------------------------------------------------- the suite summary

# the number each text column sorts by (the scorecard's row keys), in scorecard.COLUMNS order
_SUITE_SORT = {"pass rate": "pass_rate", "geomean speedup [95% CI over models]": "speedup_geomean",
               ">= 1x": "faster_share", "compile s mean / max": "compile_s_mean",
               "memory compression": "memory_compression_geomean",
               "graph breaks / model": "graph_breaks_per_model",
               "recompiles / model": "recompiles_per_model"}


def suite_rows(runs: list[Run]) -> list[tuple[Run, dict]]:
    """(run, scorecard row) for every suite, size, mode, device, precision and backend of the
    runs' suite models, in run order (lab.judge.scorecard, as `lab show` and the markdown)."""
    from lab.judge import scorecard

    return [(run, row) for run in runs for row in scorecard.summarize(run.cells)]


def suite_table(found: list[tuple[Run, dict]], many: bool = False) -> str:
    """The suite summary rows (suite_rows) in the columns of the terminal's and the
    markdown's (scorecard.COLUMNS), with a run column for several runs; "" when none."""
    from lab.judge import scorecard

    if not found:
        return ""
    head = "".join(f"<th>{esc(c)}</th>" for c in (["run"] if many else [])
                   + list(scorecard.COLUMNS))
    body = []
    for run, row in found:
        cells = [_td(run.run_id)] if many else []
        for column, text in zip(scorecard.COLUMNS, scorecard.cells_of(row), strict=True):
            key = row.get(_SUITE_SORT.get(column, ""))
            cls = "wrap" if column == "not ok" else ""
            cells.append(_td(text, key if isinstance(key, int | float) else None, cls=cls))
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<div class="scroll"><table class="sortable suites"><thead><tr>{head}</tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table></div>')


# ---------------------------------------------------------------- verdicts

def _interval(value, ci) -> str:
    if value is None:
        return "-"
    if ci and len(ci) == 2 and None not in ci:
        return f"{value:.3f}x [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{value:.3f}x"


def claims_table(claims: list[dict]) -> str:
    """One row per claim and judged cell, as `lab check --json` gives them."""
    head = "".join(f"<th>{c}</th>" for c in ("claim", "verdict", "expected", "cell",
                                              "measured [95% CI]", "cell verdict", "reason"))
    body = []
    for claim in claims:
        expected = claim.get("expectation") or _expectation(claim)
        cells = claim.get("cells") or [{}]
        for i, cell in enumerate(cells):
            first = i == 0
            verdict = str(claim.get("verdict", "?"))
            body.append(
                "<tr>" + _td(claim.get("id") if first else "")
                + (_td(verdict, cls=f"verdict verdict-{verdict}") if first else _td(""))
                + _td(expected if first else "") + _td(cell.get("label", "-"))
                + _td(_interval(cell.get("ratio"), cell.get("ci95")), cell.get("ratio"))
                + _td(cell.get("verdict", "-"), cls=f"verdict verdict-{cell.get('verdict')}")
                + _td(cell.get("reason") or (claim.get("reason") if first else ""), cls="wrap")
                + "</tr>")
    return (f'<div class="scroll"><table class="sortable claims"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _expectation(claim: dict) -> str:
    low, high = claim.get("low"), claim.get("high")
    if low is None and high is None:
        return "-"
    if high is None or (isinstance(high, float) and math.isinf(high)):
        return f">= {low:g}x"
    if low is None or low == 0:
        return f"<= {high:g}x"
    return f"{low:.3g}x to {high:.3g}x"


def gate_table(verdicts: list[dict]) -> str:
    """One row per benchmark, as `lab gate --json` gives them (candidate / baseline time)."""
    head = "".join(f"<th>{c}</th>" for c in ("benchmark", "verdict", "candidate / baseline",
                                              "p", "processes", "reason"))
    body = []
    for v in verdicts:
        verdict = str(v.get("verdict", "?"))
        processes = v.get("processes")
        body.append(
            "<tr>" + f'<td class="name">{esc(v.get("name") or v.get("benchmark"))}</td>'
            + _td(verdict, cls=f"verdict verdict-{verdict}")
            + _td(_interval(v.get("ratio"), v.get("ci")), v.get("ratio"))
            + _td("-" if v.get("p_value") is None else f"{v['p_value']:.2g}", v.get("p_value"))
            + _td(" vs ".join(map(str, processes)) if isinstance(processes, list | tuple)
                  else processes or "-")
            + _td(v.get("reason") or "", cls="wrap") + "</tr>")
    return (f'<div class="scroll"><table class="sortable gate"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')
