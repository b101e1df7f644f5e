"""The suite summary wherever a run is reported (the HTML page's table and its plot of the
distribution, the suite CSV, the command line's --suites-csv), and suite claims judged per size:
a verdict on tiny models says so, a claim about real models is never decided on tiny ones, and
a run holding both sizes is judged on the claim's own. Runs are synthetic (tests/verdict_helpers):
three models compiled faster or slower, one that did not compile, their eager cells, and a
workload outside the suite."""

from __future__ import annotations

import csv
import io
import math
import re

import pytest
import test_html_report
from test_html_report import _open, _screenshot_dir, _table
from verdict_helpers import cell, document, run_lab_main, samples, speedup_cell, write_run

from lab.judge import claims, scorecard, suite_claims, verdict
from lab.reports import csv_export
from lab.reports.html import figures, runs, write_report
from lab.store import reader as results
from lab.workloads import suites

browser = test_html_report.browser  # its Chromium, driven by playwright (a fixture)

SPEEDUPS = {"bert": 1.5, "gpt2": 0.8, "resnet": 2.0}  # passing models; t5 fails to compile


def _entries(tiny: int = 1, speedups: dict | None = None, plain: bool = True) -> list[dict]:
    shape = {"batch": 1, "seq": 128, "tiny": tiny}
    common = {"precision": "fp32", "threads": 2, "shape": shape}
    out = []
    for i, (model, speedup) in enumerate((speedups or SPEEDUPS).items()):
        out.append(speedup_cell(f"hf/{model}", "torch-compile", "infer", speedup, seed=2 * i,
                                baseline_backend="torch-eager",
                                diagnostics={"graph_breaks": i, "recompiles": 0}, **common))
        out.append(cell(f"hf/{model}", "torch-eager", "infer", samples(1e-3, seed=50 + i),
                        **common))
    out.append(cell("hf/t5", "torch-compile", "infer", None, status="compile_error",
                    baseline_backend="torch-eager", **common))
    out.append(cell("hf/t5", "torch-eager", "infer", samples(1e-3, seed=90), **common))
    if plain:  # a workload that is no suite model
        out.append(speedup_cell("mlp", "torch-compile", "infer", 1.2, seed=99,
                                baseline_backend="torch-eager", precision="fp32"))
    # the names a real run gives: the size is part of each benchmark's name
    for entry in out:
        if entry["extra_info"]["workload"].startswith("hf/"):
            entry["name"] = entry["name"].replace("batch=32", f"batch=1,seq=128,tiny={tiny}")
    return out


