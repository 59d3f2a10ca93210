"""Per-unit proxy statistics, accumulated in the analysis's passes as mergeable state.

Pass 1 (`ProxyStats`, one per basis and shard, merged by addition): float64 sums over the counted tokens (BOS left
out) of each unit's activation a against each proxy's score p and its threshold q = [p > 0]: Σa, Σa², Σa·p, Σa·q,
the positive part's Σa⁺ and Σa⁺·q, and the firing count on q; and per proxy Σp, Σp², Σq. A neuron's correlation
uses its whole activation (negative values of GELU included), its shares the positive part (firing, as everywhere).
Each batch's float64 sums are kept as int64 fixed point (units of 2^-FRACTION_BITS): integer addition is
associative, so merged shards equal one pass to the bit, however the sequences were sharded (tests/sae/test_proxies.py,
tests/sae/test_executors.py), at an absolute resolution of ~1e-6 per batch.
Pass 2 (`ProxyHist`, inside the reduce's stream over the spills): the paper's stacked histograms, each unit's
firing activations by interval (the unit's 11 equal-width intervals) and by proxy-score bucket, counted and summed.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from sae.analysis.proxy_scores import BUCKETS

FRACTION_BITS = 20


def _fixed(values: np.ndarray) -> np.ndarray:
    """Return float64 sums as int64 fixed point (FRACTION_BITS fractional bits)."""
    return np.rint(np.ldexp(values, FRACTION_BITS)).astype(np.int64)


class ProxyStats:
    """Pass-1 proxy sums of one basis over one shard."""

    def __init__(self, n_units: int, n_proxies: int) -> None:
        self.n_units, self.n_proxies, self.n_tokens = n_units, n_proxies, 0
        per_unit, per_pair = (lambda: np.zeros(n_units, np.int64)), (lambda: np.zeros((n_proxies, n_units), np.int64))
        self.sum_a, self.sum_aa, self.sum_pos = per_unit(), per_unit(), per_unit()
        self.a_p, self.a_q, self.pos_q, self.fire_q = per_pair(), per_pair(), per_pair(), per_pair()
        self.sum_p, self.sum_pp, self.sum_q = (np.zeros(n_proxies, np.int64) for _ in range(3))

    def update(self, scores: np.ndarray, rows: np.ndarray, units: np.ndarray, values: np.ndarray,
               dense: torch.Tensor | None = None) -> None:
        """Add one batch: scores [n, K] of its counted tokens; the firing non-zeros (rows into those n tokens, units,
        values [nnz]); dense [n, U]: the whole activations when they can be negative (neurons), else None."""
        n = scores.shape[0]
        p = scores.astype(np.float64)
        q = (p > 0).astype(np.float64)
        k = self.n_proxies
        self.n_tokens += n
        self.sum_p += _fixed(p.sum(0))
        self.sum_pp += _fixed((p * p).sum(0))
        self.sum_q += _fixed(q.sum(0))
        pq = np.concatenate([p, q], axis=1)  # [n, 2K]
        if dense is None:  # an SAE: the firing values are the whole activation; sparse products over them
            fire = sp.csr_matrix((np.ones(len(units)), (units, rows)), shape=(self.n_units, n))
            act = sp.csr_matrix((values.astype(np.float64), (units, rows)), shape=(self.n_units, n))
            pos_pq = act @ pq  # [U, 2K]
            fire_q = fire @ q  # [U, K]
            sum_pos = np.bincount(units, weights=values, minlength=self.n_units)
            a_pq, sum_a = pos_pq, sum_pos
            sum_aa = np.bincount(units, weights=values.astype(np.float64) ** 2, minlength=self.n_units)
        else:  # neurons: dense products (most of them fire on most tokens), the whole activation in the correlation
            # The products in float32 (BLAS; each batch's the same whatever the sharding), the sums in float64.
            x = dense.float()  # [n, U]
            positive = x.clamp(min=0)
            pq_t = torch.from_numpy(pq.astype(np.float32))
            a_pq = (x.T @ pq_t).double().numpy()
            pos_pq = (positive.T @ pq_t).double().numpy()
            fire_q = ((x > 0).float().T @ pq_t[:, k:]).double().numpy()
            x64 = x.double()
            sum_a, sum_aa, sum_pos = x64.sum(0).numpy(), x64.pow(2).sum(0).numpy(), x64.clamp(min=0).sum(0).numpy()
        self.a_p += _fixed(a_pq[:, :k].T)
        self.a_q += _fixed(a_pq[:, k:].T)
        self.pos_q += _fixed(pos_pq[:, k:].T)
        self.fire_q += _fixed(np.asarray(fire_q).T)
        self.sum_a += _fixed(sum_a)
        self.sum_aa += _fixed(sum_aa)
        self.sum_pos += _fixed(sum_pos)

    def merge(self, other: "ProxyStats") -> "ProxyStats":
        """Return the sums of both shards."""
        out = ProxyStats(self.n_units, self.n_proxies)
        for name, value in vars(self).items():
            if isinstance(value, np.ndarray) or name == "n_tokens":
                setattr(out, name, value + getattr(other, name))
        return out

    def arrays(self, firing: np.ndarray) -> dict[str, np.ndarray]:
        """Return units.npz's proxy arrays [U, K] float32 (NaN where undefined: a unit or proxy that never varies)."""
        n = float(self.n_tokens)
        f = {name: np.ldexp(v.astype(np.float64), -FRACTION_BITS) for name, v in vars(self).items()
             if isinstance(v, np.ndarray)}
        sum_a = f["sum_a"]
        with np.errstate(divide="ignore", invalid="ignore"):
            var_a = n * f["sum_aa"] - sum_a ** 2  # [U]
            corr = lambda cross, s, ss: (n * cross - sum_a[None] * s[:, None]) / np.sqrt(  # noqa: E731
                var_a[None] * (n * ss - s ** 2)[:, None])
            out = {
                "proxy_corr": corr(f["a_p"], f["sum_p"], f["sum_pp"]),
                "proxy_corr_pos": corr(f["a_q"], f["sum_q"], f["sum_q"]),
                "proxy_fire_share": f["fire_q"] / firing[None],
                "proxy_act_share": f["pos_q"] / f["sum_pos"][None],
                "proxy_recall": f["fire_q"] / f["sum_q"][:, None],
            }
        return {k: np.where(np.isfinite(v), v, np.nan).T.astype(np.float32) for k, v in out.items()}


