"""A unit page's ingest-only sections, rendered once from the unit's UnitData: its statistics, its plots and logit
tables, and the frame of its example windows. They change only when the basis is ingested again, so ingest renders
them (templates/unit_sections.html) and stores them, with the UnitData's JSON they were rendered from, packed in
`unit.sections`; a unit page's first view then renders only what changes without an ingest (labels, links, the family)
around them, and its JSON twin splices the stored JSON the same way (app.read.queries.unit). The windows, ~95% of a
page's bytes, are stored once, as the example rows, and rendered into both with the page (app/present/window_batch.py).
A stored copy of another FORMAT, or rendered by other templates, is ignored and made again live, from the same
functions."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import Collection, Mapping, NamedTuple, Sequence

import zstandard
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup, escape

from app.present.templating import configure, format_number
from app.read.proxy_schemas import best_proxy
from app.read.schemas import Interval, LogitToken, ProxyStat, UnitData
from app.resources import resource
from app.zstd_codecs import zstd_codecs
from sae.analysis.proxy_scores import BUCKETS as PROXY_BUCKETS

HOT = "rgb(235,110,20)"
TEMPLATE = "unit_sections.html"
_TEMPLATES = resource("templates")
# The stored form's version: bump FORMAT when UnitData's fields or the packing below change. The sections are current
# while the templates that render them are unchanged (their hash); code that only moves them around does not count.
FORMAT = 5  # 5: windows left out, rendered with the page from the example rows
TEMPLATES_HASH = hashlib.sha256(b"".join((_TEMPLATES / name).read_bytes()
                                         for name in (TEMPLATE, "_macros.html"))).hexdigest()[:16]
_WINDOWS_MARKER = re.compile(rb"<!--windows (\d+)-->")  # render_sections's: where a group's windows go
SEPARATOR = "<!--section-->"  # a section placeholder in a rendered page; escaped data never holds "<"
_SEPARATOR_BYTES = SEPARATOR.encode()


class Sections(NamedTuple):
    """The page's ingest-only HTML, in page order: statistics; plots, logit tables and their note; example windows."""

    stats: Markup
    body: Markup
    examples: Markup


class Stored(NamedTuple):
    """What `unpack` finds in `unit.sections`: the UnitData as JSON and the Sections as UTF-8 HTML, each None when
    absent or made by another version."""

    data_json: bytes | None
    sections: tuple[bytes, bytes, bytes] | None


def step_plot(edges: Sequence[float], counts: Sequence[int], *, x_title: str, log_x: bool,
              y_title: str = "count") -> dict:
    """A plotly filled step histogram (works on a log x axis, where bars of varying width do not); counts as they
    are, never rescaled."""
    log_x = log_x and bool(edges) and min(edges) > 0
    y = list(counts) + ([counts[-1]] if counts else [])
    return {"data": [{"type": "scatter", "mode": "lines", "x": list(edges), "y": y,
                      "line": {"shape": "hv", "color": HOT}, "fill": "tozeroy",
                      "hovertemplate": "%{x:.3g}: %{y}<extra></extra>"}],
            "layout": {"xaxis": {"title": {"text": x_title}, "type": "log" if log_x else "linear",
                                 "exponentformat": "power"},
                       "yaxis": {"title": {"text": y_title}}}}


def interval_plot(intervals: Sequence[Interval]) -> dict:
    """Bars of firing tokens per activation interval, each over its own range, with the x-axis ticks at the
    intervals' edges (the same intervals the samples below are drawn from)."""
    edges = [iv.low for iv in intervals] + ([intervals[-1].high] if intervals else [])
    return {"data": [{"type": "bar", "x": [(iv.low + iv.high) / 2 for iv in intervals],
                      "width": [iv.high - iv.low for iv in intervals], "y": [iv.count for iv in intervals],
                      "customdata": [iv.index + 1 for iv in intervals], "marker": {"color": HOT},
                      "hovertemplate": "interval %{customdata}: %{y} firing tokens<extra></extra>"}],
            "layout": {"bargap": 0, "xaxis": {"title": {"text": "activation (interval edges)"}, "tickvals": edges,
                                              "ticktext": [format_number(e) for e in edges], "tickangle": -45},
                       "yaxis": {"title": {"text": "firing tokens"}}}}


PROXY_COLOURS = ("rgb(200,200,200)", "rgb(120,160,220)", "rgb(250,175,90)", "rgb(215,48,39)")  # per BUCKETS


def proxy_plots(stat: ProxyStat, intervals: Sequence[Interval]) -> tuple[dict, dict]:
    """Return the paper's two stacked histograms of a unit for one proxy (`proxy_plots_of_edges`)."""
    return proxy_plots_of_edges(stat, [iv.low for iv in intervals] + ([intervals[-1].high] if intervals else []))


