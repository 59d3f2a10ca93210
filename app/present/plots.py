"""Plotly figure specs (plain dicts) built from the page schemas; the browser draws them with the served plotly.js.

Specs travel as JSON inside <script type="application/json"> (Jinja's |tojson escapes <, >, & and quotes), so
corpus strings in them are data, never markup, to the page. Plotly itself reads a subset of HTML in trace names,
hover text and annotations, so every one built from data (basis, model and token names) is html-escaped here.
"""

from __future__ import annotations

import html
import math

import numpy as np

from app.present.unit_sections import HOT
from app.read.schemas import BasisDistribution, DensityHistogram


def _region(x0: float, x1: float, text: str, colour: str) -> tuple[dict, dict]:
    shape = {"type": "rect", "xref": "x", "yref": "paper", "x0": x0, "x1": x1, "y0": 0, "y1": 1,
             "fillcolor": colour, "opacity": 0.15, "line": {"width": 0}, "layer": "below"}
    note = {"xref": "x", "yref": "paper", "x": (x0 + x1) / 2, "y": 1.02, "text": text, "showarrow": False,
            "font": {"size": 10}}
    return shape, note


def density_plot(hist: DensityHistogram, n_tokens: int | None = None) -> dict:
    """Bars of live units over log10 density, with the ultralow and dense regions shaded and named, and the
    resolution floor 1/n_tokens (the lowest density a live unit can show) as a dotted line."""
    edges, counts = hist.edges, hist.counts
    centres = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    widths = [b - a for a, b in zip(edges, edges[1:])]
    low = math.log10(hist.ultralow_threshold)
    dense = math.log10(hist.dense_threshold)
    left = min(edges[0], low - 0.5) if edges else low - 1
    right = max(edges[-1], 0.0) if edges else 0.0
    shapes, notes = (list(v) for v in zip(_region(left, low, "ultralow", "#7a5af8"),
                                          _region(dense, right, "dense", "#d92d20")))
    if n_tokens:
        floor = -math.log10(n_tokens)
        left = min(left, floor - 0.3)
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": floor, "x1": floor, "y0": 0, "y1": 1,
                       "line": {"dash": "dot", "width": 1}})
        notes.append({"xref": "x", "yref": "paper", "x": floor, "y": 0.9, "text": "1 / tokens", "showarrow": False,
                      "xanchor": "left", "font": {"size": 10}})
    return {"data": [{"type": "bar", "x": centres, "y": counts, "width": widths, "marker": {"color": HOT},
                      "hovertemplate": "log10 density %{x:.2f}<br>%{y} units<extra></extra>"}],
            "layout": {"xaxis": {"title": {"text": "log10 density"}, "range": [left, right]},
                       "yaxis": {"title": {"text": "units"}}, "shapes": shapes, "annotations": notes}}


def distribution_plots(dists: list[BasisDistribution]) -> tuple[dict, dict]:
    """Overlaid normalised histograms, one trace per basis: log10 density, and top-token entropy."""
    def traces(field: str) -> list[dict]:
        return [{"type": "histogram", "x": getattr(d, field), "name": html.escape(f"{d.name} ({d.kind})"), "opacity": 0.6,
                 "histnorm": "probability", "nbinsx": 40} for d in dists]

    layout = {"barmode": "overlay", "yaxis": {"title": {"text": "fraction of live units"}}, "showlegend": True}
    return ({"data": traces("log10_density"), "layout": {**layout, "xaxis": {"title": {"text": "log10 density"}}}},
            {"data": traces("top_token_entropy"),
             "layout": {**layout, "xaxis": {"title": {"text": "top-token entropy (bits; lower = more specific)"}}}})


