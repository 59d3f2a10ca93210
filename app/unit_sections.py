"""A unit page's ingest-only sections, rendered once: its statistics, its plots and logit tables, and its example
windows. They change only when the basis is ingested again, so ingest renders them (templates/unit_sections.html)
and stores them packed in `unit.sections`; a unit page's first view then renders only what changes without an
ingest (labels, links, the family) around them. A stored copy made by other code (another VERSION) is ignored and
the sections are rendered live, from the same function. Plain values in, HTML out: no database, no web framework.
"""

from __future__ import annotations

import hashlib
import threading
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, Sequence

import jinja2
import markupsafe
import zstandard
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from app.resources import resource
from app.templating import configure, visible_token
from app.windows import render_unit_windows

HOT = "rgb(235,110,20)"
TEMPLATE = "unit_sections.html"
_TEMPLATES = resource("templates")
# Changes whenever the code, the templates or the libraries that render the sections do (a stored copy is then
# stale, and pages render their sections live until the basis is ingested again).
VERSION = hashlib.sha256(b"".join(p.read_bytes() for p in (
    _TEMPLATES / TEMPLATE, _TEMPLATES / "_macros.html", Path(__file__), Path(__file__).with_name("windows.py"),
    Path(__file__).with_name("templating.py"))) + f"{jinja2.__version__} {markupsafe.__version__}".encode()
).hexdigest()[:16]
SEPARATOR = "<!--section-->"  # escaped data never holds "<" (and so never this)
_SEPARATOR_BYTES = SEPARATOR.encode()
_CODECS = threading.local()  # zstd contexts are not thread-safe: one pair per thread (pages render in a thread pool)


def _codecs() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    """Return this thread's zstd contexts: level 3, as small as zlib's level 6 here (~7 kB a page), packing 6x and
    unpacking 4x faster (0.02 ms a page)."""
    codecs = getattr(_CODECS, "pair", None)
    if codecs is None:
        codecs = _CODECS.pair = (zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor())
    return codecs


class Sections(NamedTuple):
    """The page's ingest-only HTML, in page order: statistics; plots, logit tables and their note; example windows."""

    stats: Markup
    body: Markup
    examples: Markup


class IntervalRow(NamedTuple):
    """One activation interval of a unit, as its page and its JSON twin show it."""

    index: int
    low: float
    high: float
    count: int
    contains_pct: float


class LogitRow(NamedTuple):
    """One output token of a logit table: its id, text, text with whitespace visible, and weight."""

    id: int
    text: str
    shown: str
    value: float


def context_before(basis_config: dict | None) -> int:
    """Return how many tokens precede the max token in a basis's windows (its analysis's setting)."""
    return int((basis_config or {}).get("context_before", 24))


def interval_rows(edges: Sequence[float], counts: Sequence[int], firing_count: int,
                  sampled: set[int]) -> list[IntervalRow]:
    """Return the intervals a unit's page shows: those with firing tokens or with samples."""
    firing = max(int(firing_count), 1)
    return [IntervalRow(i, float(edges[i]), float(edges[i + 1]), int(c), 100.0 * int(c) / firing)
            for i, c in enumerate(counts) if i + 1 < len(edges) and (c or i in sampled)]


def logit_rows(pairs: Sequence[Sequence], strings: Sequence[str]) -> list[LogitRow]:
    """Attach token strings to stored [token_id, weight] pairs."""
    rows = []
    for i, v in pairs:
        text = strings[i] if 0 <= i < len(strings) else ""
        rows.append(LogitRow(int(i), text, visible_token(text), float(v)))
    return rows


def step_plot(edges: Sequence[float], counts: Sequence[int], *, x_title: str, log_x: bool) -> dict:
    """A plotly filled step histogram (works on a log x axis, where bars of varying width do not)."""
    log_x = log_x and bool(edges) and min(edges) > 0
    y = list(counts) + ([counts[-1]] if counts else [])
    return {"data": [{"type": "scatter", "mode": "lines", "x": list(edges), "y": y,
                      "line": {"shape": "hv", "color": HOT}, "fill": "tozeroy",
                      "hovertemplate": "%{x:.3g}: %{y}<extra></extra>"}],
            "layout": {"xaxis": {"title": {"text": x_title}, "type": "log" if log_x else "linear"},
                       "yaxis": {"title": {"text": "count"}}}}


@lru_cache(maxsize=1)
def _macros():
    return configure(Environment(loader=FileSystemLoader(str(_TEMPLATES)))).get_template(TEMPLATE).module


def render_sections(unit, model_name: str, strings: Sequence[str], windows: Sequence[tuple],
                    context_before: int) -> Sections:
    """Return a unit's Sections. `unit` has the `unit` table's columns as attributes (a row being ingested, or the
    stored one); `windows` are its example rows (kind, bucket, value, token ids, activations, effects) in page order:
    top windows by rank, then samples by interval and rank. The windows' effect colour scale is their largest
    |effect|."""
    effect_scale, html = render_unit_windows([w[2:] for w in windows], strings, context_before,
                                             float(unit.max_activation))
    top: list[str] = []
    samples: dict[int, list[str]] = {}
    for (kind, bucket, *_), window in zip(windows, html):
        (top if kind == "top" else samples.setdefault(int(bucket), [])).append(window)
    m = _macros()
    intervals = interval_rows(unit.interval_edges, unit.interval_counts, unit.firing_count, set(samples))
    plots = (step_plot(unit.act_hist["edges"], unit.act_hist["counts"], x_title="activation", log_x=True),
             step_plot(unit.logit_hist["edges"], unit.logit_hist["counts"], x_title="logit weight", log_x=False))
    return Sections(
        m.stats(unit, model_name),
        m.body(*plots, logit_rows(unit.top_logits, strings), logit_rows(unit.bottom_logits, strings)),
        m.examples(unit.max_activation, effect_scale, Markup("".join(top)), intervals,
                   {i: Markup("".join(w)) for i, w in samples.items()}))


def pack(sections: Sections) -> bytes:
    """Return the stored form of a unit's Sections: zstd of their UTF-8 with VERSION (a page's ~70-110 kB of markup
    in ~7 kB; one blob per unit compresses ~3x better than one per window)."""
    return _codecs()[0].compress(SEPARATOR.join((VERSION, *sections)).encode())


def unpack(blob: bytes | None) -> tuple[bytes, bytes, bytes] | None:
    """Return the sections `pack` stored as UTF-8 HTML (a page splices them in as they are: `splice`), or None when
    there are none, they are damaged, or another version of the code made them."""
    if blob is None:
        return None
    try:
        parts = _codecs()[1].decompress(blob).split(_SEPARATOR_BYTES)
    except zstandard.ZstdError:
        return None
    if len(parts) != 4 or parts[0] != VERSION.encode():
        return None
    return parts[1], parts[2], parts[3]


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
