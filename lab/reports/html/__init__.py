"""`lab report ... --html`: stored runs as one HTML page with plots, and an index of them all.

    from lab.reports.html import write_report, write_index
    write_report(["profiles/amd-epyc-2c/20261124-212813-cpu"], "r.html")
    write_index("profiles", "site")          # site/index.html, one page per stored run

Modules: `runs` reads the stored files, `figures` draws the plots (plotly), `tables` the HTML
tables, `page` puts a page together, `index` the pages of a whole profiles folder. Plotly is
imported only when a page is written. docs/report.md explains every section.
"""

from __future__ import annotations

from pathlib import Path

from lab.reports.html.runs import KernelBench, ReportInputError, Run, load

__all__ = ["ReportInputError", "write_index", "write_report"]


def write_report(sources, out_path, *, title: str | None = None,
                 claims: list[dict] | None = None, gate: list[dict] | None = None,
                 plotlyjs: str = "inline", shared_js=None) -> Path:
    """Write one self-contained page for the given stored runs and kernel benchmarks.

    sources: run folders, results.json or kernels JSON paths, or loaded documents (their
    trace links cannot be resolved); several runs add the history section. claims: the claim
    verdicts of a `lab check` (`id`, `verdict`, `metric`, `backend`, `versus`, `low`, `high`,
    `cells` of `label`/`ratio`/`ci95`/`verdict`/`reason`): a table, and their thresholds on the
    speedup plot. gate: the per-benchmark verdicts of a `lab gate` (`name`, `verdict`, `ratio`,
    `ci`, `p_value`, `processes`, `reason`). Raises ReportInputError (one line) for a source
    that cannot be read.
    """
    from lab.reports.html import page

    if isinstance(sources, str | Path | dict):
        sources = [sources]
    loaded = [load(s) for s in sources]
    if not loaded:
        raise ReportInputError("no runs given to report on")
    out_path = Path(out_path)
    text = page.render([x for x in loaded if isinstance(x, Run)],
                       [x for x in loaded if isinstance(x, KernelBench)], out_path,
                       title=title, claims=claims, gate=gate, plotlyjs=plotlyjs,
                       shared_js=Path(shared_js) if shared_js else None)
    return page.write_page(text, out_path)


def write_index(profiles_root, out_dir, on_skip=None) -> Path:
    """`lab report profiles/ --html DIR`: DIR/index.html listing every stored run, one page
    per run and one history page per machine with several runs. Returns index.html's path.
    on_skip(folder, exc) is told of each run that cannot be read."""
    from lab.reports.html import index

    return index.write(Path(profiles_root), Path(out_dir), on_skip)