def totals_plot(dists, max_total: int) -> dict:
    """Grouped bars: how many scores of each basis gave each rubric total 0..max_total, the medians (of the items'
    mean totals) as dashed lines in the basis's colour, each labelled."""
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]  # plotly's first trace colours
    data = [{"type": "bar", "x": list(range(len(d.histogram))), "y": d.histogram, "name": html.escape(f"{d.basis} ({d.kind})"),
             "marker": {"color": colours[i % len(colours)]},
             "hovertemplate": "total %{x}: %{y} scores<extra></extra>"} for i, d in enumerate(dists)]
    shown = [(i, d) for i, d in enumerate(dists) if d.median is not None]
    lines = [{"type": "line", "xref": "x", "yref": "paper", "x0": d.median, "x1": d.median, "y0": 0, "y1": 1,
              "line": {"dash": "dash", "width": 1.5, "color": colours[i % len(colours)]}} for i, d in shown]
    labels = [{"x": d.median, "xref": "x", "y": 1 - 0.08 * k, "yref": "paper", "showarrow": False, "xanchor": "left",
               "text": f"median, {d.basis}: {d.median:g}", "font": {"color": colours[i % len(colours)]}}
              for k, (i, d) in enumerate(shown)]
    return {"data": data, "layout": {"barmode": "group", "showlegend": True, "shapes": lines, "annotations": labels,
                                     "xaxis": {"title": {"text": f"rubric total (0-{max_total})"}, "dtick": 1},
                                     "yaxis": {"title": {"text": "scores"}}}}


def interval_curves_plot(curves, max_score: int) -> dict:
    """Mean per-interval score (0..max_score) against the interval (1 = lowest activations), one line per basis: the
    mean over every rater's scores of that basis's items in the interval (n in the hover)."""
    data = [{"type": "scatter", "mode": "lines+markers", "x": list(range(1, len(c.mean) + 1)), "y": c.mean,
             "name": html.escape(c.basis), "customdata": c.n,
             "hovertemplate": "interval %{x}: mean %{y:.2f} of %{customdata} scores<extra></extra>"} for c in curves]
    return {"data": data, "layout": {"showlegend": True, "xaxis": {"title": {"text": "activation interval"}, "dtick": 1},
                                     "yaxis": {"title": {"text": f"mean score (0-{max_score})"},
                                               "range": [0, max_score + 0.1]}}}


def frontier_plots(bases: list) -> tuple[dict, dict] | None:
    """The sparsity–fidelity frontier of every SAE in the database: L0 (log axis) against FVU and against loss
    recovered, one line per (model, architecture) in L0 order; a click on a point opens its basis (its url rides in
    customdata; static/monoscope.js follows it). None when the database holds no SAE with these metrics."""
    groups: dict[tuple[str, str], list] = {}
    for b in bases:
        if b.kind == "sae" and b.metrics.l0 and b.metrics.fvu is not None:
            groups.setdefault((b.model, b.architecture or "sae"), []).append(b)
    if not groups:
        return None

    def plot(field: str, title: str) -> dict:
        data = []
        for (model, arch), members in sorted(groups.items()):
            members = sorted((b for b in members if getattr(b.metrics, field) is not None), key=lambda b: b.metrics.l0)
            data.append({"type": "scatter", "mode": "lines+markers", "name": html.escape(f"{arch} ({model})" if len(
                {m for m, _ in groups}) > 1 else arch), "x": [b.metrics.l0 for b in members],
                "y": [getattr(b.metrics, field) for b in members], "text": [b.name for b in members],
                "customdata": [b.url for b in members], "marker": {"size": 9},
                "hovertemplate": "%{text}<br>L0 %{x:.3g}<br>" + title + " %{y:.4g}<extra></extra>"})
        return {"data": data, "links": True,
                "layout": {"showlegend": True, "yaxis": {"title": {"text": title}, "rangemode": "tozero"},
                           "xaxis": {"title": {"text": "L0 (active units per token)"}, "type": "log"}}}

    return plot("fvu", "FVU (lower is better)"), plot("loss_recovered", "loss recovered (higher is better)")


_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf")  # plotly's default sequence, named so that a median line can take its histogram's colour


def match_plot(pairs: list) -> dict:
    """Overlaid histograms of best-match correlations, one per pair of bases (named with what it measures and its
    median over the paper's population), each median a dashed line in its histogram's colour (text labels on the
    plot piled up on a `demo --full` run's ten pairs)."""
    data, lines = [], []
    for k, p in enumerate(pairs):
        colour = _COLOURS[k % len(_COLOURS)]
        centres = [(a + b) / 2 for a, b in zip(p.edges, p.edges[1:])]
        total = max(sum(p.counts), 1)
        median = "" if p.median_population is None else f", median {p.median_population:.2f}"
        name = html.escape(f"{p.relation}: {p.basis} ({p.model}) → {p.other_basis} ({p.other_model}){median}")
        data.append({"type": "bar", "x": centres, "y": [c / total for c in p.counts], "name": name, "opacity": 0.6,
                     "marker": {"color": colour},
                     "hovertemplate": "correlation %{x:.2f}: %{y:.1%} of units<extra></extra>"})
        if p.median_population is not None:
            lines.append({"type": "line", "xref": "x", "yref": "paper", "x0": p.median_population,
                          "x1": p.median_population, "y0": 0, "y1": 1,
                          "line": {"dash": "dash", "width": 1.5, "color": colour}})
    return {"data": data, "layout": {"barmode": "overlay", "showlegend": True, "shapes": lines,
                                     "xaxis": {"title": {"text": "best-match activation correlation"}, "range": [-1, 1]},
                                     "yaxis": {"title": {"text": "fraction of units"}}}}


