"""A unit's UnitData from its rows: the unit's statistics and its example windows (no SQL, no rendering).

Ingest builds it once per unit from the rows it is about to insert (app/store/example_rows.py), and the read model
builds it the same way from the stored rows when a stored copy is stale (app/read/queries/unit.py), so there is one
definition of what a unit's page and twin show. Windows are decoded by app.present.windows.decode_window, the decoder
the export uses too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from app.read.schemas import Example, Histogram, Interval, LogitToken, ProxyStat, UnitData
from app.read.windows import decode_window, max_abs_effect, visible_token
from app.store.models import OPEN_KINDS, TOP_TOKENS_SEPARATOR
from app.store.proxy_columns import STATS, stats_of
from sae.analysis.config import AnalysisConfig

if TYPE_CHECKING:
    from app.store.example_rows import WindowRow


def split_top_tokens(text: str | None) -> list[str]:
    """Return the distinct max-token strings of a unit (joined by TOP_TOKENS_SEPARATOR in app/store/ingest.py)."""
    return text.split(TOP_TOKENS_SEPARATOR) if text else []


def analysis_setting(basis_config: dict | None, name: str) -> int:
    """Return a basis's analysis setting `name` (basis.json), or AnalysisConfig's default for an analysis made before
    the setting was recorded."""
    return int((basis_config or {}).get(name, getattr(AnalysisConfig, name)))


def context_before(basis_config: dict | None) -> int:
    """Return how many tokens precede the max token in a basis's windows."""
    return analysis_setting(basis_config, "context_before")


def logit_tokens(pairs: Sequence[Sequence], strings: Sequence[str]) -> list[LogitToken]:
    """Attach token strings to stored [token_id, weight] pairs."""
    tokens = []
    for i, v in pairs:
        text = strings[i] if 0 <= i < len(strings) else ""
        tokens.append(LogitToken.model_construct(id=int(i), text=text, shown=visible_token(text), value=float(v)))
    return tokens


def example(value: float, token_ids: bytes, activations: bytes, effects: bytes | None, strings: Sequence[str],
            context_before: int) -> Example:
    """Return one stored window (int32 ids, float32 activations and effects) as an Example."""
    w = decode_window(token_ids, activations, effects, strings, context_before)
    # model_construct: these rows come from our own analysis, and validating ~2,500 tokens per unit costs ms
    return Example.model_construct(value=float(value), max_position=w.max_position, token_ids=w.ids, texts=w.texts,
                                   shown=w.shown, acts=w.acts, effects=w.effects)


# UnitData's fields that unit_data builds from the unit's table columns and windows; any other field is a statistic
# the analysis writes under the field's own name in units.npz (`analysis_fields`).
BUILT = frozenset({"firing_count", "density", "max_activation", "mean_activation", "top_token_entropy", "act_hist",
                   "logit_hist", "top_logits", "bottom_logits", "top_examples", "intervals", "max_abs_effect",
                   "proxies"})


def analysis_fields(arrays: Mapping[str, np.ndarray], u: int) -> dict:
    """Return unit u's values of the UnitData fields that are not BUILT, from the units.npz arrays of the same names
    (absent arrays are left out: the field's default). A new per-unit statistic is its array in the analysis, its
    field in UnitData and its place in templates/unit_sections.html: nothing here or in ingest changes."""
    return analysis_fields_of(arrays, u, u + 1)[0]


def analysis_fields_of(arrays: Mapping[str, np.ndarray], start: int, stop: int) -> list[dict]:
    """Return analysis_fields of units [start, stop), reading each array once."""
    names = [f for f in UnitData.model_fields if f not in BUILT and f in arrays]
    values = {f: arrays[f][start:stop].tolist() for f in names}
    out = [{f: values[f][i] for f in names} for i in range(stop - start)]
    if "proxy_names" in arrays:
        for fields, proxies in zip(out, proxy_stats_of(arrays, start, stop)):
            fields["proxies"] = proxies
    return out


def proxy_stats(arrays: Mapping[str, np.ndarray], u: int) -> list[ProxyStat]:
    """Return unit u's ProxyStat per proxy of a units.npz holding proxy arrays."""
    return proxy_stats_of(arrays, u, u + 1)[0]


