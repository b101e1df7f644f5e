"""One report page: header, sections in a fixed order, plotly.js once, written atomically.

The page opens offline: its styles, its table sorter and plotly.js are inlined (or, for the
pages of an index, plotly.js is one file beside them, read by a relative path); nothing is
fetched. Sections with nothing to show are left out rather than drawn empty.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

from lab.reports import rows
from lab.reports.html import figures, tables
from lab.reports.html.runs import (
    KernelBench,
    Run,
    commit_label,
    distinct,
    hardware_label,
    run_sort_key,
)
from lab.reports.html.tables import esc
from lab.store import outputs

PLOTLY_FILE = "plotly.min.js"  # the shared copy beside the pages of an index

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;
 max-width:1280px;padding:0 20px 40px;color:#1a1a1a}
h1{font-size:22px;margin:18px 0 6px}h2{font-size:18px;margin:28px 0 8px;
 border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.run{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:8px 0 12px;
 padding:8px 12px;background:#f6f8fa;border-radius:6px}.run dt{color:#555}.run dd{margin:0}
.warn{background:#fff4d6;border-left:4px solid #e0a800;padding:6px 10px;margin:6px 0}
.note{color:#555}.missing{color:#a00}
table{border-collapse:collapse;margin:6px 0 14px;font-size:13px}
.scroll{overflow-x:auto;max-width:100%}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;vertical-align:top;
 white-space:nowrap}td.name,td.status,td.verdict,td.wrap{white-space:normal}
th{background:#f0f2f5;cursor:pointer;user-select:none;white-space:normal;text-align:left}
td.wrap{text-align:left;min-width:9em}
th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
td:nth-child(-n+3),td.name{text-align:left}td.name{max-width:640px;overflow-wrap:anywhere}
caption{text-align:left;padding:4px 0;color:#333}
.status,.verdict{text-align:left;font-weight:600}
.status-ok{background:#e3f4e3}.status-noisy{background:#f3f6d8}
.status-fail_accuracy,.status-compile_error,.status-run_error,.status-oom{background:#fbe0e0}
.status-timeout{background:#fde9d2}.status-skipped,.status-other{background:#eceff3;color:#555}
.verdict-supported,.verdict-improved,.verdict-unchanged{background:#e3f4e3}
.verdict-refuted,.verdict-regressed{background:#fbe0e0}
.verdict-inconclusive{background:#fff4d6}
.plot{border:1px solid #eee;border-radius:6px;margin:8px 0}
footer{margin-top:30px;color:#777;font-size:12px}
"""

# Click a header to sort by it; numbers sort by their data-sort key, text by its words.
SORTER = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = !th.classList.contains("asc");
    table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
    th.classList.add(asc ? "asc" : "desc");
    function key(row) {
      var td = row.children[col];
      if (!td) return "";
      var s = td.getAttribute("data-sort");
      if (s !== null && s !== "" && !isNaN(Number(s))) return Number(s);
      if (s === "inf") return Infinity;
      return td.textContent.trim().toLowerCase();
    }
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (typeof x !== typeof y) return (typeof x === "number" ? -1 : 1) * (asc ? 1 : -1);
      return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def plotly_js_tag(mode: str, out_path: Path, shared_js: Path | None) -> str:
    """`inline`: the library in the page (self-contained); `shared`: a relative src to the one
    copy an index writes, so a folder of reports carries plotly.js once."""
    if mode == "inline":
        from plotly.offline import get_plotlyjs

        return f'<script type="text/javascript">{get_plotlyjs()}</script>'
    if mode == "shared" and shared_js is not None:
        rel = Path(os.path.relpath(shared_js.resolve(), out_path.parent.resolve())).as_posix()
        return f'<script type="text/javascript" src="{esc(rel)}"></script>'
    raise ValueError(f"plotly.js mode must be 'inline' or 'shared' (with its file), got {mode!r}")


def _figure_div(fig, div_id: str) -> str:
    body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})
    return f'<div class="plot" data-plot="{esc(div_id)}">{body}</div>'


def _run_header(run: Run) -> str:
    lab = run.doc.get("lab") or {}
    facts = [("machine", f"{run.machine}: {hardware_label(run.doc)}"),
             ("device", distinct(run.cells, "device")),
             ("precision", distinct(run.cells, "dtype")),
             ("threads", distinct(run.cells, "threads")),
             ("commit", commit_label(run.doc)),
             ("started", lab.get("started") or run.doc.get("datetime") or "?"),
             ("command", "lab " + " ".join(map(str, lab.get("argv") or [])) if lab.get("argv")
              else "-"),
             ("cells", f"{len(run.cells)} ({sum(c.get('status') == 'ok' for c in run.cells)} ok)")]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    warnings = [w for w in (rows.start_load_warning(run.doc),) if w]
    if lab and not lab.get("complete"):
        warnings.append("the run is incomplete (interrupted or still running): cells it did "
                        "not reach are missing")
    warn = "".join(f'<div class="warn">warning: {esc(w)}</div>' for w in warnings)
    return f"<h3>run {esc(run.run_id)}</h3><dl class=\"run\">{dl}</dl>{warn}"