def proxy_plots_of_edges(stat: ProxyStat, edges: Sequence[float]) -> tuple[dict, dict]:
    """Return the paper's two stacked histograms of a unit for one proxy: its firing tokens per activation interval
    (edges [I + 1]), stacked by the tokens' proxy-score bucket, counted and weighted by activation (the "expected
    value" plot: where the unit's output mass comes from)."""
    edges = list(edges)
    x = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    width = [b - a for a, b in zip(edges, edges[1:])]
    n = len(x)

    def spec(values: list[list[float]], y_title: str) -> dict:
        data = [{"type": "bar", "name": f"score {name}", "x": x, "width": width,
                 "y": [row[b] for row in values[:n]], "marker": {"color": colour},
                 "hovertemplate": f"score {name}: %{{y:.4g}}<extra></extra>"}
                for b, (name, colour) in enumerate(zip(PROXY_BUCKETS, PROXY_COLOURS))]
        return {"data": data, "layout": {
            "barmode": "stack", "bargap": 0, "legend": {"orientation": "h", "y": 1.15, "title": {"text": stat.name}},
            "xaxis": {"title": {"text": "activation (interval edges)"}, "tickvals": edges,
                      "ticktext": [format_number(e) for e in edges], "tickangle": -45},
            "yaxis": {"title": {"text": y_title}}}}

    return spec(stat.hist_counts, "firing tokens"), spec(stat.hist_acts, "activation × tokens (expected value)")


def logit_rows(tokens: Sequence[LogitToken]) -> Markup:
    """A logit table's rows, written here rather than by a Jinja loop (~4x faster; ingest renders ~16k pages)."""
    return Markup("".join(f'<tr><td class="tokcell" title="token {t.id}">{escape(t.shown)}</td>'
                          f'<td class="num">{escape(format_number(t.value))}</td></tr>' for t in tokens))


def proxy_rows(stats: Sequence[ProxyStat], best: ProxyStat | None) -> Markup:
    """The proxy table's rows, by corr > 0 (highest first; proxies without it left out), the best one marked."""
    shown = sorted((p for p in stats if p.corr_pos is not None), key=lambda p: p.corr_pos, reverse=True)
    n = lambda x: escape(format_number(x))  # noqa: E731
    selected = lambda p: ' class="selected"' if best and p.name == best.name else ""  # noqa: E731
    return Markup("".join(
        f'<tr{selected(p)}><td><code>{escape(p.name)}</code></td>\n<td class="num">{n(p.corr)}</td>'
        f'<td class="num">{n(p.corr_pos)}</td><td class="num">{n(p.fire_share)}</td>\n<td class="num">'
        f'{n(p.act_share)}</td><td class="num">{n(p.recall)}</td></tr>' for p in shown))


def interval_sections(intervals: Sequence[Interval], samples: Mapping[int, Markup]) -> Markup:
    """Each interval's heading (its range, and how many of the unit's firing tokens lie in it) over its samples
    (`samples[index]`, HTML), highest first."""
    n = lambda x: escape(format_number(x))  # noqa: E731
    return Markup("".join(
        f'\n<div class="interval">\n<h3>Interval {iv.index + 1}: activation {n(iv.low)} – {n(iv.high)} · '
        + (f"{n(iv.count)} firing tokens, {iv.contains_pct:.1f}% of all" if iv.count else "no firing tokens")
        + f'</h3>\n{samples.get(iv.index, "")}\n</div>\n' for iv in reversed(intervals)))


@lru_cache(maxsize=1)
def _macros():
    env = configure(Environment(loader=FileSystemLoader(str(_TEMPLATES))))
    env.globals.update(logit_rows=logit_rows, proxy_rows=proxy_rows, interval_sections=interval_sections)
    return env.get_template(TEMPLATE).module


def render_sections(data: UnitData, model_name: str, groups: Collection[int]) -> Sections:
    """Return the Sections of a unit's UnitData, with a marker (`fill_windows`) where each group of its windows goes:
    `groups` are those that have windows (0: the top windows; 1 + b: the samples of interval b). The windows
    themselves are rendered when the page is (app.present.window_batch.windows_html), from the example rows."""
    top = Markup(_marker(0)) if 0 in groups else Markup("")  # an empty top shows the template's note instead
    samples = {g - 1: Markup(_marker(g)) for g in sorted(groups) if g > 0}
    m = _macros()
    plots = (interval_plot(data.intervals),
             step_plot(data.act_hist.edges, data.act_hist.counts, x_title="activation (log scale)", log_x=True,
                       y_title="firing tokens"),
             step_plot(data.logit_hist.edges, data.logit_hist.counts, x_title="logit weight", log_x=False,
                       y_title="output tokens"))
    best = best_proxy(data.proxies)
    proxy = (best, *proxy_plots(best, data.intervals)) if best is not None and data.intervals else (best, None, None)
    return Sections(
        m.stats(data, model_name),
        m.body(*plots, data.top_logits, data.bottom_logits, data.firing_count) + m.proxies(data.proxies, *proxy),
        m.examples(data.max_activation, data.max_abs_effect, top, data.intervals, samples, data.firing_count))