@pytest.fixture
def suite_run(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    write_run(folder, _entries())
    return folder


def _row(folder) -> dict:
    rows = scorecard.summarize(results.cells(results.load(folder / "results.json")))
    return next(r for r in rows if r["backend"] == "torch-compile")


# ---------------------------------------------------------------- the HTML page


def test_the_page_has_the_suite_summary_first_with_the_scorecards_columns(suite_run, tmp_path):
    text = write_report([suite_run], tmp_path / "r.html").read_text()
    assert text.index("<h2>Suite summary</h2>") < text.index("<h2>Cells</h2>")
    table = _table(text, "suites")
    assert table[0] == list(scorecard.COLUMNS)
    body = {r[2]: r for r in table[1:]}
    assert set(body) == {"torch-compile", "torch-eager"}  # mlp is no suite model
    row = _row(suite_run)
    assert body["torch-compile"] == scorecard.cells_of(row)  # as the terminal and markdown say
    assert body["torch-compile"][3] == "3/4 (75%)"
    assert "1 compile_error" in body["torch-compile"][-1]
    geo = math.prod(SPEEDUPS.values()) ** (1 / 3)
    assert body["torch-compile"][4].startswith(f"{geo:.2f}x [")
    # the pass-rate column sorts by the rate, not by its words
    assert f'data-sort="{row["pass_rate"]}"' in text


def test_the_suite_plot_draws_each_model_with_its_interval_and_the_geomean(suite_run):
    (run,) = [runs.load(suite_run)]
    from lab.reports.html import tables

    fig = figures.suite_speedups(tables.suite_rows([run]))
    stored = {c["workload"]: c for c in run.cells if c.get("backend") == "torch-compile"
              and c.get("workload", "").startswith("hf/")}
    (points,) = [t for t in fig.data if t.error_x and t.error_x.array is not None]
    assert set(points.y) == {"hf/bert", "hf/gpt2", "hf/resnet"}  # passing models only
    assert list(points.x) == sorted(points.x)  # sorted: the distribution reads bottom to top
    for model, x, plus, minus in zip(points.y, points.x, points.error_x.array,
                                     points.error_x.arrayminus, strict=True):
        lo, hi = stored[model]["speedup_ci95"]
        assert x == stored[model]["speedup"]
        assert x + plus == pytest.approx(hi) and x - minus == pytest.approx(lo)
    row = _row(suite_run)
    lines = [s for s in fig.layout.shapes if s.type == "line" and s.x0 != 1.0]
    bands = [s for s in fig.layout.shapes if s.type == "rect"]
    assert [s.x0 for s in lines] == [pytest.approx(row["speedup_geomean"])]
    assert [(s.x0, s.x1) for s in bands] == [pytest.approx(row["speedup_geomean_ci95"])]
    # the band and line cover the three rows (positions 0..2) and nothing else
    assert lines[0].y0 == pytest.approx(-0.45) and lines[0].y1 == pytest.approx(2.45)
    lo, hi = (10 ** v for v in fig.layout.xaxis.range)
    assert lo < min(c["speedup_ci95"][0] for c in stored.values() if c.get("speedup_ci95"))
    assert hi > max(c["speedup_ci95"][1] for c in stored.values() if c.get("speedup_ci95"))


def test_a_run_without_suite_models_has_no_suite_section(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    write_run(folder, [speedup_cell("mlp", "torch-compile", "infer", 1.2,
                                    baseline_backend="torch-eager")])
    text = write_report([folder], tmp_path / "r.html").read_text()
    assert "Suite summary" not in text and 'data-plot="suite-speedups"' not in text
    assert figures.suite_speedups([]) is None


def test_the_suite_page_renders_in_chromium(browser, suite_run, tmp_path):
    page = write_report([suite_run], tmp_path / "suite.html")
    plots = _open(browser, page, _screenshot_dir(tmp_path) / "report-suite.png")
    assert [p["id"] for p in plots][0] == "suite-speedups"


# ---------------------------------------------------------------- CSV


def test_the_suite_csv_has_one_row_per_suite_and_backend(suite_run):
    doc = results.load(suite_run / "results.json")
    rows = list(csv.DictReader(io.StringIO(csv_export.suites_csv(doc))))
    assert [r["backend"] for r in rows] == ["torch-compile", "torch-eager"]
    compiled = rows[0]
    row = _row(suite_run)
    assert (compiled["suite"], compiled["size"], compiled["mode"]) == ("hf", "tiny", "infer")
    assert (compiled["models"], compiled["ok"]) == ("4", "3")
    assert float(compiled["pass_rate"]) == 0.75
    assert float(compiled["speedup_geomean"]) == row["speedup_geomean"]  # full precision
    assert [float(compiled[f"speedup_geomean_ci95_{e}"]) for e in ("lo", "hi")] == \
        list(row["speedup_geomean_ci95"])
    assert compiled["statuses"] == "compile_error=1; ok=3"
    assert compiled["failed_models"] == "hf/t5=compile_error"
    assert rows[1]["speedup_geomean"] == "" and rows[1]["pass_rate"] == "1.0"
    # the cells' CSV is unchanged: one table, one row per cell
    cells = list(csv.DictReader(io.StringIO(csv_export.cells_csv(doc))))
    assert len(cells) == len(results.cells(doc))


def test_report_writes_the_suite_csv_and_refuses_two_on_stdout(suite_run, tmp_path, capsys):
    from lab.cli import main

    out = tmp_path / "suites.csv"
    done = run_lab_main("report", str(suite_run), "--suites-csv", str(out), timeout=300)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == csv_export.suites_csv(results.load(suite_run / "results.json"))
    # refused, one line, nothing written: two CSVs on one stdout, a path inside the run
    for args, error in (([ "--csv", "-", "--suites-csv", "-"], "--csv - and --suites-csv -"),
                        (["--suites-csv", str(suite_run / "s.csv")], "--suites-csv ")):
        capsys.readouterr()
        assert main(["report", str(suite_run), *args]) == 2
        said = capsys.readouterr()
        assert said.out == "" and said.err.startswith(f"lab: error: {error}")
        assert len(said.err.strip().splitlines()) == 1
    assert sorted(p.name for p in suite_run.iterdir()) == ["results.json"]


# ---------------------------------------------------------------- claims per size


SIZED = """
[[claim]]
id = "geo-real"
quote = "faster on average"
metric = "speedup"
aggregate = "geomean"
backend = "torch-compile"
suite = "hf"
expect = "at_least"
value = 1.2

[[claim]]
id = "geo-tiny"
quote = "faster on average"
metric = "speedup"
aggregate = "geomean"
backend = "torch-compile"
suite = "hf"
size = "tiny"
expect = "at_least"
value = 1.2
"""


def _judge(entries: list[dict]) -> dict:
    """The SIZED claims judged on a stored run of `entries`, as lab check --stored-only
    reads one (lab.judge.checks): id -> result."""
    doc = document(entries)
    stored = verdict.index(doc, "cpu")
    sized = suite_claims.index(results.cells(doc), "cpu")
    parsed = claims.parse(SIZED, "sized.toml")
    return {r.claim.id: r for r in verdict.check(parsed, stored, "cpu", "test CPU", sized)}


FAST = {m: 1.6 for m in ("bert", "gpt2", "resnet")}  # every passing model at 1.6x


def test_a_claim_about_real_models_is_not_decided_on_tiny_ones():
    judged = _judge(_entries(tiny=1, speedups=FAST))
    real, tiny = judged["geo-real"], judged["geo-tiny"]
    # the tiny figure alone would support it; the claim is about real models
    assert real.verdict == "inconclusive"
    (only,) = real.cells
    assert only.ratio is None and only.label == "hf infer, real models"
    assert only.reason.startswith("not judged on the run's tiny models (two layers")
    assert "which give 1.6" in only.reason and "3 passing of 4 models" in only.reason
    assert "the claim is about real models: run `lab run --suite hf --size real`" in only.reason
    assert tiny.verdict == "supported" and tiny.cells[0].label == "hf infer, tiny models"
    assert "rests on tiny models" in tiny.reason
    text = verdict.format_results([real, tiny])
    assert re.search(r"hf infer, tiny models: 1\.\d{3}x \[95% CI [\d.-]+\] -> supported", text)
    assert "verdict rests on tiny models" in text
    assert "hf infer, real models: no verdict: not judged on the run's tiny models" in text


def test_a_run_with_both_sizes_is_judged_on_each_claims_own():
    # real models slower (a geomean of 0.8), tiny ones faster (1.6): each claim its own
    slow = {m: 0.8 for m in FAST}
    entries = _entries(tiny=0, speedups=slow) + _entries(tiny=1, speedups=FAST, plain=False)
    judged = _judge(entries)
    real, tiny = judged["geo-real"], judged["geo-tiny"]
    # the figures are the scorecard's for each size (the samples' ratios, near 0.8 and 1.6)
    geomean = {r["size"]: r["speedup_geomean"] for r in scorecard.summarize(
        results.cells(document(entries))) if r["backend"] == "torch-compile"}
    assert real.verdict == "refuted" and real.cells[0].ratio == pytest.approx(geomean["real"])
    assert "rests on tiny" not in real.reason and "tiny models are not judged" in real.reason
    assert tiny.verdict == "supported" and tiny.cells[0].ratio == pytest.approx(geomean["tiny"])
    assert "rests on tiny models" in tiny.reason and "real models are not judged" in tiny.reason
    # the run's other index keeps one cell per model and backend: without the sized one the
    # tiny claim would see the real cells (stored last) and nothing of its own size
    assert len(verdict.index(document(entries), "cpu")) < len(entries)


def test_the_scorecard_and_the_claims_agree_on_a_cells_size():
    tiny = {"workload": "hf/bert", "shape": {"tiny": 1}}
    real = {"workload": "hf/bert", "shape": {"tiny": 0}}
    assert scorecard.size_of(tiny) == "tiny" and scorecard.size_of(real) == "real"
    assert scorecard.size_of({"workload": "hf/bert"}) == "real"
    (claim,) = [c for c in claims.parse(SIZED, "s.toml") if c.id == "geo-tiny"]
    assert suite_claims.claim_size(claim) == "tiny"
    assert suites.size_shape(suite_claims.claim_size(claim)) == {"tiny": 1}
