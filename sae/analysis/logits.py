"""Weight-based views of units: direct logit effects and links between a dictionary and the neuron basis.

Logit effects follow the paper's caveat: they are the *direct* path only (unit direction -> W_out -> final LayerNorm's
gain -> W_U, centred as TransformerLens's fold_ln + center_unembed; sae.lm.model.unembed_directions), leaving out
the LayerNorm's per-token scale and any indirect effect. Everything is computed in chunks of units, so a large vocabulary
(e.g. 48k for gelu-1l) never needs a [U, d_vocab] matrix at once.
"""

from __future__ import annotations

import numpy as np
import torch

CHUNK = 512


@torch.no_grad()
def logit_effects(out_dirs: torch.Tensor, W_U: torch.Tensor, k: int, bins: int) -> dict[str, np.ndarray]:
    """Return top/bottom-k logit tokens and a histogram of all logit weights per unit.

    out_dirs [U, d_model]: each unit's direction in the residual stream (neuron: W_out row; feature: W_dec row @ W_out).
    W_U [d_model, d_vocab]: the effective unembedding of sae.lm.model.unembed_directions. Histogram: `bins` equal-width bins from the unit's min to its max weight.
    """
    n_units = out_dirs.shape[0]
    out = {
        "logit_top_ids": np.zeros((n_units, k), np.int32), "logit_top_values": np.zeros((n_units, k), np.float32),
        "logit_bottom_ids": np.zeros((n_units, k), np.int32), "logit_bottom_values": np.zeros((n_units, k), np.float32),
        "logit_hist_edges": np.zeros((n_units, bins + 1), np.float32),
        "logit_hist_counts": np.zeros((n_units, bins), np.int64),
    }
    W_U = W_U.float()
    fractions = torch.linspace(0, 1, bins + 1)
    for start in range(0, n_units, CHUNK):
        s = slice(start, min(start + CHUNK, n_units))
        w = out_dirs[s].float() @ W_U  # [c, d_vocab]
        top, bottom = w.topk(k, dim=1), w.topk(k, dim=1, largest=False)
        out["logit_top_ids"][s], out["logit_top_values"][s] = top.indices.numpy(), top.values.numpy()
        out["logit_bottom_ids"][s], out["logit_bottom_values"][s] = bottom.indices.numpy(), bottom.values.numpy()
        lo, hi = bottom.values[:, :1], top.values[:, :1]  # [c, 1]
        span = (hi - lo).clamp_min(1e-30)
        b = ((w - lo) / span * bins).long().clamp_(0, bins - 1)  # [c, d_vocab]
        b += torch.arange(w.shape[0]).unsqueeze(1) * bins
        out["logit_hist_counts"][s] = torch.bincount(b.reshape(-1), minlength=w.shape[0] * bins).view(-1, bins).numpy()
        out["logit_hist_edges"][s] = (lo + (hi - lo) * fractions).numpy()
    return out


def _top_abs(weights: torch.Tensor, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (ids, signed values) [rows, n] of the n entries largest in |w| per row of weights [rows, cols]."""
    idx = weights.abs().topk(n, dim=1).indices
    return idx.to(torch.int32).numpy(), weights.gather(1, idx).float().numpy()


@torch.no_grad()
def links(W_dec: torch.Tensor, n: int = 5) -> dict[str, np.ndarray]:
    """Return the links.npz arrays of a dictionary W_dec [U, d_in] against the neuron basis of the same hook.

    feature -> neuron: decoder entries largest in |w|; feature -> feature: nearest other decoder rows by cosine;
    neuron -> feature: features whose decoder entry on that neuron is largest in |w|.
    """
    W_dec = W_dec.float()
    n_units = W_dec.shape[0]
    fn_ids, fn_w = _top_abs(W_dec, n)
    nf_ids, nf_w = _top_abs(W_dec.T.contiguous(), n)
    unit_dirs = W_dec / W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
    ff_ids = np.zeros((n_units, n), np.int32)
    ff_cos = np.zeros((n_units, n), np.float32)
    for start in range(0, n_units, CHUNK):
        s = slice(start, min(start + CHUNK, n_units))
        cos = unit_dirs[s] @ unit_dirs.T  # [c, U]
        rows = torch.arange(cos.shape[0])
        cos[rows, rows + start] = -float("inf")  # never link a feature to itself
        top = cos.topk(n, dim=1)
        ff_ids[s], ff_cos[s] = top.indices.numpy(), top.values.numpy()
    return {"feature_neuron_ids": fn_ids, "feature_neuron_weights": fn_w,
            "feature_feature_ids": ff_ids, "feature_feature_cosines": ff_cos,
            "neuron_feature_ids": nf_ids, "neuron_feature_weights": nf_w}
