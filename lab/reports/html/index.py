"""The pages of a whole profiles folder: an index of every stored run, a page per run, and a
history page per machine with more than one run.

Layout of the output folder (the runs' files the pages link are copied into it):

    DIR/index.html                     every run: machine, run id, date, cells, statuses
    DIR/plotly.min.js                  one copy of plotly.js for all the pages below
    DIR/<machine>/<run id>.html        one report per run (kernel benchmarks included)
    DIR/<machine>/history.html         that machine's runs together: history, change points
    DIR/files/<machine>/<run id>/...   copies of the traces, hot tables and reports the pages
                                       link, so the folder uploaded alone has no dead links
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from pathlib import Path
from urllib.parse import quote

from lab.reports import rows
from lab.reports.html import page
from lab.reports.html.runs import KERNELS_FILE, RESULTS, KernelBench, ReportInputError, Run, load
from lab.reports.html.tables import esc, status_class

ASSETS = "files"  # under DIR: copies of what the pages link


def stored_runs(root: Path) -> list[Path]:
    """Every run folder under root: a folder with results.json or a kernel benchmark file,
    not counting anything inside a run's own traces."""
    found = {p.parent for name in (RESULTS, KERNELS_FILE) for p in root.rglob(name)
             if "traces" not in p.relative_to(root).parts}
    return sorted(found)


def _statuses(run: Run) -> str:
    """Cells per status, then per flag of the ok ones (noisy, busy: lab.reports.rows)."""
    built = [rows.build(c) for c in run.cells]
    counts = Counter(r.status for r in built)
    flags = Counter(f for r in built for f in r.flags if f in ("noisy", "busy"))
    return " · ".join([f"{k} {v}" for k, v in sorted(counts.items())]
                      + [f"{k} {v}" for k, v in sorted(flags.items())])


def started(text) -> str:
    """One format for every run's start: runs store local ISO seconds, kernel benchmark files
    pytest-benchmark's UTC with microseconds (shown in UTC, marked)."""
    try:
        when = _dt.datetime.fromisoformat(str(text))
    except ValueError:
        return str(text or "")
    if when.tzinfo is not None:
        return when.astimezone(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _status_cls(run: Run) -> str:
    classes = {status_class(c) for c in run.cells}
    bad = classes - {"status-ok", "status-noisy", "status-skipped"}
    return sorted(bad)[0] if bad else "status-noisy" if "status-noisy" in classes \
        else "status-ok" if classes else "status-other"


def write(root: Path, out_dir: Path, on_skip=None) -> Path:
    """on_skip(folder, exc): told of each run that cannot be read (listed as unreadable)."""
    if not root.is_dir():
        raise ReportInputError(f"{root} is not a folder of stored runs")
    folders = stored_runs(root)
    if not folders:
        raise ReportInputError(f"no stored runs under {root} (no {RESULTS} or "
                               f"{KERNELS_FILE} found)")
    out_dir.mkdir(parents=True, exist_ok=True)
    shared_js = out_dir / page.PLOTLY_FILE
    assets = out_dir / ASSETS  # what the pages link, copied: the folder stands alone
    from plotly.offline import get_plotlyjs

    page.write_page(get_plotlyjs(), shared_js)
    entries, by_machine = [], {}
    for folder in folders:
        machine = folder.relative_to(root).parts[0] if folder != root else root.name
        try:
            item = load(folder)
        except ReportInputError as exc:
            if on_skip is not None:
                on_skip(folder, exc)
            entries.append((machine, folder.name, "", "unreadable", "", str(exc), "status-other",
                         None))
            continue
        out_path = out_dir / machine / f"{folder.name}.html"
        page.write_page(page.render([item] if isinstance(item, Run) else [],
                                    [item] if isinstance(item, KernelBench) else [], out_path,
                                    plotlyjs="shared", shared_js=shared_js, assets=assets),
                        out_path)
        href = out_path.relative_to(out_dir).as_posix()
        if isinstance(item, Run):
            lab = item.doc.get("lab") or {}
            kind = lab.get("kind") or "run"
            date = started(lab.get("started") or item.doc.get("datetime") or "")
            entries.append((machine, item.run_id, date, kind, len(item.cells), _statuses(item),
                         _status_cls(item), href))
            by_machine.setdefault(machine, []).append(item)
        else:
            entries.append((machine, folder.name, started(item.doc.get("datetime") or ""),
                            "kernels", len(item.rows), f"{len(item.rows)} kernel calls",
                            "status-ok", href))
    history_links = []
    for machine, runs in sorted(by_machine.items()):
        if len(runs) < 2:
            continue
        out_path = out_dir / machine / "history.html"
        page.write_page(page.render(runs, [], out_path, title=f"history: {machine}",
                                    plotlyjs="shared", shared_js=shared_js, assets=assets),
                        out_path)
        history_links.append(f'<a href="{esc(quote(out_path.relative_to(out_dir).as_posix()))}">'
                             f"{esc(machine)}: {len(runs)} runs</a>")
    index = out_dir / "index.html"
    page.write_page(_index_html(root, entries, history_links), index)
    return index


def _index_html(root: Path, entries: list[tuple], history_links: list[str]) -> str:
    head = "".join(f"<th>{c}</th>" for c in ("machine", "run", "started", "kind", "cells",
                                              "statuses"))
    body = []
    for machine, run_id, date, kind, cells, statuses, cls, href in entries:
        run = f'<a href="{esc(quote(href))}">{esc(run_id)}</a>' if href else esc(run_id)
        body.append(f"<tr><td>{esc(machine)}</td><td>{run}</td><td>{esc(date)}</td>"
                    f"<td>{esc(kind)}</td><td data-sort=\"{esc(cells)}\">{esc(cells)}</td>"
                    f'<td class="status {cls}">{esc(statuses)}</td></tr>')
    history = ("<h2>History per machine</h2><p>" + " · ".join(history_links) + "</p>"
               if history_links else "")
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>lab runs: {esc(root.name)}</title><style>{page.STYLE}</style></head><body>"
            f"<h1>Stored runs under {esc(root.name)}/</h1>"
            f'<table class="sortable runs"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>{history}"
            f"<footer>perflab index, written {esc(stamp)}.</footer>"
            f"<script>{page.SORTER}</script></body></html>\n")
