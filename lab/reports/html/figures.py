"""The report's plots, as plotly figures: one function per plot, None when there is nothing
to draw. Plotly is imported here only, when a figure is made (importing `lab` stays cheap).

Plots use SVG traces only (no WebGL): a page must render in a headless browser without a GPU.
Ratios and times go on log axes, where a 2x change is the same distance everywhere.
"""

from __future__ import annotations

import math

from lab.core import stats
from lab.judge import history as lab_history
from lab.reports.html.runs import KernelBench, Run, run_sort_key, run_value_s, size_label

# one colour per implementation, the same in every plot of a page (Okabe-Ito, colour-blind safe)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
           "#000000")
CHANGE_POINT_ALPHA = 0.01  # the same test and minimum shift as `lab history`
CHANGE_POINT_MIN_SHIFT = 0.05
MIN_RUNS_FOR_CHANGE_POINTS = 4
NEVER = "never"


def colour_map(names) -> dict[str, str]:
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(dict.fromkeys(names))}


def _layout(fig, title: str, height: int, **axes) -> None:
    # the legend sits between the title and the plot, where it never covers an axis title
    fig.update_layout(title={"text": title, "x": 0, "y": 0.99, "yanchor": "top",
                             "font": {"size": 15}},
                      height=height, margin={"l": 10, "r": 10, "t": 90, "b": 50},
                      template="plotly_white",
                      legend={"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom"},
                      **axes)


def _cell_label(cell: dict, run: Run, many_runs: bool) -> str:
    label = f"{cell.get('workload')} · {cell.get('mode')} · {cell.get('backend')}"
    return f"{label} ({run.run_id})" if many_runs else label


# ---------------------------------------------------------------- speedups (forest plot)

def _claim_marks(claims: list[dict] | None) -> dict[tuple[str, str, str], list[tuple]]:
    """(workload, mode, backend) -> [(claim id, low, high)] for the claims a single cell's
    speedup answers: metric `speedup` without `versus` (a ratio of two speedups is not one
    cell's speedup, so its thresholds would mislead on this plot)."""
    marks: dict[tuple[str, str, str], list[tuple]] = {}
    for claim in claims or []:
        if claim.get("metric", "speedup") != "speedup" or claim.get("versus"):
            continue
        for cell in claim.get("cells") or []:
            workload, _, mode = str(cell.get("label", "")).partition(" ")
            key = (workload, mode, str(claim.get("backend")))
            marks.setdefault(key, []).append(
                (str(claim.get("id", "claim")), claim.get("low"), claim.get("high")))
    return marks


def speedup_forest(runs: list[Run], claims: list[dict] | None = None):
    """Each compiled cell's speedup over its own eager mode with its 95% interval, grouped by
    workload and mode; the claims' thresholds drawn on the rows they judge."""
    import plotly.graph_objects as go

    many = len(runs) > 1
    rows = [(run, c) for run in runs for c in run.cells
            if c.get("status") == "ok" and c.get("speedup") and c.get("speedup_ci95")]
    if not rows:
        return None
    rows.sort(key=lambda rc: (str(rc[1].get("workload")), str(rc[1].get("mode")),
                              str(rc[1].get("backend")), run_sort_key(rc[0])))
    colours = colour_map(c.get("backend") for _, c in rows)
    labels = [_cell_label(c, run, many) for run, c in rows]
    fig = go.Figure()
    for backend, colour in colours.items():
        picked = [(label, c) for label, (_, c) in zip(labels, rows, strict=True)
                  if c.get("backend") == backend]
        xs = [c["speedup"] for _, c in picked]
        fig.add_trace(go.Scatter(
            x=xs, y=[label for label, _ in picked], mode="markers", name=backend,
            marker={"color": colour, "size": 10, "symbol": "diamond"},
            error_x={"type": "data", "symmetric": False,
                     "array": [c["speedup_ci95"][1] - c["speedup"] for _, c in picked],
                     "arrayminus": [c["speedup"] - c["speedup_ci95"][0] for _, c in picked],
                     "thickness": 2, "width": 6},
            customdata=[[c["speedup_ci95"][0], c["speedup_ci95"][1], c.get("name")]
                        for _, c in picked],
            hovertemplate="%{customdata[2]}<br>%{x:.3f}x [%{customdata[0]:.3f}, "
                          "%{customdata[1]:.3f}]<extra></extra>"))
    fig.add_vline(x=1.0, line={"color": "#555", "dash": "dot"})
    # an annotation on a log axis takes log10(x): 0 is 1x (add_vline's own label lands at 10x)
    fig.add_annotation(x=0, y=1, xref="x", yref="paper", text="1x: no faster",
                       showarrow=False, yanchor="top", xanchor="left", xshift=4,
                       font={"size": 11, "color": "#555"})
    marks = _claim_marks(claims)
    drawn = set()
    for i, (_, c) in enumerate(rows):
        position = len(rows) - 1 - i  # a category's position counts from the bottom row
        for claim_id, low, high in marks.get((c.get("workload"), c.get("mode"),
                                              c.get("backend")), []):
            for value in (low, high):
                if value is None or not math.isfinite(value):
                    continue
                fig.add_shape(type="line", x0=value, x1=value, y0=position - 0.45,
                              y1=position + 0.45,
                              xref="x", yref="y", line={"color": "#b00", "width": 2})
            drawn.add(claim_id)
    if drawn:  # a legend entry for the threshold marks, which shapes do not get
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line={"color": "#b00"},
                                 name="claim thresholds: " + ", ".join(sorted(drawn))))
    # the range holds every interval, 1x and the thresholds drawn, with a margin either side
    span = [v for _, c in rows for v in c["speedup_ci95"]] + [1.0] + [
        v for key in marks for _, low, high in marks[key] for v in (low, high)
        if v is not None and math.isfinite(v) and v > 0]
    x_range = [math.log10(min(span) / 1.15), math.log10(max(span) * 1.15)]
    _layout(fig, "Speedup over the framework's own eager mode (95% interval)",
            max(300, 130 + 34 * len(rows)),
            xaxis={"type": "log", "range": x_range,
                   "title": "speedup (eager median / compiled median)"},
            yaxis={"categoryorder": "array", "categoryarray": labels[::-1],
                   "automargin": True})
    return fig