def _marker(group: int) -> str:
    return f"<!--windows {group}-->"  # escaped data never holds "<"


def fill_windows(examples: bytes, made: Mapping[int, bytes]) -> bytes:
    """Return the examples section with each group's marker replaced by its windows' HTML (`made[group]`)."""
    parts = _WINDOWS_MARKER.split(examples)  # text, marker's group, text, ...
    parts[1::2] = [made.get(int(g), b"") for g in parts[1::2]]
    return b"".join(parts)


def fill_windows_json(data_json: bytes, made: Mapping[int, bytes]) -> bytes:
    """Return a UnitData's JSON stored without windows with each group's `Example`s (`made[group]`, comma-joined)
    put in: the top windows' list, and the k-th interval's samples (intervals are listed by index from 0)."""
    head, *rest = data_json.split(_SAMPLES)
    if head.count(_TOP) != 1 or any(g > len(rest) for g in made):
        raise ValueError("a unit's stored UnitData JSON has an unexpected shape")
    parts = [head.replace(_TOP, b'"top_examples":[' + made.get(0, b"") + b"]")]
    for k, after in enumerate(rest):
        parts += [b'"samples":[', made.get(1 + k, b""), b"]", after]
    return b"".join(parts)


_TOP, _SAMPLES = b'"top_examples":[]', b'"samples":[]'  # where a UnitData without windows gets them


def without_windows(data: UnitData) -> UnitData:
    """The UnitData as stored: its windows left out (`fill_windows_json` puts them back)."""
    return data.model_copy(update={"top_examples": [], "intervals": [iv.model_copy(update={"samples": []})
                                                                     for iv in data.intervals]})


def pack(data: UnitData, model_name: str, groups: Collection[int]) -> bytes:
    """Return the stored form of a unit without its windows (`without_windows`): zstd of a header line (FORMAT,
    TEMPLATES_HASH, the parts' lengths), the UnitData's JSON and the Sections rendered from it."""
    return pack_parts(data.model_dump_json().encode(), render_sections(data, model_name, groups))


def pack_parts(data_json: bytes, sections: Sequence[str | bytes]) -> bytes:
    """Return the stored form of a unit from its UnitData's JSON and its Sections, str or UTF-8 (`pack`)."""
    parts = [data_json, *(part if isinstance(part, bytes) else part.encode() for part in sections)]
    header = f"{FORMAT} {TEMPLATES_HASH} {' '.join(str(len(p)) for p in parts)}\n".encode()
    return zstd_codecs()[0].compress(b"".join([header, *parts]))


def unpack(blob: bytes | None) -> Stored:
    """Return what `pack` stored (parts of another FORMAT, damaged or absent are None; sections rendered by other
    templates are None)."""
    try:
        raw = zstd_codecs()[1].decompress(blob) if blob else b""
        head, _, rest = raw.partition(b"\n")
        fmt, templates, *lengths = head.decode().split(" ")
        if int(fmt) != FORMAT or len(lengths) != 4:
            return Stored(None, None)
    except (zstandard.ZstdError, ValueError, UnicodeDecodeError):
        return Stored(None, None)
    parts, start = [], 0
    for n in map(int, lengths):
        parts.append(rest[start:start + n])
        start += n
    if start != len(rest):
        return Stored(None, None)
    return Stored(parts[0], tuple(parts[1:]) if templates == TEMPLATES_HASH else None)


PLACEHOLDERS = Sections(*[Markup(SEPARATOR)] * 3)  # where a page template puts its sections, in order


def splice(page: bytes, sections: Sequence[bytes]) -> bytes:
    """Return `page` (rendered with PLACEHOLDERS as its sections) with each placeholder replaced by its section,
    without decoding ~100 kB of stored HTML or encoding it again."""
    parts = page.split(_SEPARATOR_BYTES)
    if len(parts) != len(sections) + 1:
        raise ValueError(f"the page has {len(parts) - 1} section placeholders, not {len(sections)}")
    out = [parts[0]]
    for section, part in zip(sections, parts[1:]):
        out += (section, part)
    return b"".join(out)
