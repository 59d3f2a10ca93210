"""The view models of the proxy pages: a basis's units ranked against a proxy, neurons beside features (/proxies),
and one unit's stacked histograms for a chosen proxy (/bases/{basis}/units/{index}/proxy)."""

from __future__ import annotations

from pydantic import Field

from app.read.schemas import ProxyStat, Schema


class ProxyInfo(Schema):
    name: str
    kind: str
    description: str


class RankedUnit(Schema):
    basis: str
    index: int
    label: str | None
    url: str
    corr: float | None
    corr_pos: float | None
    fire_share: float | None
    act_share: float | None
    recall: float | None


class RankedBasis(Schema):
    """One basis's units against the proxy, by correlation with the thresholded score (best first)."""

    name: str
    kind: str
    n_units: int
    units: list[RankedUnit]
    correlations: list[float] = Field(description="corr > 0 of every unit with one (for the distribution plot)")


class ProxyRanking(Schema):
    """Which units detect the property? Every unit of an SAE basis and of the neurons, ranked by corr > 0 (the
    Pearson correlation of activation with the proxy score thresholded at 0, the paper's comparison)."""

    model: str
    proxies: list[ProxyInfo]
    proxy: ProxyInfo | None
    sae_bases: list[str]
    bases: list[RankedBasis]
    verdict: str | None = Field(description="How the best feature compares with the best neuron")


class UnitProxyPlots(Schema):
    """One unit's statistics and stacked histograms against a chosen proxy."""

    basis: str
    index: int
    unit_url: str
    proxies: list[str]
    stat: ProxyStat | None
    interval_edges: list[float]


def best_proxy(proxies: list[ProxyStat]) -> ProxyStat | None:
    """Return the proxy a unit's activation correlates with most (thresholded at 0), or None."""
    scored = [p for p in proxies if p.corr_pos is not None]
    return max(scored, key=lambda p: p.corr_pos) if scored else None