# ---------------------------------------------------------------- a suite's distribution

def suite_group_label(run: Run, row: dict, many_runs: bool) -> str:
    """A scorecard row's name on the plot: suite, size, mode, backend (device, precision)."""
    label = (f"{row['suite']} {row['size']} · {row['mode']} · {row['backend']} "
             f"({row['device']}, {row['precision']})")
    return f"{label} ({run.run_id})" if many_runs else label


def suite_speedups(rows: list[tuple[Run, dict]], many_runs: bool = False):
    """One point per passing suite model: its speedup over its own eager mode with its 95%
    interval, sorted within each suite and backend (lab.judge.scorecard's rows); each group's
    geomean as a line over its rows with its interval over models as a band. None when no
    row has a speedup (eager backends, or no model passed)."""
    import plotly.graph_objects as go

    groups = [(run, row) for run, row in rows if row.get("speedups")]
    if not groups:
        return None
    colours = colour_map(suite_group_label(run, row, many_runs) for run, row in groups)
    several = len(groups) > 1
    fig = go.Figure()
    categories: list[str] = []  # bottom to top: the first group at the bottom
    spans = []  # (label, first position, last position, geomean, interval)
    values = [1.0]
    for run, row in groups:
        label = suite_group_label(run, row, many_runs)
        models = sorted(row["speedups"], key=lambda m: row["speedups"][m])
        intervals = row.get("speedups_ci95") or {}
        ys = [f"{m} · {row['suite']} {row['size']} {row['mode']} {row['backend']}"
              + (f" ({run.run_id})" if many_runs else "") if several else m for m in models]
        xs = [row["speedups"][m] for m in models]
        # a model without an interval (one sample set) is drawn as a point, no bar
        his = [intervals.get(m, [x, x])[1] for m, x in zip(models, xs, strict=True)]
        los = [intervals.get(m, [x, x])[0] for m, x in zip(models, xs, strict=True)]
        values += xs + his + los
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="markers", name=f"{label}: {len(models)} of {row['models']} "
                                             f"models passed",
            marker={"color": colours[label], "size": 9, "symbol": "diamond"},
            error_x={"type": "data", "symmetric": False,
                     "array": [h - x for h, x in zip(his, xs, strict=True)],
                     "arrayminus": [x - lo for x, lo in zip(xs, los, strict=True)],
                     "thickness": 1.5, "width": 4},
            customdata=[[lo, h, m] for lo, h, m in zip(los, his, models, strict=True)],
            hovertemplate="%{customdata[2]}<br>%{x:.3f}x [%{customdata[0]:.3f}, "
                          "%{customdata[1]:.3f}]<extra>" + label + "</extra>"))
        first = len(categories)
        categories += ys
        geo, interval = row.get("speedup_geomean"), row.get("speedup_geomean_ci95")
        if geo is not None:
            spans.append((label, first, len(categories) - 1, geo, interval))
            values += [geo, *(v for v in interval or () if v is not None)]
    for label, first, last, geo, interval in spans:
        y0, y1 = first - 0.45, last + 0.45  # category positions count from the bottom row
        if interval and None not in interval and interval[1] > interval[0]:
            fig.add_shape(type="rect", x0=interval[0], x1=interval[1], y0=y0, y1=y1, xref="x",
                          yref="y", fillcolor=colours[label], opacity=0.12, line={"width": 0},
                          layer="below")
        fig.add_shape(type="line", x0=geo, x1=geo, y0=y0, y1=y1, xref="x", yref="y",
                      line={"color": colours[label], "width": 2, "dash": "dash"})
    if spans:  # a legend entry for the geomean lines and bands, which shapes do not get
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="geomean over the "
                                 "passing models (dashed), its 95% interval over models (band)",
                                 line={"color": "#555", "dash": "dash"}))
    fig.add_vline(x=1.0, line={"color": "#555", "dash": "dot"})
    fig.add_annotation(x=0, y=1, xref="x", yref="paper", text="1x: no faster",
                       showarrow=False, yanchor="top", xanchor="left", xshift=4,
                       font={"size": 11, "color": "#555"})
    finite = [v for v in values if v and math.isfinite(v) and v > 0]
    _layout(fig, "Suite: each passing model's speedup over its own eager mode (95% interval)",
            max(320, 150 + 26 * len(categories)),
            xaxis={"type": "log", "range": [math.log10(min(finite) / 1.15),
                                            math.log10(max(finite) * 1.15)],
                   "title": "speedup (eager median / compiled median)"},
            yaxis={"categoryorder": "array", "categoryarray": categories, "automargin": True})
    return fig


