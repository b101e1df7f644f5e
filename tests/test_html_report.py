"""The HTML report: what each section shows, drawn from stored runs, and the pages in a real
headless Chromium (no console error, every plot drawn, nothing fetched, a screenshot kept)."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lab.reports.html import ReportInputError, figures, runs, write_index, write_report

ROOT = Path(__file__).resolve().parent.parent
CPU_RUN = ROOT / "profiles/amd-epyc-2c/20261124-212813-cpu"
CPU_RUNS = sorted((ROOT / "profiles/amd-epyc-2c").glob("*/results.json"))
H200_KERNELS = ROOT / "profiles/nvidia-h200-x1/20261128-h200-kernels/kernels.json"
H200_RUNS = sorted((ROOT / "profiles/nvidia-h200-x1").glob("*/results.json"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# the flags a container without a display, GPU, sandbox or network needs
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
EXTERNAL_SOURCE = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?"
                             r"(?:https?:)?//", re.I)


def _doc(path: Path) -> dict:
    return json.loads(path.read_text())


class _Tables(HTMLParser):
    """Rows of every <table> as lists of cell texts, with each table's class."""

    def __init__(self):
        super().__init__()
        self.tables: list[tuple[str, list[list[str]]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append((dict(attrs).get("class", ""), []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self.tables:
            self.tables[-1][1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _table(text: str, cls: str) -> list[list[str]]:
    parser = _Tables()
    parser.feed(text)
    return next(rows for c, rows in parser.tables if cls in c.split())


# ---------------------------------------------------------------- the page from a stored run

def test_report_of_a_stored_run_is_self_contained_and_shows_every_cell(tmp_path):
    out = write_report([CPU_RUN], tmp_path / "r.html")
    text = out.read_text()
    assert not EXTERNAL_SOURCE.search(text), "the page must not load anything from the network"
    from plotly.offline import get_plotlyjs

    assert text.count(get_plotlyjs()[:200]) == 1  # plotly.js inlined once, not per plot
    doc = _doc(CPU_RUN / "results.json")
    rows = _table(text, "cells")
    header, body = rows[0], rows[1:]
    assert len(body) == len(doc["benchmarks"]) + len(doc["lab"]["unmeasured"])
    col = {name: i for i, name in enumerate(header)}
    for bench in doc["benchmarks"]:
        info = bench["extra_info"]
        row = next(r for r in body if r[col["workload"]] == info["workload"]
                   and r[col["mode"]] == info["mode"] and r[col["backend"]] == info["backend"])
        assert row[col["samples"]] == str(len(bench["stats"]["data"]))
        if info.get("speedup"):
            lo, hi = info["speedup_ci95"]
            assert row[col["speedup [95% CI]"]] == f"{info['speedup']:.2f}x [{lo:.2f}, {hi:.2f}]"
        assert row[col["status"]].startswith("ok")
    for heading in ("Cells", "Speedups", "Compile cost", "Raw samples"):
        assert f"<h2>{heading}</h2>" in text
    assert "machine</dt><dd>amd-epyc-2c" in text and "precision</dt><dd>float32" in text
    assert doc["commit_info"]["id"][:10] in text


def test_statuses_are_coloured_and_a_busy_machine_is_warned_about(tmp_path):
    doc = _doc(CPU_RUN / "results.json")
    doc["lab"]["load_avg_1m_at_start"] = 1.9  # 2 cores: more than half busy
    doc["lab"]["unmeasured"].append({"name": "mlp[tf-xla|infer|cpu|float32|batch=32]",
                                     "extra_info": {"workload": "mlp", "backend": "tf-xla",
                                                    "mode": "infer", "status": "timeout",
                                                    "reason": "no result after 60 s"}})
    text = write_report([doc], tmp_path / "r.html").read_text()
    assert 'class="status status-timeout">timeout: no result after 60 s<' in text
    assert text.count("status status-noisy\"") == sum(b["extra_info"].get("noisy", False)
                                             for b in doc["benchmarks"])
    assert "the machine was busy when the run started (load 1.9 on 2 cores)" in text


def test_a_load_at_the_start_is_no_warning_where_the_cells_sampled_their_own(tmp_path):
    """The 1-minute load average lags (work that had just ended counts in it): where each cell
    carries its own load sample, those decide, in the page and in the terminal table."""
    from lab.reports import rows

    doc = _doc(CPU_RUN / "results.json")
    doc["lab"]["load_avg_1m_at_start"] = 1.9
    assert rows.start_load_warning(doc) is not None  # no cell sampled its load: the start's
    for bench in doc["benchmarks"]:
        bench["extra_info"].update(other_load_cores=0.01, machine_busy=False)
    assert rows.start_load_warning(doc) is None
    text = write_report([doc], tmp_path / "r.html").read_text()
    assert "busy when the run started" not in text


def test_bad_sources_are_one_line_errors(tmp_path):
    with pytest.raises(ReportInputError, match="no results.json or kernels.json"):
        write_report([tmp_path], tmp_path / "r.html")
    truncated = tmp_path / "cut" / "results.json"
    truncated.parent.mkdir()
    truncated.write_text((CPU_RUN / "results.json").read_text()[:500])
    with pytest.raises(ReportInputError, match="not valid JSON") as info:
        write_report([truncated.parent], tmp_path / "r.html")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "r.html").exists()


# ---------------------------------------------------------------- the plots' content

def _runs(*paths) -> list:
    return [runs.load(p) for p in paths]


def test_forest_plot_draws_each_speedup_interval_and_the_claim_thresholds():
    (run,) = _runs(CPU_RUN)
    claims = [{"id": "up-to-2x", "metric": "speedup", "backend": "torch-compile", "low": 1.5,
               "high": 2.0, "verdict": "refuted",
               "cells": [{"label": "transformer infer", "ratio": 1.3}]},
              {"id": "xla-vs-compile", "metric": "speedup", "backend": "torch-compile",
               "versus": "tf-xla", "low": 0.75, "high": 1.25,
               "cells": [{"label": "mlp infer"}]}]
    fig = figures.speedup_forest([run], claims)
    compiled = [c for c in run.cells if c.get("speedup")]
    points = {(y, x) for trace in fig.data if trace.error_x and trace.error_x.array is not None
              for x, y in zip(trace.x, trace.y, strict=True)}
    assert points == {(f"{c['workload']} · {c['mode']} · {c['backend']}", c["speedup"])
                      for c in compiled}
    for trace in fig.data:
        if trace.error_x and trace.error_x.array is not None:
            for x, plus, minus, (lo, hi, _) in zip(trace.x, trace.error_x.array,
                                                    trace.error_x.arrayminus, trace.customdata,
                                                    strict=True):
                assert x + plus == pytest.approx(hi) and x - minus == pytest.approx(lo)
    thresholds = sorted(s.x0 for s in fig.layout.shapes if s.type == "line" and s.x0 != 1.0)
    # only the speedup claim without `versus` is one cell's threshold: 1.5 and 2.0, one row
    assert thresholds == [1.5, 2.0]
    # on the judged cell's row: plotly places categories at 0, 1, ... in categoryarray order
    row = list(fig.layout.yaxis.categoryarray).index("transformer · infer · torch-compile")
    assert all(s.y0 < row < s.y1 and s.y1 - s.y0 < 1
               for s in fig.layout.shapes if s.x0 in (1.5, 2.0))
    lo, hi = (10 ** v for v in fig.layout.xaxis.range)
    assert lo < min(c["speedup_ci95"][0] for c in compiled) and hi > 2.0


def test_compile_plot_puts_a_compile_that_never_pays_back_on_the_never_row():
    (run,) = _runs(CPU_RUN)
    fig = figures.compile_cost([run])
    never_y = fig.layout.yaxis.tickvals[list(fig.layout.yaxis.ticktext).index("never")]
    for trace in fig.data:
        cell = next(c for c in run.cells if f"{c['workload']} · {c['mode']} · {c['backend']}"
                    == trace.name)
        assert list(trace.x) == [cell["compile_s_cold"], cell["compile_s_warm"]]
        expected = [cell["break_even_steps_cold"] or never_y,
                    cell["break_even_steps_warm"] or never_y]
        assert list(trace.y) == expected
    finite = [c["break_even_steps_cold"] for c in run.cells if c.get("break_even_steps_cold")]
    assert never_y > max(finite)


def test_raw_samples_plot_every_sample_and_the_interleaved_eager_ones():
    (run,) = _runs(CPU_RUN)
    fig = figures.raw_samples([run])
    plotted = sorted(round(x, 12) for trace in fig.data for x in trace.x)
    stored = sorted(round(s * 1e3, 12) for c in run.cells
                    for s in (c["samples_s"] or []) + (c.get("baseline_samples_s") or []))
    assert plotted == stored


def test_roofline_reads_the_measured_ceilings_and_places_each_kernel():
    doc = _doc(H200_KERNELS)
    (bench,) = _runs(H200_KERNELS)
    stored = {b["extra_info"]["ceiling"]: b["extra_info"]["value"] for b in doc["benchmarks"]
              if "ceiling" in b["extra_info"]}
    assert bench.ceilings == pytest.approx(stored)
    assert len(bench.rows) == sum("impl" in b["extra_info"] for b in doc["benchmarks"])
    fig = figures.roofline(bench)
    roof = fig.data[0]
    gbps, peak = stored["copy_GBps"], stored["matmul_bf16_TFLOPs"]
    for x, y in zip(roof.x, roof.y, strict=True):
        assert y == pytest.approx(min(peak, x * gbps / 1e3))
    for row in bench.rows:
        assert row["intensity"] == pytest.approx(row["flops"] / row["bytes"])
    fractions = figures.kernel_fractions(bench)
    lab = next(t for t in fractions.data if t.name == "lab")
    softmax = next(r for r in bench.rows if r["impl"] == "lab" and r["op"] == "softmax"
                   and r["pass"] == "forward" and r["size"] == [8192, 8192])
    assert softmax["fraction_of_copy_bandwidth"] == pytest.approx(
        lab.x[list(lab.y).index("softmax 8192x8192 fwd")], abs=1e-3)


def test_kernel_rows_without_rates_get_them_from_bytes_flops_and_time():
    doc = _doc(H200_KERNELS)
    for bench in doc["benchmarks"]:
        for key in ("ms", "GBps", "TFLOPs"):
            bench["extra_info"].pop(key, None)
    bench = runs.load(doc)
    original = {r["name"]: r for r in runs.load(_doc(H200_KERNELS)).rows}
    for row in bench.rows:
        # the stored rates were rounded when written; the recomputed ones agree with them
        assert row["GBps"] == pytest.approx(original[row["name"]]["GBps"], rel=2e-3)
        assert row["TFLOPs"] == pytest.approx(original[row["name"]]["TFLOPs"], rel=1e-2, abs=0.01)


def _scaled_run(doc: dict, run_id: str, started: str, factor: float) -> dict:
    doc = copy.deepcopy(doc)
    doc["lab"]["run_id"], doc["datetime"] = run_id, started
    for bench in doc["benchmarks"]:
        bench["stats"]["data"] = [s * factor for s in bench["stats"]["data"]]
        info = bench["extra_info"]
        info["process_medians_s"] = [m * factor for m in info.get("process_medians_s") or []]
    return doc


def test_history_marks_the_run_where_a_benchmark_got_slower():
    base = _doc(CPU_RUN / "results.json")
    # twelve runs; from the seventh on every step takes 1.5x as long (with run-to-run jitter).
    # Fewer runs cannot pass the permutation test at alpha 0.01: with 4 + 4 runs, 2 of the 70
    # ways to split them are as extreme as the real one (p >= 0.029).
    factors = [1.0, 1.02, 0.99, 1.01, 0.98, 1.0, 1.5, 1.52, 1.49, 1.51, 1.5, 1.48]
    docs = [_scaled_run(base, f"run-{i:02d}", f"2026-11-{i + 10}T00:00:00", f)
            for i, f in enumerate(factors)]
    fig = figures.history([runs.load(d) for d in docs])
    stars = [t for t in fig.data if t.marker.symbol == "star"]
    assert len(stars) == len(base["benchmarks"])  # one change per benchmark
    assert {t.x[0] for t in stars} == {"run-06"}
    assert all("1.5" in t.hovertemplate and "slower" in t.hovertemplate for t in stars)


def test_history_without_a_shift_marks_nothing():
    base = _doc(CPU_RUN / "results.json")
    docs = [_scaled_run(base, f"run-{i}", f"2026-11-2{i}T00:00:00", f)
            for i, f in enumerate([1.0, 1.02, 0.99, 1.01, 1.0, 0.98])]
    fig = figures.history([runs.load(d) for d in docs])
    assert not [t for t in fig.data if t.marker.symbol == "star"]
    assert len(fig.data) == len(base["benchmarks"])


# ---------------------------------------------------------------- hot kernels and their links

def _profiled_run(folder: Path) -> Path:
    """A stored profile run: one recorded cell with its traces, one found only on disk."""
    doc = _doc(CPU_RUN / "results.json")
    doc["benchmarks"] = []
    cell = "traces/mlp-torch-compile-infer-cpu"
    hot = {"steps": 7, "step_us": 119.5, "kernels_per_step": 3.0, "kernel_unit": "ops per step",
           "rows": [{"section": "host", "name": "aten::addmm", "kind": "kernel",
                     "count_per_step": 2.0, "self_us_per_step": 44.5, "share": 0.3726,
                     "mean_us": 152.8}]}
    for rel in (f"{cell}/torch-compile", "traces/lost-cell/torch-eager"):
        (folder / rel).mkdir(parents=True)
        (folder / rel / "hot.json").write_text(json.dumps(hot))
        (folder / rel / "hot.csv").write_text("name\n")
        (folder / rel / "trace.json").write_text("{}")
    (folder / "traces/lost-cell/ncu").mkdir()
    (folder / "traces/lost-cell/ncu/report.ncu-rep").write_bytes(b"\0")
    doc["lab"]["unmeasured"] = [{"name": "mlp[torch-compile|infer|cpu|float32|batch=32]",
                                 "extra_info": {
        "workload": "mlp", "backend": "torch-compile", "mode": "infer", "status": "ok",
        "profile": {"dir": cell, "status": "ok", "sides": {"torch-compile": {
            "trace": f"{cell}/torch-compile/trace.json",
            "hot_json": f"{cell}/torch-compile/hot.json",
            "hot_csv": f"{cell}/torch-compile/hot.csv"}},
            "ncu": {"status": "ok", "report": f"{cell}/ncu/report.ncu-rep"},
            "nsys": {"status": "skipped: needs CUDA"}}}}]
    (folder / "results.json").write_text(json.dumps(doc))
    return folder


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a" and "href" in dict(attrs):
            self.hrefs.append(dict(attrs)["href"])


def test_hot_kernel_tables_link_the_stored_traces_relatively(tmp_path):
    run_dir = _profiled_run(tmp_path / "profiles/m/run-1")
    out = write_report([run_dir], tmp_path / "site" / "r.html")
    text = out.read_text()
    rows = _table(text, "hot")
    assert rows[1][1] == "aten::addmm" and rows[1][5] == "37.3"
    parser = _Links()
    parser.feed(text)
    files = [h for h in parser.hrefs if not h.startswith("#")]
    assert files and all(not h.startswith(("/", "file:", "http")) for h in files)
    from urllib.parse import unquote

    for href in files:
        assert (out.parent / unquote(href)).resolve().is_file(), href
    names = {Path(unquote(h)).name for h in files}
    assert {"trace.json", "hot.csv", "report.ncu-rep"} <= names  # the lost cell's ncu report
    assert "Nsight Compute report (missing)" in text  # linked from the cell, never written
    assert "lost-cell" in text and "found on disk" in text
    assert "nsys: skipped: needs CUDA" in text


# ---------------------------------------------------------------- claims and the gate

def test_claim_and_gate_verdicts_are_tabled_with_their_colours(tmp_path):
    claims = [{"id": "train-30-50", "metric": "speedup", "backend": "torch-compile",
               "low": 1.235, "high": 1.575, "verdict": "refuted",
               "cells": [{"label": "transformer train", "ratio": 0.98, "ci95": [0.95, 1.02],
                          "verdict": "refuted"}]}]
    gate = [{"name": "mlp[torch-eager|infer|cpu|float32|batch=32]", "verdict": "regressed",
             "ratio": 1.12, "ci": [1.05, 1.2], "p_value": 0.003, "processes": [20, 20],
             "reason": ""}]
    text = write_report([CPU_RUN], tmp_path / "r.html", claims=claims, gate=gate).read_text()
    claim_rows = _table(text, "claims")
    assert claim_rows[1][:5] == ["train-30-50", "refuted", "1.24x to 1.57x", "transformer train",
                                 "0.980x [0.950, 1.020]"]
    gate_rows = _table(text, "gate")
    assert gate_rows[1][1:5] == ["regressed", "1.120x [1.050, 1.200]", "0.003", "20 vs 20"]
    assert 'class="verdict verdict-regressed"' in text
    assert 'class="verdict verdict-refuted"' in text


# ---------------------------------------------------------------- the index of profiles/

def _profiles_copy(tmp_path: Path) -> Path:
    root = tmp_path / "profiles"
    for results in CPU_RUNS[:3]:
        shutil.copytree(results.parent, root / "amd-epyc-2c" / results.parent.name)
    shutil.copytree(H200_KERNELS.parent, root / "nvidia-h200-x1" / H200_KERNELS.parent.name)
    (root / "amd-epyc-2c" / "broken").mkdir()
    (root / "amd-epyc-2c" / "broken" / "results.json").write_text("{")
    return root


def test_index_lists_every_stored_run_and_links_one_page_each(tmp_path):
    root = _profiles_copy(tmp_path)
    index = write_index(root, tmp_path / "site")
    rows = _table(index.read_text(), "runs")[1:]
    assert sorted(r[1] for r in rows) == sorted(
        [p.parent.name for p in CPU_RUNS[:3]] + ["broken", H200_KERNELS.parent.name])
    broken = next(r for r in rows if r[1] == "broken")
    assert broken[3] == "unreadable"
    for results in CPU_RUNS[:3]:
        doc = _doc(results)
        row = next(r for r in rows if r[1] == results.parent.name)
        assert row[4] == str(len(doc["benchmarks"]) + len(doc["lab"]["unmeasured"]))
        page = tmp_path / "site" / "amd-epyc-2c" / f"{results.parent.name}.html"
        text = page.read_text()
        assert '<script type="text/javascript" src="../plotly.min.js"></script>' in text
        assert not EXTERNAL_SOURCE.search(text)
    assert (tmp_path / "site" / "amd-epyc-2c" / "history.html").is_file()
    assert (tmp_path / "site" / "plotly.min.js").stat().st_size > 1_000_000


def test_index_of_a_folder_without_runs_is_a_one_line_error(tmp_path):
    with pytest.raises(ReportInputError, match="no stored runs under"):
        write_index(tmp_path, tmp_path / "site")


# ---------------------------------------------------------------- in a real browser

# In the page: every plot div holds plotly's SVG at a real size, and its data layer draws marks
# with a non-empty box (an axis frame alone has none).
RENDERED = """() => Array.from(document.querySelectorAll("div.plot")).map(div => {
  const svg = div.querySelector("svg.main-svg");
  const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
  const marks = Array.from(div.querySelectorAll(
      ".scatterlayer .point, .scatterlayer path.js-line, .boxlayer path.box, .barlayer path"))
    .filter(m => { const b = m.getBBox(); return b.width > 0 || b.height > 0; });
  const traces = (div.querySelector(".js-plotly-plot") || {}).data || [];
  return {id: div.dataset.plot, width: box.width, height: box.height, marks: marks.length,
          traces: traces.length};
})"""


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("skipped: no chromium on the PATH (Debian: apt-get install chromium; "
                    ".ci/run installs it)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="skipped: the browser test drives Chromium with "
        "playwright (pip install playwright==1.65.2; no browser download needed)")
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        # a persistent context so the profile folder is a new, known one (--user-data-dir)
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1300, "height": 900})
        yield context
        context.close()


def _screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("LAB_SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _open(browser, page_path: Path, screenshot: Path) -> list[dict]:
    """Open a page from disk; fail on any console error, page error or network request;
    return what each plot drew; save a full-page screenshot."""
    page = browser.new_page()
    problems, requests = [], []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: requests.append(r.url)
            if not r.url.startswith(("file:", "data:", "blob:")) else None)
    try:
        page.goto(page_path.resolve().as_uri(), wait_until="load")
        page.wait_for_function("() => Array.from(document.querySelectorAll('div.plot'))"
                               ".every(d => d.querySelector('svg.main-svg'))", timeout=10_000)
        plots = page.evaluate(RENDERED)
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 0
    finally:
        page.close()
    assert not problems, problems
    assert not requests, f"the page fetched {requests}"
    for plot in plots:
        assert plot["width"] > 300 and plot["height"] > 200, plot
        assert plot["traces"] > 0 and plot["marks"] > 0, f"plot {plot['id']} is blank: {plot}"
    return plots


def _sorted_column(browser, page_path: Path, header: str) -> list[str]:
    page = browser.new_page()
    try:
        page.goto(page_path.resolve().as_uri())
        page.click(f"table.cells th:text-is('{header}')")
        col = page.evaluate(f"""() => {{
          const ths = Array.from(document.querySelectorAll("table.cells th"));
          const i = ths.findIndex(th => th.textContent === {json.dumps(header)});
          return Array.from(document.querySelectorAll("table.cells tbody tr"))
                 .map(r => r.children[i].getAttribute("data-sort"));
        }}""")
    finally:
        page.close()
    return col


def test_reports_render_in_chromium(browser, tmp_path):
    shots = _screenshot_dir(tmp_path)
    claims = [{"id": "compile-up-to-2x", "metric": "speedup", "backend": "torch-compile",
               "low": 1.5, "high": 2.0, "verdict": "refuted",
               "cells": [{"label": "transformer infer", "ratio": 1.3, "ci95": [1.26, 1.4],
                          "verdict": "refuted"}]}]
    cpu = write_report([CPU_RUN], tmp_path / "cpu.html", claims=claims)
    plots = _open(browser, cpu, shots / "report-cpu.png")
    assert [p["id"] for p in plots] == ["speedups", "compile", "samples"]

    series = write_report([p.parent for p in CPU_RUNS], tmp_path / "series.html")
    assert "history" in [p["id"] for p in _open(browser, series, shots / "report-series.png")]

    h200 = [H200_KERNELS.parent, *(p.parent for p in H200_RUNS)] if H200_KERNELS.is_file() \
        else []
    if h200:
        gpu = write_report(h200, tmp_path / "gpu.html")
        ids = [p["id"] for p in _open(browser, gpu, shots / "report-h200.png")]
        assert {"roofline-0", "fractions-0"} <= set(ids)

    # sorting by speedup puts the numbers in order; cells without one go last
    keys = _sorted_column(browser, cpu, "speedup [95% CI]")
    compiled = [c["speedup"] for c in runs.load(CPU_RUN).cells if c.get("speedup")]
    assert [float(k) for k in keys[:len(compiled)]] == pytest.approx(sorted(compiled))
    assert all(k is None for k in keys[len(compiled):])


def test_index_and_its_pages_render_in_chromium(browser, tmp_path):
    shots = _screenshot_dir(tmp_path)
    index = write_index(_profiles_copy(tmp_path), tmp_path / "site")
    _open(browser, index, shots / "index.png")  # no plots, but no error either
    for page in sorted((tmp_path / "site").glob("*/*.html"))[:2]:
        _open(browser, page, shots / f"index-{page.parent.name}-{page.stem}.png")


def test_the_browser_check_fails_a_blank_plot_and_a_console_error(browser, tmp_path):
    from plotly.offline import get_plotlyjs

    def page(name: str, body: str) -> Path:
        path = tmp_path / name
        path.write_text(f"<html><head><script>{get_plotlyjs()}</script></head><body>{body}"
                        "</body></html>")
        return path

    blank = page("blank.html", '<div class="plot" data-plot="empty"><div id="p"></div></div>'
                 "<script>Plotly.newPlot('p', [], {width: 600, height: 400})</script>")
    with pytest.raises(AssertionError, match="plot empty is blank"):
        _open(browser, blank, tmp_path / "blank.png")
    noisy = page("noisy.html", "<script>console.error('broken')</script>")
    with pytest.raises(AssertionError, match="console error: broken"):
        _open(browser, noisy, tmp_path / "noisy.png")


# ---------------------------------------------------------------- a site that stands alone

class _Sources(HTMLParser):
    """Every href and src of a page (links, scripts)."""

    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("href", "src") and v]


PROFILE_RUN = ROOT / "profiles/nvidia-h200-x1/20261128-052754-cuda-profile"


def test_every_local_link_of_an_index_resolves_inside_its_folder(tmp_path):
    """`lab report profiles/ --html DIR` uploaded alone (a CI artefact): each page's links to
    traces and hot tables point at copies inside DIR, none back into profiles/."""
    from urllib.parse import unquote, urlparse

    root = tmp_path / "profiles"
    shutil.copytree(PROFILE_RUN, root / "nvidia-h200-x1" / PROFILE_RUN.name)
    shutil.copytree(CPU_RUN, root / "amd-epyc-2c" / CPU_RUN.name)
    site = tmp_path / "site"
    write_index(root, site)
    checked = 0
    for page in site.rglob("*.html"):
        parser = _Sources()
        parser.feed(page.read_text())
        for href in parser.links:
            url = urlparse(href)
            if url.scheme or href.startswith("#"):
                continue
            target = (page.parent / unquote(url.path)).resolve()
            assert target.is_file(), f"{page.name}: {href} does not resolve"
            assert target.is_relative_to(site.resolve()), f"{page.name}: {href} leaves the site"
            checked += 1
    profile_page = (site / "nvidia-h200-x1" / f"{PROFILE_RUN.name}.html").read_text()
    assert "trace.json" in profile_page and checked > 5
    # a profile run has no timings: no Cells section of dashes, its hot kernels instead
    assert ">Cells</h2>" not in profile_page and ">Hot kernels</h2>" in profile_page
    assert ">Cells</h2>" in (site / "amd-epyc-2c" / f"{CPU_RUN.name}.html").read_text()


def test_the_index_writes_every_start_in_one_format(tmp_path):
    index = write_index(_profiles_copy(tmp_path), tmp_path / "site")
    dates = [r[2] for r in _table(index.read_text(), "runs")[1:] if r[1] != "broken"]
    assert dates and all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d( UTC)?", d)
                         for d in dates), dates