def _kernel_header(bench: KernelBench) -> str:
    info = bench.doc.get("machine_info") or {}
    devices = sorted({str(r.get("device")) for r in bench.rows if r.get("device")})
    dtypes = sorted({str(r.get("dtype")) for r in bench.rows if r.get("dtype")})
    ceilings = ", ".join(f"{k} {v:,.1f}" for k, v in sorted(bench.ceilings.items())) or "none"
    facts = [("device", ", ".join(devices) or info.get("node") or "?"),
             ("precision", ", ".join(dtypes) or "-"), ("commit", commit_label(bench.doc)),
             ("measured", bench.doc.get("datetime") or "?"), ("ceilings", ceilings),
             ("kernel calls", str(len(bench.rows)))]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    return f"<h3>kernels {esc(bench.name)}</h3><dl class=\"run\">{dl}</dl>"


def render(runs: list[Run], benches: list[KernelBench], out_path: Path, *,
           title: str | None = None, claims: list[dict] | None = None,
           gate: list[dict] | None = None, plotlyjs: str = "inline",
           shared_js: Path | None = None, assets: Path | None = None) -> str:
    """assets: where the files the page links (traces, hot tables) are copied, for the pages
    of an index; None links them in the run folders."""
    runs = sorted(runs, key=run_sort_key)
    out_dir = out_path.parent
    title = title or ("lab report: " + ", ".join([r.run_id for r in runs]
                                                 + [b.name for b in benches]))
    sections: list[tuple[str, str]] = []

    def plot(section_id, fig) -> str:
        return _figure_div(fig, section_id) if fig is not None else ""

    # a `lab profile` run has cells but no timings: its hot kernels are what it holds
    timed = [r for r in runs if r.cells and not rows.is_profile_run(r.doc)]
    if timed:
        suites = tables.suite_rows(timed)  # first, as in the markdown: a suite's headline
        if suites:
            sections.append(("Suite summary", tables.suite_table(suites, len(timed) > 1) + plot(
                "suite-speedups", figures.suite_speedups(suites, len(timed) > 1))))
        sections.append(("Cells", tables.cells_table(timed)))
        for section_id, heading, fig in (
                ("speedups", "Speedups", figures.speedup_forest(runs, claims)),
                ("compile", "Compile cost", figures.compile_cost(runs)),
                ("samples", "Raw samples", figures.raw_samples(runs)),
                ("history", "History", figures.history(runs) if len(runs) > 1 else None)):
            if fig is not None:
                sections.append((heading, plot(section_id, fig)))
    for i, bench in enumerate(benches):
        kernel_plots = plot(f"roofline-{i}", figures.roofline(bench)) \
            + plot(f"fractions-{i}", figures.kernel_fractions(bench))
        if kernel_plots:
            sections.append((f"Kernels: {bench.name}", _kernel_header(bench) + kernel_plots))
    hot = tables.hot_sections(runs, out_dir, assets)
    if hot:
        sections.append(("Hot kernels", hot))
    if claims:
        sections.append(("Claims", tables.claims_table(claims)))
    if gate:
        sections.append(("Gate", tables.gate_table(gate)))

    header = "".join(_run_header(r) for r in runs) + "".join(
        _kernel_header(b) for b in benches if not b.rows)
    toc = " · ".join(f'<a href="#s{i}">{esc(h)}</a>' for i, (h, _) in enumerate(sections))
    body = "".join(f'<section id="s{i}"><h2>{esc(h)}</h2>{content}</section>'
                   for i, (h, content) in enumerate(sections))
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style>"
            f"{plotly_js_tag(plotlyjs, out_path, shared_js)}</head><body>"
            f"<h1>{esc(title)}</h1><nav>{toc}</nav>{header}{body}"
            f"<footer>perflab report, written {esc(stamp)}. Speedups: eager median / compiled "
            "median with a bootstrap 95% interval; break-even uses the compile seconds of its "
            f"cache state.</footer><script>{SORTER}</script></body></html>\n")


def write_page(text: str, out_path: Path) -> Path:
    """Through lab.store.outputs: a device, a pipe or a link is written as such, never replaced, and
    never a file inside a stored run. Mode 0644: a page is for reading, also by a web server."""
    return outputs.write(out_path, text, "--html", mode=0o644)