# ---------------------------------------------------------------- compile cost

def compile_cost(runs: list[Run]):
    """Compile seconds (cold and warm cache) against the steps needed to pay them back;
    a compile that never pays back (compiled not faster) sits on the `never` row."""
    import plotly.graph_objects as go

    many = len(runs) > 1
    points = []  # (label, pass, seconds, steps or None)
    for run in runs:
        for c in run.cells:
            if c.get("status") != "ok" or c.get("compile_s_cold") is None:
                continue
            for which in ("cold", "warm"):
                seconds = c.get(f"compile_s_{which}")
                if seconds is not None:
                    points.append((_cell_label(c, run, many), which, max(seconds, 1e-3),
                                   c.get(f"break_even_steps_{which}")))
    if not points:
        return None
    finite = [p[3] for p in points if p[3]]
    top = 10 ** math.ceil(math.log10(max(finite))) if finite else 10.0
    never_y = top * 10  # one decade above the largest finite value: its own row
    fig = go.Figure()
    colours = colour_map(p[0] for p in points)
    for label, colour in colours.items():
        mine = [p for p in points if p[0] == label]
        fig.add_trace(go.Scatter(
            x=[p[2] for p in mine], y=[p[3] or never_y for p in mine], mode="lines+markers",
            name=label, line={"color": colour, "width": 1},
            marker={"color": colour, "size": 11,
                    "symbol": ["circle" if p[1] == "cold" else "circle-open" for p in mine]},
            customdata=[[p[1], f"{p[3]:,.0f}" if p[3] else NEVER] for p in mine],
            hovertemplate=label + "<br>%{customdata[0]} cache: %{x:.2f} s, break-even "
                                  "%{customdata[1]} steps<extra></extra>"))
    lo = 10 ** math.floor(math.log10(min(finite))) if finite else 1.0
    ticks = [10.0 ** k for k in range(int(math.log10(lo)), int(math.log10(top)) + 1)]
    _layout(fig, "Compile seconds against break-even steps (filled: cold cache, open: warm)",
            460, xaxis={"type": "log", "title": "first call minus one steady step (s)"},
            yaxis={"type": "log", "title": "break-even steps",
                   "tickvals": [*ticks, never_y],
                   "ticktext": [f"{t:,.0f}" for t in ticks] + [NEVER]})
    return fig


# ---------------------------------------------------------------- raw samples

