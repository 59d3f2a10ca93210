"""Template rendering: a full page, or one `{% block %}` of it when htmx asks (HX-Request), via jinja2-fragments."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2_fragments.fastapi import Jinja2Blocks
from markupsafe import Markup, escape

from app.present.templating import configure, format_number, token_codes
from app.present.windows import window_html
from app.resources import resource

TEMPLATES = resource("templates")
templates = Jinja2Blocks(directory=str(TEMPLATES))
configure(templates.env)  # autoescape everywhere, format_number, |visible (app/templating.py)


def context_html(example, scale: float, effect_scale: float | None = None) -> Markup:
    """Return one context window (an Example) as coloured, escaped token spans, coloured on `scale` (and
    `effect_scale`): app.present.windows.window_html, the renderer of the unit page's windows too."""
    return Markup(window_html(example.value, example.shown, example.acts, getattr(example, "effects", None),
                              example.max_position, scale, effect_scale))


def unit_row(u) -> Markup:
    """Return one row of the unit list's table (templates/basis.html) for a UnitRow, escaped: written here rather
    than in the template, where its ~10 expressions cost ~25 µs a row and a page shows up to 500 rows."""
    label = escape(u.label or "") if u.label or not u.explanation else \
        Markup('<span class="auto" title="explanation by a language model">') + escape(u.explanation) + \
        Markup("</span>")
    return Markup(f'<tr><td class="num"><a href="{escape(u.url)}">{u.index}</a></td><td>{label}</td>'
                  f'<td class="num">{format_number(u.density)}</td>\n'
                  f'<td class="num">{format_number(u.max_activation)}</td>'
                  f'<td class="num">{format_number(u.mean_activation)}</td>'
                  f'<td class="num">{format_number(u.top_token_entropy)}</td>\n'
                  f'<td class="topk">{token_codes(u.top_tokens[:8])}</td></tr>')


templates.env.globals["context_html"] = context_html
templates.env.globals["unit_row"] = unit_row


def is_fragment_request(request: Request) -> bool:
    """True for an htmx request that swaps part of a page (not a history restore, which needs the whole page)."""
    return request.headers.get("HX-Request") == "true" and request.headers.get("HX-History-Restore-Request") != "true"


def render(request: Request, name: str, context: dict[str, Any], *, block: str | None = None,
           api_url: str | None = None, status_code: int = 200) -> HTMLResponse:
    """Return the page `name`, or only its `block` for an htmx request; `api_url` links the page's JSON twin."""
    context = {"api_url": api_url, "plots": False, **context}
    fragment = block if block and is_fragment_request(request) else None
    response = templates.TemplateResponse(request, name, context, status_code=status_code, block_name=fragment)
    response.headers["Vary"] = "HX-Request"
    return response


def twin_url(request: Request) -> str:
    """Return the JSON twin of the current page: the same path and query under /api/v1."""
    path = "/api/v1/overview" if request.url.path == "/" else "/api/v1" + request.url.path
    return path + (f"?{request.url.query}" if request.url.query else "")