MAP_COLOURS = ("dictionary", "density", "label")


def map_plot(points: list, colour: str) -> dict:
    """The feature map as a WebGL scatter (fast at 16k+ points), coloured by dictionary, log10 density or whether a
    unit is labelled; hover shows the unit, its label and top tokens (escaped: plotly reads hover text as HTML);
    a click opens the unit (customdata, followed by static/monoscope.js)."""
    def hover(p) -> str:
        tokens = " · ".join(html.escape(t) for t in p.top_tokens)
        return f"{html.escape(p.basis)} #{p.index}<br>{html.escape(p.label or 'no label')}<br>{tokens}"

    def trace(name: str, members: list, **extra) -> dict:
        return {"type": "scattergl", "mode": "markers", "name": html.escape(name), "x": [p.x for p in members],
                "y": [p.y for p in members], "text": [hover(p) for p in members],
                "customdata": [p.url for p in members], "hovertemplate": "%{text}<extra></extra>",
                "marker": {"size": 5, "opacity": 0.75, **extra.pop("marker", {})}, **extra}

    if colour == "density":
        data = [trace("features", points, marker={
            "color": [p.log10_density if p.log10_density is not None else -10 for p in points],
            "colorscale": "Viridis", "colorbar": {"title": {"text": "log10 density"}}})]
    elif colour == "label":
        data = [trace(name, [p for p in points if bool(p.label) == want])
                for name, want in (("labelled", True), ("unlabelled", False))]
    else:
        by_basis: dict[str, list] = {}
        for p in points:
            by_basis.setdefault(p.basis, []).append(p)
        data = [trace(name, members) for name, members in sorted(by_basis.items())]
    axis = {"showticklabels": False, "zeroline": False, "title": {"text": ""}}
    return {"data": data, "links": True, "layout": {"showlegend": colour != "density", "xaxis": axis,
                                                    "yaxis": {**axis, "scaleanchor": "x"}, "hovermode": "closest"}}


def proxy_corr_plot(bases: list) -> dict:
    """Overlaid histograms of every unit's correlation with a thresholded proxy, one per basis (neurons, features):
    the paper's comparison of how well each kind of unit detects the property."""
    data = []
    for b in bases:
        counts, edges = np.histogram(np.clip(b.correlations, -1, 1), bins=40, range=(-1, 1))
        total = max(int(counts.sum()), 1)
        data.append({"type": "bar", "x": ((edges[:-1] + edges[1:]) / 2).tolist(), "y": (counts / total).tolist(),
                     "name": html.escape(f"{b.name} ({b.kind}s)"), "opacity": 0.6,
                     "hovertemplate": "corr %{x:.2f}: %{y:.1%} of units<extra></extra>"})
    return {"data": data, "layout": {"barmode": "overlay", "showlegend": True, "yaxis": {"type": "log",
                                     "title": {"text": "fraction of units (log)"}},
                                     "xaxis": {"title": {"text": "correlation with the proxy thresholded at 0"}}}}


def autointerp_plot(bases: list) -> dict:
    """Grouped box plots with every point: one group per scorer, one box per basis (features beside neurons), the
    y axis the score (Spearman for simulation, balanced accuracy for the others)."""
    data = [{"type": "box", "name": html.escape(f"{b.basis} ({b.kind})"), "boxpoints": "all", "jitter": 0.4, "pointpos": 0,
             "x": [s.scorer for s in b.scorers for _ in s.values], "y": [v for s in b.scorers for v in s.values]}
            for b in bases]
    return {"data": data, "layout": {"boxmode": "group", "showlegend": True,
                                     "yaxis": {"title": {"text": "score"}, "range": [-1.05, 1.05]},
                                     "xaxis": {"title": {"text": "scorer"}}}}
