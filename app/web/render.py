"""Template rendering: a full page, or one `{% block %}` of it when htmx asks (HX-Request), via jinja2-fragments."""

from __future__ import annotations

import html
from functools import lru_cache
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2_fragments.fastapi import Jinja2Blocks
from markupsafe import Markup

from app.resources import resource
from app.web.schemas import visible_whitespace

TEMPLATES = resource("templates")
templates = Jinja2Blocks(directory=str(TEMPLATES))  # Starlette turns autoescape on for .html templates
templates.env.autoescape = True  # and we want it for every template, whatever its extension


@lru_cache(maxsize=1 << 16)
def _escape(text: str) -> str:
    """html.escape, memoised: a vocabulary has a few thousand distinct token strings."""
    return html.escape(text, quote=True)


def context_html(example, scale: float, effect_scale: float | None = None) -> Markup:
    """Return one context window as coloured token spans (the unit page's hot loop: ~2,500 spans per page, so built
    here rather than in a Jinja loop). Every token text is escaped (html.escape, quotes included).

    --a is the activation / scale; with effect_scale, a token where the unit fires also gets --e (|ablation effect| /
    effect_scale) and data-e ("-": ablating the unit lowers the next token's log-probability, "+": raises it), which
    the page's "colour by ablation effect" switch shows instead of --a.
    """
    value = example.value
    parts = [f'<div class="ctx"><span class="val">{value:.3g}</span>']
    inverse = 1.0 / scale if scale > 0 else 0.0
    effects = example.effects if effect_scale else None
    effect_inverse = 1.0 / effect_scale if effect_scale else 0.0
    for position, (shown, act) in enumerate(zip(example.shown, example.acts)):
        cls = "tok max" if position == example.max_position else "tok"
        effect = effects[position] if effects else None
        if effect:  # neither None (no next token) nor 0 (silent)
            a, e = min(max(act, 0.0) * inverse, 1.0), min(abs(effect) * effect_inverse, 1.0)
            attrs = (f' style="--a:{a:.2f};--e:{e:.2f}" data-e="{"-" if effect < 0 else "+"}"'
                     f' title="{act:.4g} · Δ log p(next) {effect:+.3g}"')
        else:
            attrs = (f' style="--a:{min(act * inverse, 1.0):.2f}"' if act > 0 else "") + f' title="{act:.4g}"'
        parts.append(f'<span class="{cls}"{attrs}>{_escape(shown)}</span>')
    parts.append("</div>")
    return Markup("".join(parts))


templates.env.globals["context_html"] = context_html
# a lone token string with its whitespace visible (·, →, ↵): returns plain text, still autoescaped on output
templates.env.filters["visible"] = lambda text: visible_whitespace([text], at_line_start=True)[0].replace("\n", "")


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
