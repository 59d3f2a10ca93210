"""Held-out text for the protocol, with the chosen units' activations (torch): random windows and windows around a
unit's max tokens, and each unit's full ranking of promoted tokens for the logit test.

The pool is held-out rows the analysis did not read when the split has them (else all held-out rows, in the corpus's
seeded order); even rows feed the explainer, odd rows the scorers, so the two never share a window.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from sae.autointerp.pool import Pool
from sae.conventions import NEURON_BASIS
from sae.corpus.build import load_heldout, read_token_strings
from sae.errors import MonoscopeError


def load_pool(run_dir: Path, units: dict[str, list[int]], *, analysed_tokens: int, n_rows: int, logit_k: int,
              batch_rows: int = 32) -> Pool:
    """Load the pool (see the module docstring), the activations of `units` ({basis: indexes}) on it and each
    unit's `logit_k` most promoted tokens."""
    from sae.dictionary.saelens_format import load_sae
    from sae.lm.model import load_lm, mlp_activations

    run_dir = Path(run_dir)
    every = load_heldout(run_dir)
    analysed = -(-analysed_tokens // every.shape[1])
    rows = every[analysed:] if len(every) - analysed >= n_rows else every
    tokens = np.asarray(rows[:n_rows], dtype=np.int64)
    meta = json.loads((run_dir / "corpus" / "meta.json").read_text())
    model = load_lm(run_dir, "cpu")
    encoders = {}
    for basis in units:
        if basis != NEURON_BASIS:
            folder = run_dir / "saes" / basis
            if not folder.is_dir():
                raise MonoscopeError(f"autointerp needs the SAE folder {folder}, which is not on this machine")
            encoders[basis] = load_sae(folder)[0].float().eval()
    acts: dict[tuple[str, int], list[np.ndarray]] = {(b, u): [] for b, us in units.items() for u in us}
    with torch.no_grad():
        for start in range(0, len(tokens), batch_rows):
            post = mlp_activations(model, torch.from_numpy(tokens[start:start + batch_rows])).float()  # [B, T, d_mlp]
            for basis, indexes in units.items():
                codes = post if basis == NEURON_BASIS else encoders[basis].encode(post)  # [B, T, U]
                chosen = codes[..., indexes].numpy()  # [B, T, len(indexes)]
                for k, u in enumerate(indexes):
                    acts[(basis, u)].append(chosen[..., k])
    promoted = {(basis, u): ranked for basis, indexes in units.items()
                for u, ranked in promoted_tokens(model, encoders.get(basis), indexes, logit_k).items()}
    return Pool(run_dir, tokens, read_token_strings(run_dir), int(meta["bos_id"]),
                {key: np.concatenate(parts).astype(np.float32) for key, parts in acts.items()}, promoted)


@torch.no_grad()
def promoted_tokens(model, sae, units: list[int], k: int) -> dict[int, list[int]]:
    """Each unit's k most promoted token ids by direct logit effect (sae/analysis/logits.py's definition); `sae`
    None for the neuron basis."""
    from sae.lm.model import unembed_directions

    W_out, W_eff = (w.float() for w in unembed_directions(model))  # [d_mlp, d_model], [d_model, d_vocab]
    directions = W_out[units] if sae is None else sae.W_dec.detach()[units] @ W_out  # [U, d_model]
    top = (directions @ W_eff).topk(min(k, W_eff.shape[1]), dim=1).indices  # [U, k]
    return {u: row for u, row in zip(units, top.tolist())}
