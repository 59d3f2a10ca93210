"""The LM-loss metrics: what replacing the MLP's activations (by zeros, their mean, an SAE's reconstruction) costs
the LM in next-token loss and KL divergence, defined once for training's evaluation and for the analysis.

Two ways to the same sums (up to float rounding; tests/sae/test_metrics.py):
- `HeadLosses`, a one-layer LM (sae.lm.heads.mlp_head): the forward keeps the residual before the MLP too, and each
  replacement is one MLP output and one unembedding, no further forward (sae/lm/head_losses.py);
- `SplicedLosses`, any other LM: one forward per replacement with the activations spliced in at the hook
  (`add_losses`).
`sae.lm.head_losses.loss_model` picks the fastest exact one for an LM. The analysis's pass 1 uses it through
`LossModel`'s two calls: one forward per batch gives the activations every basis encodes, and the sums come after the
bases have encoded, from their reconstructions (no second encode).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

import torch

from sae.conventions import BOS_POSITION


def keep_bos(post: torch.Tensor, replacement: torch.Tensor) -> torch.Tensor:
    """Return `replacement` [b, T, d] with the BOS position's activations put back from `post`: splices and
    ablations leave BOS alone, as training and statistics do (sae.conventions.BOS_POSITION)."""
    replacement[:, BOS_POSITION] = post[:, BOS_POSITION].to(replacement.dtype)
    return replacement


# SAELens's run_evals names for the LM-loss metrics (ce_loss_*, kl_div_*), beside the names the project used first.
SAELENS_LOSS_NAMES = {"ce_loss_without_sae": "loss_clean", "ce_loss_with_ablation": "loss_zero_ablation",
                      "ce_loss_with_sae": "loss_reconstructed", "ce_loss_score": "loss_recovered"}
REPLACEMENTS = ("zero", "mean", "spliced")  # what replaces the hook's activations after BOS in LossSums


@dataclass
class LossSums:
    """Mergeable sums behind the LM-loss metrics over predicted tokens (every position but the last): the next-token
    loss of the clean model and with the hook's activations after BOS replaced by zeros, by their mean, or by the
    reconstruction; and each replacement's KL divergence KL(clean || replaced) of the next-token distribution
    (SAELens's per-token formula, averaged here over the predicted positions like the losses, where SAELens also
    counts the last position). BOS keeps its own activations (sae.conventions), so its KL is 0."""

    tokens: int = 0
    ce: dict[str, float] = field(default_factory=dict)  # "clean" and REPLACEMENTS -> Σ next-token loss
    kl: dict[str, float] = field(default_factory=dict)  # REPLACEMENTS -> Σ KL(clean || replaced)

    def merge(self, other: "LossSums") -> "LossSums":
        return LossSums(self.tokens + other.tokens, {k: self.ce.get(k, 0.0) + other.ce.get(k, 0.0) for k in
                                                     {*self.ce, *other.ce}},
                        {k: self.kl.get(k, 0.0) + other.kl.get(k, 0.0) for k in {*self.kl, *other.kl}})

    def metrics(self) -> dict:
        """Return the mean losses, loss recovered against zero and mean ablation, and the KL metrics; None where
        not measured (no tokens, no splice) or undefined (an ablation that costs nothing)."""
        mean = {k: (v / self.tokens if self.tokens else None) for k, v in self.ce.items()}
        kl = {k: (v / self.tokens if self.tokens else None) for k, v in self.kl.items()}
        clean, zero, abl_mean, spliced = (mean.get(k) for k in ("clean", "zero", "mean", "spliced"))
        out = {"loss_clean": clean, "loss_zero_ablation": zero, "loss_mean_ablation": abl_mean,
               "loss_reconstructed": spliced, "loss_recovered": _recovered(clean, zero, spliced),
               "loss_recovered_mean_ablation": _recovered(clean, abl_mean, spliced),
               "kl_div_with_sae": kl.get("spliced"), "kl_div_with_ablation": kl.get("zero"),
               "kl_div_with_mean_ablation": kl.get("mean")}
        with_sae, ablation = out["kl_div_with_sae"], out["kl_div_with_ablation"]
        out["kl_div_score"] = (ablation - with_sae) / ablation if with_sae is not None and ablation else None
        return out | {name: out[ours] for name, ours in SAELENS_LOSS_NAMES.items()}


def _recovered(clean: float | None, ablated: float | None, spliced: float | None) -> float | None:
    """(L_ablated − L_spliced) / (L_ablated − L_clean), None where a loss is missing or the ablation costs nothing."""
    if clean is None or ablated is None or spliced is None or abs(ablated - clean) <= 1e-12:
        return None
    return (ablated - spliced) / (ablated - clean)


LogitsFn = Callable[[torch.Tensor, Callable | None], torch.Tensor]  # (tokens [b, T], replace_post) -> logits


@torch.no_grad()
def add_losses(logits_fn: LogitsFn, tokens: torch.Tensor, mean: torch.Tensor | None,
               splices: dict[str, Callable[[torch.Tensor], torch.Tensor]]
               ) -> tuple[torch.Tensor, LossSums, dict[str, LossSums]]:
    """Return (the clean activations of the hook [b, T, d]; the losses every basis shares: clean, zero- and
    mean-ablated; per splice name, its own spliced loss and KL) on tokens [b, T].

    mean [d]: the mean activation that mean ablation puts after BOS (None: no mean ablation);
    splices: name -> function from the clean activations [b, T, d] to their reconstruction.
    """
    captured: list[torch.Tensor] = []
    clean = logits_fn(tokens, lambda post: captured.append(post) or post)
    post = captured[0]
    targets = tokens[:, 1:].to(clean.device)
    clean_lp = clean[:, :-1].float().log_softmax(-1)  # [b, T-1, V]
    n = targets.numel()

    def replaced(replacement: torch.Tensor) -> tuple[float, float]:
        lp = logits_fn(tokens, lambda p: keep_bos(p, replacement.to(p.device, p.dtype)))[:, :-1].float()
        lp = lp.log_softmax(-1)
        nll = -float(lp.gather(-1, targets[..., None]).sum(dtype=torch.float64))
        return nll, float((clean_lp.exp() * (clean_lp - lp)).sum(dtype=torch.float64))

    shared = LossSums(n, {"clean": -float(clean_lp.gather(-1, targets[..., None]).sum(dtype=torch.float64))})
    ablations = [("zero", torch.zeros_like(post))] + ([("mean", mean.expand_as(post).clone())] if mean is not None
                                                      else [])
    for name, replacement in ablations:
        shared.ce[name], shared.kl[name] = replaced(replacement)
    own = {}
    for name, splice in splices.items():
        ce, kl = replaced(splice(post))
        own[name] = LossSums(0, {"spliced": ce}, {"spliced": kl})
    return post, shared, own


@torch.no_grad()
def mean_activation(posts: Iterable[torch.Tensor]) -> torch.Tensor:
    """Return the mean [d] of hook activations over the positions after BOS (mean ablation's vector), streamed over
    batches [b, T, d] so that memory does not grow with the tokens."""
    total, count = None, 0
    for post in posts:
        keep = torch.arange(post.shape[1], device=post.device) != BOS_POSITION
        kept = post[:, keep].reshape(-1, post.shape[-1])
        total = kept.sum(0, dtype=torch.float64) + (0 if total is None else total)
        count += len(kept)
    if total is None or count == 0:
        raise ValueError("mean ablation needs at least one position after BOS")
    return (total / count).float()



class LossModel(Protocol):
    def forward(self, batch: torch.Tensor, final: bool = False) -> tuple[torch.Tensor, object, torch.Tensor | None]:
        """Return (the hook's activations [B, T, d_in] float32 on CPU, what `sums` needs of this forward, and when
        final the residual stream after the last block [B, T, d_model] float32 on CPU from the same forward)."""

    def sums(self, kept: object, batch: torch.Tensor, post: torch.Tensor, mean: torch.Tensor | None,
             reconstructions: dict[str, torch.Tensor], first_sequence: int | None = None
             ) -> tuple[LossSums, dict[str, LossSums]]:
        """Return (the sums every basis shares: clean, zero and mean ablation; each reconstruction's own) on batch
        [B, T]; reconstructions: basis name -> [B, T, d_in] on CPU. first_sequence: where the batch starts in the
        analysed tokens, for a model that keeps what it computed of the clean LM (None: nothing kept)."""


class SplicedLosses:
    """Any LM: the clean and every replaced forward run whole, rows_per_forward sequences at a time (their logits
    [rows, T, d_vocab] dominate memory)."""

    def __init__(self, model, device: torch.device, rows_per_forward: int) -> None:
        self.model, self.device, self.rows = model, device, rows_per_forward

    def forward(self, batch: torch.Tensor, final: bool = False) -> tuple[torch.Tensor, object, torch.Tensor | None]:
        from sae.lm.model import HOOK_POST, activations_at, final_hook

        hooks = [HOOK_POST, final_hook(self.model)] if final else [HOOK_POST]
        acts = activations_at(self.model, batch.to(self.device), hooks)
        return acts[0].float().cpu(), None, acts[1].cpu() if final else None

    def sums(self, kept, batch, post, mean, reconstructions, first_sequence=None):
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