def raw_samples(runs: list[Run]):
    """Every stored sample of every measured cell (ms per step), and for a compiled cell the
    eager samples interleaved with it: the spread the intervals summarise, shown."""
    import plotly.graph_objects as go

    many = len(runs) > 1
    boxes = []  # (label, side, ms samples)
    for run in runs:
        for c in run.cells:
            if not c.get("samples_s"):
                continue
            label = _cell_label(c, run, many)
            boxes.append((label, str(c.get("backend")), [s * 1e3 for s in c["samples_s"]]))
            if c.get("baseline_samples_s"):  # its own row, right under the compiled one
                baseline = f"{c.get('baseline_backend') or 'eager'} (interleaved)"
                boxes.append((f"{label}: its {baseline}", baseline,
                              [s * 1e3 for s in c["baseline_samples_s"]]))
    if not boxes:
        return None
    colours = colour_map(side for _, side, _ in boxes)
    fig = go.Figure()
    shown = set()
    for label, side, ms in boxes:
        fig.add_trace(go.Box(
            x=ms, y=[label] * len(ms), name=side, legendgroup=side,
            showlegend=side not in shown, orientation="h", boxpoints="all", jitter=0.6,
            pointpos=0, marker={"color": colours[side], "size": 4, "opacity": 0.6},
            line={"color": colours[side], "width": 1}, fillcolor="rgba(0,0,0,0)",
            hovertemplate=f"{label}<br>{side}: %{{x:.4g}} ms<extra></extra>"))
        shown.add(side)
    labels = list(dict.fromkeys(label for label, _, _ in boxes))
    _layout(fig, "Raw samples: time per step of every sample", max(320, 130 + 34 * len(labels)),
            boxmode="overlay",
            xaxis={"type": "log", "title": "ms per step (log)"},
            yaxis={"categoryorder": "array", "categoryarray": labels[::-1],
                   "automargin": True})
    return fig


# ---------------------------------------------------------------- kernels

def roofline(bench: KernelBench):
    """Achieved TFLOP/s against arithmetic intensity under the measured roofs: copy bandwidth
    (a line of slope 1) and the bf16 matmul peak (flat)."""
    import plotly.graph_objects as go

    if not bench.rows:
        return None
    fig = go.Figure()
    gbps = bench.ceilings.get("copy_GBps")
    peak = bench.ceilings.get("matmul_bf16_TFLOPs")
    intensities = [r["intensity"] for r in bench.rows]
    x_lo, x_hi = min(intensities) / 2, max(intensities) * 2
    if gbps and peak:
        ridge = peak * 1e12 / (gbps * 1e9)  # flop/byte where the two roofs meet
        xs = [x_lo, min(max(ridge, x_lo), x_hi), x_hi]
        fig.add_trace(go.Scatter(
            x=xs, y=[min(peak, x * gbps * 1e9 / 1e12) for x in xs], mode="lines",
            name=f"roof: copy {gbps:,.0f} GB/s, bf16 matmul {peak:,.0f} TFLOP/s",
            line={"color": "#444", "width": 2}, hoverinfo="skip"))
    colours = colour_map(r["impl"] for r in bench.rows)
    symbols = dict(zip(dict.fromkeys(r["op"] for r in bench.rows),
                       ("circle", "square", "diamond", "triangle-up", "cross", "x",
                        "star", "hexagon", "pentagon", "triangle-down"), strict=False))
    for impl, colour in colours.items():
        mine = [r for r in bench.rows if r["impl"] == impl]
        fig.add_trace(go.Scatter(
            x=[r["intensity"] for r in mine], y=[r["TFLOPs"] for r in mine], mode="markers",
            name=impl, marker={"color": colour, "size": 10, "line": {"width": 1, "color": "#fff"},
                               "symbol": [symbols.get(r["op"], "circle") for r in mine]},
            customdata=[[r["op"], size_label(r.get("size")), r.get("pass"), r["GBps"], r["ms"]]
                        for r in mine],
            hovertemplate="%{customdata[0]} %{customdata[1]} %{customdata[2]}<br>"
                          "%{y:.2f} TFLOP/s, %{customdata[3]:,.0f} GB/s, %{customdata[4]:.4f} ms"
                          "<extra>" + impl + "</extra>"))
    for op, symbol in symbols.items():  # legend entries for the marker shapes
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=op,
                                 marker={"symbol": symbol, "color": "#999", "size": 9}))
    _layout(fig, f"Roofline: {bench.name} (markers: op; colour: implementation)", 520,
            xaxis={"type": "log", "title": "arithmetic intensity (flop per byte moved)"},
            yaxis={"type": "log", "title": "achieved TFLOP/s"})
    # implementations and ops make a long legend: a column at the right, clear of the title
    fig.update_layout(legend={"orientation": "v", "x": 1.01, "xanchor": "left", "y": 1,
                              "yanchor": "top"}, margin={"t": 50})
    return fig


