"""A unit's statistics against the specificity proxies, packed into two byte columns of its `unit` row (migration
0013): `proxy_stats`, float32 [K, 5] (STATS, NaN where undefined), and `proxy_hists`, a zstd frame of a header
(int32 K, I, B), the firing-token counts (int32 [K, I, B]) and their activation sums (float64 [K, I, B]). K is the
basis's proxies in the analysis's order (`basis.config["proxies"]`), I its activation intervals, B the score buckets.
Fourteen rows a unit (236k for 16,384 features, each with a foreign key and a unique index) had been a quarter of a
PostgreSQL ingest; the /proxies ranking reads a basis's `proxy_stats` whole anyway.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import numpy as np

from app.zstd_codecs import zstd_codecs

STATS = {"corr": "proxy_corr", "corr_pos": "proxy_corr_pos", "fire_share": "proxy_fire_share",
         "act_share": "proxy_act_share", "recall": "proxy_recall"}  # ProxyStat field -> units.npz array, blob order
_HEADER = np.dtype("<i4")


class Hists(NamedTuple):
    counts: np.ndarray  # int32 [K, I, B]
    acts: np.ndarray  # float64 [K, I, B]


def proxy_names(config: Mapping | None) -> list[str]:
    """Return the proxies of a basis's analysis (its basis.json, or `basis.config`) in the order of its units'
    packed statistics."""
    return [p["name"] for p in (config or {}).get("proxies", [])]


def proxy_columns(arrays: Mapping[str, np.ndarray], start: int, stop: int) -> list[tuple[bytes | None, bytes | None]]:
    """Return (proxy_stats, proxy_hists) of units [start, stop) from their units.npz arrays; (None, None) for every
    unit of an analysis without proxies."""
    if "proxy_names" not in arrays:
        return [(None, None)] * (stop - start)
    stats = stats_of(arrays, start, stop).astype("<f4")
    counts = arrays["proxy_hist_counts"][start:stop].astype("<i4")
    acts = arrays["proxy_hist_acts"][start:stop].astype("<f8")
    header = np.array(counts.shape[1:], _HEADER).tobytes()
    compress = zstd_codecs()[0].compress
    return [(stats[u].tobytes(), compress(header + counts[u].tobytes() + acts[u].tobytes()))
            for u in range(stop - start)]


def stats_of(arrays: Mapping[str, np.ndarray], start: int, stop: int) -> np.ndarray:
    """Return units [start, stop)'s statistics [U, K, len(STATS)] from their units.npz arrays."""
    return np.stack([arrays[name][start:stop] for name in STATS.values()], axis=-1)


def stats_array(blobs: list[bytes]) -> np.ndarray:
    """Return float32 [len(blobs), K, 5] from units' `proxy_stats` (each of the same basis)."""
    flat = np.frombuffer(b"".join(blobs), "<f4")
    return flat.reshape(len(blobs), -1, len(STATS))


def hists(blob: bytes) -> Hists:
    """Return one unit's stacked histograms from its `proxy_hists`."""
    raw = zstd_codecs()[1].decompress(blob)
    shape = tuple(np.frombuffer(raw, _HEADER, 3))
    n = int(np.prod(shape))
    counts = np.frombuffer(raw, "<i4", n, offset=12).reshape(shape)
    return Hists(counts, np.frombuffer(raw, "<f8", n, offset=12 + 4 * n).reshape(shape))
