"""The report's HTML tables: the cells, hot kernels with their links, claims and gate verdicts.

Every value is escaped here; numbers carry a `data-sort` key so the page's sorter orders them
as numbers (a `never` break-even sorts after every finite one).
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from urllib.parse import quote

from lab.html_report.runs import Run, hot_rows, profile_entries
from lab.table import format_ms

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
    status = str(cell.get("status") or "?")
    if status == "ok" and cell.get("noisy"):
        return "status-noisy"
    return f"status-{status}" if status in STATUS_CLASSES else "status-other"


def status_text(cell: dict) -> str:
    status = str(cell.get("status") or "?")
    if status == "ok":
        return "ok (noisy)" if cell.get("noisy") else "ok"
    return f"{status}: {cell['reason']}" if cell.get("reason") else status


def _shape(cell: dict) -> str:
    shape = cell.get("shape") or {}
    return ", ".join(f"{k}={v}" for k, v in shape.items()) if isinstance(shape, dict) \
        else str(shape)


CELL_COLUMNS = ("workload", "mode", "backend", "device", "dtype", "shape", "eager ms",
                "ms/step", "speedup [95% CI]", "compile s cold/warm", "break-even steps",
                "throughput", "samples", "status")


def cells_table(runs: list[Run]) -> str:
    many = len(runs) > 1
    head = "".join(f"<th>{esc(c)}</th>" for c in (("run",) if many else ()) + CELL_COLUMNS)
    body = []
    for run in runs:
        for c in run.cells:
            compiled = c.get("baseline_backend") is not None and c.get("median_s") is not None \
                and c.get("baseline_median_s") is not None
            eager_s = c.get("baseline_median_s") if compiled else c.get("median_s")
            step_s = c.get("median_s") if compiled else None
            speedup, ci = c.get("speedup"), c.get("speedup_ci95")
            ok = c.get("status") == "ok"
            speed_text = f"{speedup:.2f}x [{ci[0]:.2f}, {ci[1]:.2f}]" if ok and speedup and ci \
                else "-"
            cold, warm = c.get("compile_s_cold"), c.get("compile_s_warm")
            compile_text = "-" if cold is None else \
                f"{cold:.1f} / {warm:.1f}" if warm is not None else f"{cold:.1f} / -"
            if not ok or cold is None:
                even_text, even_sort = "-", None
            elif c.get("break_even_steps_cold") is None:
                even_text, even_sort = "never", math.inf
            else:
                even_text = f"{c['break_even_steps_cold']:,.0f}"
                even_sort = c["break_even_steps_cold"]
            tput = c.get("throughput")
            tput_text = "-" if not tput else \
                f"{tput:,.0f} {c.get('throughput_unit') or '/s'}" if tput >= 100 \
                else f"{tput:.1f} {c.get('throughput_unit') or '/s'}"
            n = len(c.get("samples_s") or [])
            cells = [_td(run.run_id)] if many else []
            cells += [_td(c.get("workload")), _td(c.get("mode")), _td(c.get("backend")),
                      _td(c.get("device")), _td(c.get("dtype")), _td(_shape(c), cls="wrap"),
                      _td(format_ms(eager_s), eager_s), _td(format_ms(step_s), step_s),
                      _td(speed_text, speedup if speed_text != "-" else None),
                      _td(compile_text, cold), _td(even_text, even_sort),
                      _td(tput_text, tput), _td(n or "-", n),
                      _td(status_text(c), cls=f"status {status_class(c)}")]
            body.append(f'<tr title="{esc(c.get("name"))}">{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table class="sortable cells"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


# ---------------------------------------------------------------- hot kernels

def link(run: Run, rel: str | None, out_dir: Path, text: str | None = None) -> str:
    """A link from the page to a file stored in the run folder (relative, so the page and the
    runs can move together); the bare path where the run's folder is unknown or the file is
    gone."""
    if not rel:
        return ""
    label = esc(text or Path(rel).name)
    if run.folder is None:
        return f"<code>{esc(rel)}</code>"
    target = run.folder / rel
    if not target.exists():
        return f'<span class="missing" title="not found: {esc(rel)}">{label} (missing)</span>'
    href = Path(os.path.relpath(target.resolve(), out_dir.resolve())).as_posix()
    return f'<a href="{esc(quote(href))}">{label}</a>'


def hot_sections(runs: list[Run], out_dir: Path) -> str:
    parts = []
    for run in runs:
        for cell_name, entry in profile_entries(run):
            title = f"{cell_name}" + (f" ({run.run_id})" if len(runs) > 1 else "")
            status = entry.get("status")
            links = []
            for key, text in (("ncu", "Nsight Compute report"), ("nsys", "Nsight Systems report")):
                tool = entry.get(key) or {}
                if tool.get("report"):
                    links.append(link(run, tool["report"], out_dir, text))
                    if tool.get("csv"):
                        links.append(link(run, tool["csv"], out_dir, f"{key} CSV"))
                elif tool.get("status"):
                    links.append(f"{key}: {esc(tool['status'])}")
            for code in (entry.get("generated_code") or [])[:4]:
                links.append(link(run, code, out_dir, f"generated code {Path(code).name}"))
            parts.append(f"<h3>{esc(title)}</h3>")
            if status not in (None, "ok"):
                parts.append(f'<p class="note">profile: {esc(status)}'
                             f'{": " + esc(entry.get("reason")) if entry.get("reason") else ""}'
                             "</p>")
            if links:
                parts.append(f'<p class="links">{" · ".join(links)}</p>')
            for backend, side in (entry.get("sides") or {}).items():
                parts.append(_hot_table(run, backend, side, out_dir))
    return "".join(parts)


def _hot_table(run: Run, backend: str, side: dict, out_dir: Path) -> str:
    table, rows = hot_rows(run, side, HOT_TOP)
    side_links = " · ".join(filter(None, [link(run, side.get("trace"), out_dir, "trace"),
                                          link(run, side.get("hot_csv"), out_dir, "hot.csv")]))
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