def kernel_fractions(bench: KernelBench):
    """Per op, size and pass: the fraction of its own roof each implementation reached
    (copy bandwidth for memory-bound ops, the matmul peak for compute-bound ones)."""
    import plotly.graph_objects as go

    gbps = bench.ceilings.get("copy_GBps")
    peak = bench.ceilings.get("matmul_bf16_TFLOPs")
    if not bench.rows or not (gbps or peak):
        return None

    def fraction(r):
        if r.get("bound") == "compute":
            return r["TFLOPs"] / peak if peak else None
        return r["GBps"] / gbps if gbps else None

    def case(r):
        short = {"forward": "fwd", "forward+backward": "fwd+bwd"}.get(r.get("pass"), r.get("pass"))
        return f"{r['op']} {size_label(r.get('size'))} {short}"

    cases = list(dict.fromkeys(case(r) for r in bench.rows))
    colours = colour_map(r["impl"] for r in bench.rows)
    fig = go.Figure()
    for impl, colour in colours.items():
        mine = [r for r in bench.rows if r["impl"] == impl and fraction(r) is not None]
        fig.add_trace(go.Bar(
            y=[case(r) for r in mine], x=[fraction(r) for r in mine], name=impl,
            orientation="h", marker={"color": colour},
            customdata=[[r["GBps"], r["TFLOPs"], r["ms"]] for r in mine],
            hovertemplate="%{y}: %{x:.2f} of its roof<br>%{customdata[0]:,.0f} GB/s, "
                          "%{customdata[1]:.1f} TFLOP/s, %{customdata[2]:.4f} ms"
                          "<extra>" + impl + "</extra>"))
    # a kernel can pass its roof: the ceilings are measured once, at one size and clock
    top = max([1.0] + [f for r in bench.rows if (f := fraction(r)) is not None])
    fig.add_vline(x=1.0, line={"color": "#444", "dash": "dot"})
    _layout(fig, "Fraction of the measured roof (memory-bound: copy GB/s; compute-bound: "
                 "matmul TFLOP/s)", max(360, 130 + 30 * len(cases)), barmode="group",
            xaxis={"title": "fraction of roof", "range": [0, top * 1.05]},
            yaxis={"categoryorder": "array", "categoryarray": cases[::-1], "automargin": True})
    return fig


# ---------------------------------------------------------------- history

def history_series(runs: list[Run]) -> dict[str, list[tuple[str, float]]]:
    """series -> [(run id, seconds per step)] in run order, split as `lab history` splits them
    (lab.judge.history.split: never one line across thread counts or machines)."""
    points: dict[str, list[tuple[str, float, tuple]]] = {}
    for run in sorted(runs, key=run_sort_key):
        for c in run.cells:
            value = run_value_s(c)
            if value is not None:
                points.setdefault(c["name"], []).append(
                    (run.run_id, value, lab_history.settings_of(c, run.doc)))
    return lab_history.split(points).series


def change_points(values: list[float]) -> list[int]:
    if len(values) < MIN_RUNS_FOR_CHANGE_POINTS:
        return []
    return stats.change_points(values, alpha=CHANGE_POINT_ALPHA, min_shift=CHANGE_POINT_MIN_SHIFT)


def history(runs: list[Run]):
    """Each benchmark's value per run (ms per step) with its change points marked."""
    import plotly.graph_objects as go

    series = {k: v for k, v in history_series(runs).items() if len(v) >= 2}
    if not series:
        return None
    run_order = [r.run_id for r in sorted(runs, key=run_sort_key)]
    colours = colour_map(series)
    fig = go.Figure()
    for name, points in series.items():
        values = [v for _, v in points]
        fig.add_trace(go.Scatter(
            x=[run_id for run_id, _ in points], y=[v * 1e3 for v in values],
            mode="lines+markers", name=name, line={"color": colours[name]},
            hovertemplate=name + "<br>%{x}: %{y:.4g} ms<extra></extra>"))
        splits = change_points(values)
        bounds = [0, *splits, len(values)]
        for i, k in enumerate(splits):
            before, after = values[bounds[i]:k], values[k:bounds[i + 2]]
            ratio = stats.summarize(after).median / stats.summarize(before).median
            fig.add_trace(go.Scatter(
                x=[points[k][0]], y=[values[k] * 1e3], mode="markers", showlegend=False,
                marker={"symbol": "star", "size": 16, "color": "#b00"},
                hovertemplate=f"{name}<br>change point: {ratio:.3f}x "
                              f"({'slower' if ratio > 1 else 'faster'})<extra></extra>"))
    _layout(fig, "History: each benchmark per run (stars: change points)",
            440 + 18 * len(series),
            xaxis={"type": "category", "categoryorder": "array", "categoryarray": run_order,
                   "title": "run"},
            yaxis={"type": "log", "title": "ms per step (geometric mean of process medians)"})
    return fig
