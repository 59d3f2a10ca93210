"""What every Jinja environment of Monoscope shares (autoescaping, `format_number`, the `visible` filter), and
`token_codes`, the unit list's token chips. Used by the web app's environment (app/web/render.py) and by the one
ingest renders unit page sections with (app/present/unit_sections.py), so a section rendered at ingest and one
rendered live are the same bytes."""

from __future__ import annotations

import json
from functools import lru_cache

from jinja2 import Environment
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup, escape
from pydantic_core import PydanticSerializationError, to_json

from app.read.windows import visible_token


def format_number(x, digits: int = 3) -> str:
    """Return a number as pages show it: "–" for None, an integer with thousands separators, anything else to
    `digits` significant digits. The `fmt` of templates/_macros.html; pages that show many numbers call it directly,
    since a Jinja macro call costs ~30 µs (the unit page has ~70, a unit list page ~250)."""
    if x is None:
        return "–"
    if isinstance(x, int) and not isinstance(x, bool):  # Jinja's `integer` test
        return f"{x:,}"
    return f"%.{digits}g" % x


def token_codes(tokens) -> Markup:
    """Return token strings as `<code>` chips (whitespace visible, escaped), each followed by a space
    (app.web.render.unit_row); memoised: a unit list page shows up to 500 rows of up to 8, the same rows again and
    again."""
    return _token_codes(tuple(tokens))


@lru_cache(maxsize=1 << 14)
def _token_codes(tokens: tuple[str, ...]) -> Markup:
    return Markup("".join(f"<code>{escape(visible_token(t))}</code> " for t in tokens))


def json_text(value, **_) -> str:
    """`|tojson`'s serializer: pydantic-core's JSON (NaN and infinities as null, which JSON.parse reads, where
    json.dumps writes NaN), ~5x faster than json.dumps with sorted keys on plot specs (a unit page has five); Jinja
    then escapes <, >, & and ' in it as before. json.dumps for what pydantic-core cannot write."""
    try:
        return to_json(value, inf_nan_mode="null").decode()
    except PydanticSerializationError:
        return json.dumps(value)


def plot_figure(spec: dict) -> Markup:
    """A plotly spec as the page's figure: its JSON (html-safe, as `|tojson` writes it) in a script element that
    static/plots.js draws. The `plot` macro of templates/_macros.html; a Python call here costs a fifth of a macro's,
    and a unit page has five."""
    return Markup('<figure class="plot"><script type="application/json" class="plot-spec">'
                  f'{htmlsafe_json_dumps(spec, dumps=json_text)}</script><div class="plot-area"></div></figure>')


def configure(env: Environment) -> Environment:
    """Set up `env` as every Monoscope template expects, and return it."""
    env.autoescape = True  # for every template, whatever its extension
    env.auto_reload = False  # templates ship with the package: no stat of the file on every render
    env.globals["format_number"] = format_number
    env.globals["plot_figure"] = plot_figure
    env.filters["visible"] = visible_token
    env.policies["json.dumps_function"] = json_text
    env.policies["json.dumps_kwargs"] = {}
    return env
