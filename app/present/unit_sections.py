"""A unit page's ingest-only sections, rendered once from the unit's UnitData: its statistics, its plots and logit
tables, and its example windows. They change only when the basis is ingested again, so ingest renders them
(templates/unit_sections.html) and stores them, with the UnitData's JSON they were rendered from, packed in
`unit.sections`; a unit page's first view then renders only what changes without an ingest (labels, links, the family)
around them, and its JSON twin splices the stored JSON the same way (app.read.queries.unit). A stored copy of another
FORMAT, or rendered by other templates, is ignored and made again live, from the same functions.
"""

from __future__ import annotations

import hashlib
import re
import threading
from functools import lru_cache
from typing import Mapping, NamedTuple, Sequence

import zstandard
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from app.present.templating import configure, format_number
from app.present.windows import window_html
from app.read.proxy_schemas import best_proxy
from app.read.schemas import Example, Interval, ProxyStat, UnitData
from app.resources import resource
from sae.analysis.proxy_scores import BUCKETS as PROXY_BUCKETS

HOT = "rgb(235,110,20)"
TEMPLATE = "unit_sections.html"
_TEMPLATES = resource("templates")
# The stored form's version: bump FORMAT when UnitData's fields or the packing below change. The sections are current
# while the templates that render them are unchanged (their hash); code that only moves them around does not count.
FORMAT = 4
TEMPLATES_HASH = hashlib.sha256(b"".join((_TEMPLATES / name).read_bytes()
                                         for name in (TEMPLATE, "_macros.html"))).hexdigest()[:16]
_WINDOWS_MARKER = re.compile(rb"<!--windows (-?\d+)-->")  # render_sections's: where made windows go
SEPARATOR = "<!--section-->"  # a section placeholder in a rendered page; escaped data never holds "<"
_SEPARATOR_BYTES = SEPARATOR.encode()
_CODECS = threading.local()  # zstd contexts are not thread-safe: one pair per thread (pages render in a thread pool)


def _codecs() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    """Return this thread's zstd contexts: level 1, within 3% of level 3's size (and of zlib's level 6) on unit
    pages, packing 1.4x faster than level 3 (ingest packs ~270 kB a unit), unpacking as fast."""
    codecs = getattr(_CODECS, "pair", None)
    if codecs is None:
        codecs = _CODECS.pair = (zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor())
    return codecs


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


@lru_cache(maxsize=1)
def _macros():
    return configure(Environment(loader=FileSystemLoader(str(_TEMPLATES)))).get_template(TEMPLATE).module


def render_sections(data: UnitData, model_name: str,
                    windows_html: tuple[bytes, Mapping[int, bytes]] | None = None) -> Sections | tuple[bytes, ...]:
    """Return the Sections of a unit's UnitData. Windows are coloured on the unit's max activation and, in the effect
    view, on its largest |effect|. With `windows_html`, the windows' UTF-8 HTML made already (ingest makes it with
    app/present/window_batch.py: the top windows', and per interval index with samples), return the Sections encoded,
    those put in."""
    scale, effect_scale = data.max_activation, data.max_abs_effect or None

    def windows(examples: Sequence[Example]) -> Markup:
        return Markup("".join(window_html(e.value, e.shown, e.acts, e.effects, e.max_position, scale, effect_scale)
                              for e in examples))

    if windows_html is None:
        top = windows(data.top_examples)
        samples = {iv.index: windows(iv.samples) for iv in data.intervals if iv.samples}
    else:  # a marker where each goes (escaped data never holds "<"); an empty top shows the template's note instead
        top = Markup("<!--windows -1-->") if windows_html[0] else Markup("")
        samples = {i: Markup(f"<!--windows {i}-->") for i in windows_html[1]}
    m = _macros()
    plots = (interval_plot(data.intervals),
             step_plot(data.act_hist.edges, data.act_hist.counts, x_title="activation (log scale)", log_x=True,
                       y_title="firing tokens"),
             step_plot(data.logit_hist.edges, data.logit_hist.counts, x_title="logit weight", log_x=False,
                       y_title="output tokens"))
    best = best_proxy(data.proxies)
    proxy = (best, *proxy_plots(best, data.intervals)) if best is not None and data.intervals else (best, None, None)
    sections = Sections(
        m.stats(data, model_name),
        m.body(*plots, data.top_logits, data.bottom_logits, data.firing_count) + m.proxies(data.proxies, *proxy),
        m.examples(data.max_activation, data.max_abs_effect, top, data.intervals, samples, data.firing_count))
    if windows_html is None:
        return sections
    parts = _WINDOWS_MARKER.split(sections.examples.encode())  # text, marker's index, text, ...
    made = {-1: windows_html[0], **windows_html[1]}
    parts[1::2] = [made[int(i)] for i in parts[1::2]]
    return sections.stats.encode(), sections.body.encode(), b"".join(parts)


def pack(data: UnitData, model_name: str) -> bytes:
    """Return the stored form of a unit: zstd of a header line (FORMAT, TEMPLATES_HASH, the parts' lengths), the
    UnitData's JSON and the Sections rendered from it (~7 kB of HTML and ~20 kB of JSON a unit)."""
    return pack_parts(data.model_dump_json().encode(), render_sections(data, model_name))


def pack_parts(data_json: bytes, sections: Sequence[str | bytes]) -> bytes:
    """Return the stored form of a unit from its UnitData's JSON and its Sections, str or UTF-8 (`pack`)."""
    parts = [data_json, *(part if isinstance(part, bytes) else part.encode() for part in sections)]
    header = f"{FORMAT} {TEMPLATES_HASH} {' '.join(str(len(p)) for p in parts)}\n".encode()
    return _codecs()[0].compress(b"".join([header, *parts]))


def unpack(blob: bytes | None) -> Stored:
    """Return what `pack` stored (parts of another FORMAT, damaged or absent are None; sections rendered by other
    templates are None)."""
    try:
        raw = _codecs()[1].decompress(blob) if blob else b""
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
