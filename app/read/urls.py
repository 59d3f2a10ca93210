"""Paths of the pages, built in one place. `model_param` is the model name when links must carry `?model=`
(several models ingested), else None."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from app.read.unit_list_schemas import UnitListParams


def basis_url(basis: str, model_param: str | None) -> str:
    return f"/bases/{quote(basis, safe='')}" + (f"?{urlencode({'model': model_param})}" if model_param else "")


def unit_url(basis: str, index: int, model_param: str | None) -> str:
    return (f"/bases/{quote(basis, safe='')}/units/{index}"
            + (f"?{urlencode({'model': model_param})}" if model_param else ""))


def labels_url(basis: str, index: int, model_param: str | None) -> str:
    """The unit's label panel (its history and form); the page's twin is under /api/v1."""
    return (f"/bases/{quote(basis, safe='')}/units/{index}/labels"
            + (f"?{urlencode({'model': model_param})}" if model_param else ""))


def compare_url(sae_basis: str, neuron: int, model_param: str | None) -> str:
    query = {"basis": sae_basis, "neuron": neuron, **({"model": model_param} if model_param else {})}
    return f"/compare?{urlencode(query)}"


def with_query(url: str, params: UnitListParams) -> str:
    """Return `url` (which may carry ?model=) with the list parameters that differ from their defaults."""
    defaults = UnitListParams()
    changed = {k: v for k, v in params.model_dump().items() if v != getattr(defaults, k)}
    changed = {k: ("true" if v is True else "false" if v is False else v) for k, v in changed.items()}
    if not changed:
        return url
    return url + ("&" if "?" in url else "?") + urlencode(changed)
