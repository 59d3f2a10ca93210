"""The proxy pages' reads: units ranked against a specificity proxy (their rows' `proxy_stats`), and a unit's stacked
histograms for one proxy (its stored UnitData)."""

from __future__ import annotations

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.read.proxy_schemas import ProxyInfo, ProxyRanking, RankedBasis, RankedUnit, UnitProxyPlots, best_proxy
from app.read.queries.bases import NotFound, model_bases, resolve
from app.read.queries.labels import labels_for
from app.read.queries.unit import view
from app.read.schemas import UnitData
from app.read.unit_data import stat_values
from app.read.urls import unit_url
from app.store.models import Model, Unit
from app.store.proxy_columns import STATS, proxy_names, stats_array
from sae.conventions import NEURON_BASIS


def proxy_ranking(*, session: Session, basis: str | None, proxy: str | None, model: str | None,
                  limit: int = 20) -> ProxyRanking:
    """Return the `limit` units of the neuron basis and of SAE `basis` (default: the model's first SAE) most
    correlated with `proxy` (default: the first the analysis computed), with every unit's correlation."""
    neurons, m, model_param = resolve(session, NEURON_BASIS, model)
    saes = sorted(b.name for b in model_bases(session, session.get(Model, m.id)) if b.kind == "sae")
    if basis is not None and basis not in saes:
        raise NotFound(f"no SAE basis {basis!r} in model {m.name!r} (have: {', '.join(saes) or 'none'})")
    chosen = [neurons] + ([resolve(session, basis or saes[0], m.name)[0]] if saes else [])
    infos = [ProxyInfo(**p) for p in chosen[-1].config.get("proxies", [])]
    if proxy is not None and proxy not in {p.name for p in infos}:
        raise NotFound(f"no proxy {proxy!r} in this analysis (have: {', '.join(p.name for p in infos) or 'none'})")
    info = next((p for p in infos if p.name == proxy), infos[0] if infos else None)
    ranked = [] if info is None else [_ranked(session, b, info.name, model_param, limit) for b in chosen]
    return ProxyRanking(model=m.name, proxies=infos, proxy=info, sae_bases=saes, bases=ranked,
                        verdict=_verdict(ranked) if len(ranked) == 2 else None)


def _ranked(session: Session, b, proxy: str, model_param: str | None, limit: int) -> RankedBasis:
    """A basis's units by corr > 0 against `proxy` (highest first; undefined last; then by index): the first `limit`
    with their statistics, every defined correlation (rounded) for the distribution."""
    names = proxy_names(b.config)
    stored = session.execute(select(Unit.index, Unit.proxy_stats).where(
        Unit.basis_id == b.id, Unit.proxy_stats.is_not(None))).all() if proxy in names else []
    stats = stats_array([r.proxy_stats for r in stored])[:, names.index(proxy)] if stored else np.zeros((0, len(STATS)))
    indexes = np.array([r.index for r in stored], np.int64)
    corr_pos = stats[:, list(STATS).index("corr_pos")].astype(np.float64)
    undefined = np.isnan(corr_pos)
    order = np.lexsort((indexes, -np.where(undefined, 0.0, corr_pos), undefined))
    top = order[:limit]
    values = stat_values(stats[top])
    labels = labels_for(session=session, basis_id=b.id, indexes=indexes[top].tolist())
    units = [RankedUnit(basis=b.name, index=index, label=labels.get(index), url=unit_url(b.name, index, model_param),
                        **{c: values[c][i] for c in STATS}) for i, index in enumerate(indexes[top].tolist())]
    return RankedBasis(name=b.name, kind=b.kind, n_units=b.n_units, units=units,
                       correlations=[round(c, 4) for c in corr_pos[order][~undefined[order]].tolist()])


def _verdict(ranked: list[RankedBasis]) -> str | None:
    """Return how the best feature compares with the best neuron, in one sentence."""
    neuron, feature = (r.units[0] if r.units and r.units[0].corr_pos is not None else None for r in ranked)
    if neuron is None or feature is None:
        return None
    if feature.corr_pos > neuron.corr_pos:
        return (f"Feature #{feature.index} of {feature.basis} (corr > 0 {feature.corr_pos:.3f}) detects it better "
                f"than every neuron (best: #{neuron.index}, {neuron.corr_pos:.3f}).")
    why = ""
    if None not in (feature.fire_share, neuron.fire_share, feature.recall, neuron.recall) and \
            feature.fire_share > neuron.fire_share and feature.recall < neuron.recall:
        why = (f" The feature is the more specific ({feature.fire_share:.0%} of its firing tokens have the property, "
               f"the neuron's {neuron.fire_share:.0%}) but fires on fewer of them ({feature.recall:.0%} against "
               f"{neuron.recall:.0%}): the dictionary splits the property among several features, and a correlation "
               f"rewards the broad detector.")
    return (f"No feature of {feature.basis} beats the best neuron: #{neuron.index} at {neuron.corr_pos:.3f} against "
            f"feature #{feature.index} at {feature.corr_pos:.3f}.{why}")


def unit_proxy_plots(*, session: Session, basis: str, index: int, proxy: str | None,
                     model: str | None) -> UnitProxyPlots:
    """Return unit `index`'s statistics and stacked histograms for `proxy` (default: its best-correlated one)."""
    b, m, model_param = resolve(session, basis, model)
    data = UnitData.model_validate_json(view(session, b, m, index, model_param).data_json)
    names = [p.name for p in data.proxies]
    if proxy is not None and proxy not in names:
        raise NotFound(f"no proxy {proxy!r} for this unit (have: {', '.join(names) or 'none'})")
    stat = next((p for p in data.proxies if p.name == proxy), None) if proxy else best_proxy(data.proxies)
    edges = [iv.low for iv in data.intervals] + ([data.intervals[-1].high] if data.intervals else [])
    return UnitProxyPlots(basis=b.name, index=index, unit_url=unit_url(b.name, index, model_param), proxies=names,
                          stat=stat, interval_edges=edges)