def proxy_stats_of(arrays: Mapping[str, np.ndarray], start: int, stop: int) -> list[list[ProxyStat]]:
    """Return the ProxyStat lists of units [start, stop), reading each array once."""
    return proxy_stat_lists([str(name) for name in arrays["proxy_names"]], stats_of(arrays, start, stop),
                            arrays["proxy_hist_counts"][start:stop], arrays["proxy_hist_acts"][start:stop])


def stat_values(stats: np.ndarray) -> dict[str, list]:
    """Return {ProxyStat field: its values as (nested) lists, None where NaN} of statistics [..., len(STATS)]."""
    values = {}
    for i, field in enumerate(STATS):
        column = stats[..., i]
        shown = column.astype(object)
        shown[np.isnan(column)] = None
        values[field] = shown.tolist()
    return values


def proxy_stat_lists(names: Sequence[str], stats: np.ndarray, counts: np.ndarray,
                     acts: np.ndarray) -> list[list[ProxyStat]]:
    """Return each unit's ProxyStat list from its statistics [U, K, len(STATS)] (NaN: undefined), its stacked
    histograms' counts and activation sums [U, K, I, B] (sums shown to 3 decimals), K proxies named `names`: one
    definition for ingest (units.npz) and for a UnitData rebuilt from the database (app.read.unit_proxies)."""
    values = stat_values(stats)
    counts, acts = counts.tolist(), np.round(acts.astype(np.float64), 3).tolist()
    return [[ProxyStat.model_construct(name=name, hist_counts=counts[u][k], hist_acts=acts[u][k],
                                       **{field: v[u][k] for field, v in values.items()})
             for k, name in enumerate(names)] for u in range(len(counts))]


def unit_data(unit, windows: Sequence[WindowRow], strings: Sequence[str], context_before: int,
              analysis: Mapping[str, object] | None = None) -> UnitData:
    """Return the UnitData of `unit` (anything with the `unit` table's columns as attributes: a row being ingested or
    a stored one) and of its other analysis fields (`analysis_fields`; without them, their defaults). `windows` are
    its stored windows: top windows by rank, then interval samples by interval and rank. Every interval is listed, an
    empty one with count 0 and no samples (none for a unit that never fired); `contains_pct` is the interval's share
    of the unit's firing tokens. `max_abs_effect` comes from `windows` unless `analysis` gives it (a UnitData built
    without its windows, as stored)."""
    top: list[Example] = []
    samples: dict[int, list[Example]] = {}
    windows = [w for w in windows if w.kind in OPEN_KINDS]  # the review sample is never a page's
    for w in windows:
        e = example(w.value, w.token_ids, w.activations, w.effects, strings, context_before)
        (top if w.kind == "top" else samples.setdefault(int(w.bucket), [])).append(e)
    edges, counts = unit.interval_edges or [], unit.interval_counts or []
    firing = max(int(unit.firing_count), 1)
    intervals = [Interval.model_construct(index=i, low=float(edges[i]), high=float(edges[i + 1]), count=int(c),
                                          contains_pct=100.0 * int(c) / firing, samples=samples.get(i, []))
                 for i, c in enumerate(counts) if i + 1 < len(edges) and int(unit.firing_count) > 0]
    return UnitData.model_construct(
        firing_count=int(unit.firing_count), density=float(unit.density), max_activation=float(unit.max_activation),
        mean_activation=float(unit.mean_activation), top_token_entropy=unit.top_token_entropy,
        act_hist=Histogram.model_construct(edges=unit.act_hist["edges"], counts=unit.act_hist["counts"]),
        logit_hist=Histogram.model_construct(edges=unit.logit_hist["edges"], counts=unit.logit_hist["counts"]),
        top_logits=logit_tokens(unit.top_logits, strings), bottom_logits=logit_tokens(unit.bottom_logits, strings),
        top_examples=top, intervals=intervals,
        **{"max_abs_effect": max_abs_effect([w.effects for w in windows]), **(analysis or {})})
