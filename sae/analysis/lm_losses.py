"""The LM as the analysis's pass 1 sees it: the hook's activations of a batch, and the LM-loss sums of replacing them.

One pass-1 forward per batch gives the activations every basis encodes; the loss batches also keep what the loss
sums need from it, and the sums come after the bases have encoded, from their reconstructions (no second encode):
- `HeadLosses`, a one-layer LM (sae.lm.model.mlp_head): the forward keeps the residual before the MLP too, and each
  replacement (zero, mean, a reconstruction) is one MLP output and one unembedding (sae.dictionary.metrics.head_losses);
- `SplicedLosses`, any other LM: one forward per replacement with the activations spliced in at the hook
  (sae.dictionary.metrics.add_losses).
Both give the same sums up to float rounding (tests/sae/test_metrics.py).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from sae.dictionary.metrics import LossSums, add_losses, head_losses


class LossModel(Protocol):
    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, object]:
        """Return (the hook's activations [B, T, d_in] float32 on CPU, what `sums` needs of this forward)."""

    def sums(self, kept: object, batch: torch.Tensor, post: torch.Tensor, mean: torch.Tensor | None,
             reconstructions: dict[str, torch.Tensor]) -> tuple[LossSums, dict[str, LossSums]]:
        """Return (the sums every basis shares: clean, zero and mean ablation; each reconstruction's own) on batch
        [B, T]; reconstructions: basis name -> [B, T, d_in] on CPU."""


class HeadLosses:
    """A one-layer LM: the residual before the MLP is kept, and replacements are read out through its MLPHead."""

    def __init__(self, model, head, device: torch.device) -> None:
        self.model, self.head, self.device = model, head, device

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, object]:
        from sae.lm.model import mid_and_post

        mid, post = mid_and_post(self.model, batch.to(self.device))
        return post.float().cpu(), (mid, post)

    def sums(self, kept, batch, post, mean, reconstructions):
        mid, post_here = kept
        recon = {name: r.to(self.device) for name, r in reconstructions.items()}
        return head_losses(self.head, mid, post_here, batch, None if mean is None else mean.to(self.device), recon)


class SplicedLosses:
    """Any LM: the clean and every replaced forward run whole, rows_per_forward sequences at a time (their logits
    [rows, T, d_vocab] dominate memory)."""

    def __init__(self, model, device: torch.device, rows_per_forward: int) -> None:
        self.model, self.device, self.rows = model, device, rows_per_forward

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, object]:
        from sae.lm.model import mlp_activations

        return mlp_activations(self.model, batch.to(self.device)).float().cpu(), None

    def sums(self, kept, batch, post, mean, reconstructions):
        from sae.lm.model import lm_logits

        def logits(rows: torch.Tensor, replace_post) -> torch.Tensor:  # the splice sees and returns CPU activations
            splice = None if replace_post is None else (
                lambda p: replace_post(p.float().cpu()).to(p.device, p.dtype))
            return lm_logits(self.model, rows.to(self.device), splice).float().cpu()

        shared, own = LossSums(), {name: LossSums() for name in reconstructions}
        for r0 in range(0, batch.shape[0], self.rows):
            rows = slice(r0, r0 + self.rows)
            splices = {name: (lambda p, r=r[rows]: r) for name, r in reconstructions.items()}
            _, chunk_shared, chunk_own = add_losses(logits, batch[rows], mean, splices)
            shared = shared.merge(chunk_shared)
            own = {name: own[name].merge(chunk_own[name]) for name in own}
        return shared, own


def loss_model(model, device: torch.device, tokens: np.ndarray, rows_per_forward: int) -> LossModel:
    """Return the fastest LossModel that is exact for this LM (HeadLosses where its head reproduces the LM's own
    logits on the first two sequences of tokens [n_seq, T])."""
    from sae.lm.model import mlp_head

    head = mlp_head(model, torch.from_numpy(np.asarray(tokens[:2], dtype=np.int64)).to(device))
    return SplicedLosses(model, device, rows_per_forward) if head is None else HeadLosses(model, head, device)