class ProxyHist:
    """Pass-2 stacked histograms of one basis: [U, K, I, B] counts and activation sums.

    Only the proxy-positive buckets (those above `outside`) are counted entry by entry; the `outside` bucket is the
    rest of each interval (its count and activation sum over all firing tokens), which keeps the work to the
    tokens that have a property rather than K times every firing token."""

    def __init__(self, n_units: int, n_proxies: int, n_intervals: int, token_buckets: np.ndarray) -> None:
        """token_buckets [n_tokens, K] uint8: each analysed token's bucket per proxy (global token order)."""
        self.shape = (n_units, n_proxies, n_intervals, len(BUCKETS))
        self.token_buckets = token_buckets
        self.counts = np.zeros(int(np.prod(self.shape)), dtype=np.int64)
        self.acts = np.zeros(int(np.prod(self.shape)), dtype=np.float64)
        self.interval_counts = np.zeros(n_units * n_intervals, dtype=np.int64)
        self.interval_acts = np.zeros(n_units * n_intervals, dtype=np.float64)

    def update(self, units: np.ndarray, intervals: np.ndarray, values: np.ndarray, tokens: np.ndarray) -> None:
        """Add firing non-zeros: units, their intervals, values and global tokens [nnz], in token order."""
        u, k, i, b = self.shape
        group = units * i + intervals  # [nnz]
        self.interval_counts += np.bincount(group, minlength=u * i)
        self.interval_acts += np.bincount(group, weights=values, minlength=u * i)
        if not len(units):
            return
        # Sparse products over the batch's tokens: entries [tokens, groups] (in token order already: CSR without a
        # sort) against each token's positive (proxy, bucket) pairs [tokens, K·B]. The work is the (entry, pair)
        # products themselves, in compiled loops, summed token by token in float64 as a bincount over them would be.
        lo = int(tokens[0])
        local = tokens - lo
        span = self.token_buckets[lo: int(tokens[-1]) + 1]  # [t, K] the batch's tokens
        indptr = np.zeros(len(span) + 1, dtype=np.int64)
        np.cumsum(np.bincount(local, minlength=len(span)), out=indptr[1:])
        pair_token, pair_proxy = np.nonzero(span)  # token-ordered
        pairs = sp.csr_matrix((np.ones(len(pair_token)), (pair_proxy * b + span[pair_token, pair_proxy], pair_token)),
                              shape=(k * b, len(span)))  # [K·B, t]
        entries = sp.csr_matrix((values.astype(np.float64), group, indptr), shape=(len(span), u * i))  # [t, U·I]
        for total in (self.acts, self.counts):
            product = (pairs @ entries).tocoo()  # [K·B, U·I]; a product holds each cell once, so += adds it once
            proxy, bucket = np.divmod(product.row, b)
            unit, interval = np.divmod(product.col, i)
            total[((unit * k + proxy) * i + interval) * b + bucket] += product.data.astype(total.dtype)
            entries.data[:] = 1.0  # the counts next: the same structure, every entry once

    def merge(self, other: "ProxyHist") -> "ProxyHist":
        out = ProxyHist(self.shape[0], self.shape[1], self.shape[2], self.token_buckets)
        for name in ("counts", "acts", "interval_counts", "interval_acts"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """Return units.npz's proxy_hist_counts and proxy_hist_acts [U, K, I, B]: the last use of these sums, whose
        `outside` buckets it fills in place (two copies were 40 MB of the analysis's peak at 4,096 units)."""
        u, k, i, _ = self.shape
        counts, acts = self.counts.reshape(self.shape), self.acts.reshape(self.shape)
        counts[..., 0] = self.interval_counts.reshape(u, 1, i) - counts[..., 1:].sum(-1)
        acts[..., 0] = np.maximum(self.interval_acts.reshape(u, 1, i) - acts[..., 1:].sum(-1), 0.0)
        return {"proxy_hist_counts": counts.astype(np.int32), "proxy_hist_acts": acts.astype(np.float32)}
