"""The LM-loss metrics of a one-layer LM without a forward per replacement (sae.lm.losses defines the sums): the
forward keeps the residual before the MLP, and each replacement is one MLP output and one unembedding through the
LM's MLPHead (sae/lm/heads.py). What the clean LM gives (`CleanRows`: its loss, the ablations', and what a splice's
KL needs of the clean distribution) does not depend on the SAE, so it may be kept (`CleanRowsStore`,
sae/analysis/loss_cache.py) and a later SAE pays one unembedding a position (`spliced_rows`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch

from sae.compiled import kernels
from sae.conventions import BOS_POSITION
from sae.lm.heads import MLPHead, mlp_head
from sae.lm.losses import LossModel, LossSums, SplicedLosses


HEAD_ROWS = 256  # predicted positions per chunk of the head's sums: their [rows, d_vocab] projections stay in cache


@dataclass(frozen=True)
class CleanRows:
    """What the LM-loss metrics need of the clean LM at each predicted position (every position but the last of each
    sequence), whatever SAE is spliced in: a function of the LM and the tokens alone, so an analysis may keep it for
    the next SAE (sae/analysis/loss_cache.py)."""

    names: tuple[str, ...]  # the distributions of logp: "clean", then the ablations ("zero", and "mean" if asked)
    logp: torch.Tensor  # [D, n] the log-probability of the next token under each
    kl: torch.Tensor  # [D, n] KL(clean || each) (row 0: zeros)
    u: torch.Tensor  # [n, d_model] W_U p: the clean distribution's expected unembedding (in the norm's frame)
    kappa: torch.Tensor  # [n] float64: Σ_v p_v·(logit_v − bias_v) − logsumexp(logits), as (c·w / s)·u − lse

    def to(self, device: torch.device) -> "CleanRows":
        return CleanRows(self.names, *(t.to(device) for t in (self.logp, self.kl, self.u, self.kappa)))


def _predicted(t: torch.Tensor) -> torch.Tensor:
    """[b, T, ...] -> [b·(T − 1), ...]: the positions whose next token is predicted."""
    return t[:, :-1].reshape(-1, *t.shape[2:])


def _bos_rows(b: int, n_ctx: int, device) -> torch.Tensor:
    """[b·(T − 1)] True at BOS among the predicted positions: BOS keeps its own activations (sae.conventions)."""
    return torch.arange(b * (n_ctx - 1), device=device) % (n_ctx - 1) == BOS_POSITION


@torch.no_grad()
def clean_rows(head: MLPHead, resid_mid: torch.Tensor, post: torch.Tensor, tokens: torch.Tensor,
               mean: torch.Tensor | None) -> CleanRows:
    """Return the CleanRows of a one-layer LM from its residual before the MLP resid_mid [b, T, d_model] and the
    hook's activations post [b, T, d_mlp] (sae.lm.model.mid_and_post) on tokens [b, T]; the ablations are zeros and,
    unless mean [d_mlp] is None, the mean activation.

    The final norm's projection is linear, so the logits of resid_mid + out are (P(resid_mid) + P(out)) / scale(...)
    + bias: one unembedding of resid_mid and one of the clean MLP output serve clean, zero and mean ablation (these add
    a constant row). The log-softmaxes and KLs of a chunk of positions are sae.softmax_kernels.replaced_logprobs's (one
    pass over the vocabulary per distribution, the clean one exponentiated once; torch ops off CPU); u costs one more
    [rows, d_vocab] x [d_vocab, d_model] product. kappa's first term is the clean residual's normalised direction
    c·w / s dotted with the u kept, not the kernel's own sum: a splice's KL is then
    u·(c·w / s − c(r)·w / s(r)) + lse(r) − lse, so u's float32 rounding is scaled by how far the splice moved the
    residual, small where the KL is small (summed over 50,257 tokens it would otherwise bias the KL by ~1e-5 nats a
    position).
    """
    b, n_ctx, d_mlp = post.shape
    mid, clean_post = _predicted(resid_mid), _predicted(post)
    n = len(mid)
    targets = tokens[:, 1:].reshape(n).to(post.device)
    outs = {"zero": head.b_out[None]} | ({} if mean is None else {"mean": head.mlp_out(mean[None])})  # [1, d_model]
    names = ("clean", *outs)
    compiled = kernels("sae.softmax_kernels", post.device)
    logp, kl = torch.empty(len(names), n, device=post.device), torch.empty(len(names), n, device=post.device)
    u, lse = torch.empty(n, mid.shape[-1], device=post.device), torch.empty(n, dtype=torch.float64, device=post.device)
    direction = torch.empty(n, mid.shape[-1], dtype=torch.float64, device=post.device)  # c·w / s of the clean residual
    W_U, bias = head.readout.W_U, head.readout.bias
    for r0 in range(0, n, HEAD_ROWS):
        rows = slice(r0, min(r0 + HEAD_ROWS, n))
        m = rows.stop - r0
        # One projection: [mid; the clean MLP output (m rows); the constant outputs]
        centred, projected = head.readout.project(torch.cat([mid[rows], head.mlp_out(clean_post[rows]),
                                                             *outs.values()]))
        local = torch.arange(m, device=post.device)
        add_of = torch.stack([local + m] + [torch.full_like(local, 2 * m + j) for j in range(len(outs))])  # [D, m]
        # [D, m] the norm's divisors, as the float32 inverses every logit is multiplied by (direction below too)
        inv_scale = 1.0 / head.readout.scale(centred[:m][None] + centred[add_of])[..., 0]
        if compiled is None:
            logp[:, rows], kl[:, rows], probs, lse[rows] = _replaced_logprobs(projected, local, add_of, inv_scale,
                                                                              bias, targets[rows])
        else:
            sums, probs = torch.empty(len(names), m), torch.empty(m, projected.shape[1])
            compiled.replaced_logprobs(projected.numpy(), add_of.numpy(), inv_scale.numpy(), bias.numpy(),
                                       targets[rows].numpy(), logp[:, rows].numpy(), kl[:, rows].numpy(),
                                       sums.numpy(), probs.numpy(), lse[rows].numpy(), 4 * torch.get_num_threads())
            bad = torch.nonzero(compiled.out_of_range(sums))  # (distribution, row) whose sums left the range
            if len(bad):  # never the clean row, whose sum lies in [1, d_vocab]
                d, i = bad[:, 0], bad[:, 1]
                redo_logp, redo_kl, _, _ = _replaced_logprobs(projected, i, torch.stack([add_of[0, i], add_of[d, i]]),
                                                              torch.stack([inv_scale[0, i], inv_scale[d, i]]), bias,
                                                              targets[rows][i])
                logp[d, r0 + i], kl[d, r0 + i] = redo_logp[1], redo_kl[1]
        torch.mm(probs, W_U.T, out=u[rows])
        direction[rows] = ((centred[:m] + centred[m: 2 * m]) * head.readout.w).double() * inv_scale[0, :, None].double()
    bos = _bos_rows(b, n_ctx, post.device)
    logp[1:, bos] = logp[0, bos]  # BOS keeps its activations: its ablated distributions are the clean one
    kl[1:, bos] = 0.0
    return CleanRows(names, logp, kl, u, torch.linalg.vecdot(direction, u.double()) - lse)


@torch.no_grad()
def spliced_rows(head: MLPHead, resid_mid: torch.Tensor, reconstruction: torch.Tensor, tokens: torch.Tensor,
                 clean: CleanRows) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (logp, kl) [b·(T − 1)] of the LM with the hook's activations after BOS replaced by reconstruction
    [b, T, d_mlp]: the next token's log-probability and KL(clean || spliced) at each predicted position.

    One unembedding of resid_mid + the spliced MLP output; the KL from the clean rows alone, without the clean
    logits: with x = P(r)/s + bias the spliced logits, Σ_v p_v·x_v = (c(r)·w)·(W_U p)/s + p·bias, so
    KL = Σ p·(clean − x) − lse_clean + lse = kappa − (c(r)·w)·u / s + lse (p·bias cancels), in float64.
    """
    b, n_ctx = tokens.shape
    mid, spliced = _predicted(resid_mid), _predicted(reconstruction)
    n = len(mid)
    targets = tokens[:, 1:].reshape(n).to(mid.device)
    compiled = kernels("sae.softmax_kernels", mid.device)
    logp, lse = torch.empty(n, device=mid.device), torch.empty(n, dtype=torch.float64, device=mid.device)
    dot = torch.empty(n, dtype=torch.float64, device=mid.device)  # (c(r)·w)·u / s
    ro = head.readout
    for r0 in range(0, n, HEAD_ROWS):
        rows = slice(r0, min(r0 + HEAD_ROWS, n))
        centred, projected = ro.project(mid[rows] + head.mlp_out(spliced[rows]))
        # The norm's divisor as the float32 inverse the logits are multiplied by, in dot too: a splice's KL is then a
        # difference of terms that carry the same rounding of it (~1e-6 nats a position over 50,257 tokens otherwise)
        inv_scale = 1.0 / ro.scale(centred)[:, 0]
        dot[rows] = torch.linalg.vecdot((centred * ro.w).double(), clean.u[rows].double()) * inv_scale.double()
        if compiled is None:
            x = projected.mul_(inv_scale[:, None]).add_(ro.bias)
            lse[rows] = x.double().logsumexp(-1)  # float64, as the kernel's
            logp[rows] = x.gather(-1, targets[rows][:, None])[:, 0] - lse[rows]
        else:
            compiled.spliced_logprobs(projected.numpy(), inv_scale.numpy(), ro.bias.numpy(),
                                      targets[rows].numpy(), logp[rows].numpy(), lse[rows].numpy(),
                                      4 * torch.get_num_threads())
    kl = (clean.kappa - dot + lse).float()
    bos = _bos_rows(b, n_ctx, mid.device)
    logp[bos], kl[bos] = clean.logp[0, bos], 0.0  # BOS keeps its activations: the clean distribution
    return logp, kl


@torch.no_grad()
def head_losses(head: MLPHead, resid_mid: torch.Tensor, post: torch.Tensor, tokens: torch.Tensor,
                mean: torch.Tensor | None, reconstructions: dict[str, torch.Tensor], clean: CleanRows | None = None
                ) -> tuple[LossSums, dict[str, LossSums]]:
    """Return the sums `add_losses` returns (its `shared` and `own`) for a one-layer LM with no forward
    (sae.lm.heads.MLPHead): `clean_rows` (given, or computed from post and mean) and `spliced_rows` of each
    reconstruction (name -> [b, T, d_mlp], a splice's output). 2 + n_SAE unembeddings a position, and one product
    for u."""
    if clean is None:
        clean = clean_rows(head, resid_mid, post, tokens, mean)
    n = clean.logp.shape[1]
    ce = {name: -float(clean.logp[d].sum(dtype=torch.float64)) for d, name in enumerate(clean.names)}
    shared = LossSums(n, ce, {name: float(clean.kl[d].sum(dtype=torch.float64))
                              for d, name in enumerate(clean.names) if d})
    own = {}
    for name, recon in reconstructions.items():
        logp, kl = spliced_rows(head, resid_mid, recon, tokens, clean)
        own[name] = LossSums(0, {"spliced": -float(logp.sum(dtype=torch.float64))},
                             {"spliced": float(kl.sum(dtype=torch.float64))})
    return shared, own


def _replaced_logprobs(projected: torch.Tensor, base_of: torch.Tensor, add_of: torch.Tensor, inv_scale: torch.Tensor,
                       bias: torch.Tensor, target: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """sae.softmax_kernels.replaced_logprobs in torch ops (off CPU, without numba, and for the rows whose sums left
    the kernel's range): position i's logits under distribution d are (projected[base_of[i]] +
    projected[add_of[d, i]])·inv_scale[d, i] + bias, d = 0 the clean ones. Returns (logp, kl) [D, m]: the
    log-probability of target [m] and KL(clean || d); the clean probabilities [m, V] and logits' log-sum-exp [m]
    (float64)."""
    base = projected[base_of]  # [m, V]
    logp, kl = torch.empty(add_of.shape, device=base.device), torch.zeros(add_of.shape, device=base.device)
    for d in range(add_of.shape[0]):
        logits = (base + projected[add_of[d]]).mul_(inv_scale[d][:, None]).add_(bias)  # [m, V]
        x = logits.log_softmax(-1)
        logp[d] = x.gather(-1, target[:, None])[:, 0]
        if d == 0:
            clean, p, lse = x, x.exp(), logits.double().logsumexp(-1)  # float64, as the kernel's
        else:
            kl[d] = torch.linalg.vecdot(p, clean - x)
    return logp, kl, p, lse


class CleanRowsStore(Protocol):
    def rows(self, first_sequence: int, n_rows: int, mean: torch.Tensor | None,
             compute: Callable[[], CleanRows]) -> CleanRows:
        """Return the CleanRows of the batch from first_sequence with n_rows predicted positions and this
        mean-ablation vector: kept ones, or compute() (then kept)."""


class HeadLosses:
    """A one-layer LM: the residual before the MLP is kept, and replacements are read out through its MLPHead;
    the clean rows come from `store` where one is given (sae/analysis/loss_cache.py)."""

    def __init__(self, model, head, device: torch.device, store: CleanRowsStore | None = None) -> None:
        self.model, self.head, self.device, self.store = model, head, device, store

    def forward(self, batch: torch.Tensor, final: bool = False) -> tuple[torch.Tensor, object, torch.Tensor | None]:
        from sae.lm.model import HOOK_POST, RESID_MID, activations_at, final_hook

        hooks = [RESID_MID, HOOK_POST, final_hook(self.model)] if final else [RESID_MID, HOOK_POST]
        acts = activations_at(self.model, batch.to(self.device), hooks)
        mid, post = acts[:2]
        return post.float().cpu(), (mid, post), acts[2].cpu() if final else None

    def sums(self, kept, batch, post, mean, reconstructions, first_sequence=None):
        mid, post_here = kept
        recon = {name: r.to(self.device) for name, r in reconstructions.items()}
        mean = None if mean is None else mean.to(self.device)
        clean = None
        if self.store is not None and first_sequence is not None:
            clean = self.store.rows(first_sequence, batch.shape[0] * (batch.shape[1] - 1), mean,
                                    lambda: clean_rows(self.head, mid, post_here, batch, mean))
            clean = clean.to(self.device)
        return head_losses(self.head, mid, post_here, batch, mean, recon, clean)


def loss_model(model, device: torch.device, tokens: np.ndarray | torch.Tensor, rows_per_forward: int,
               store: CleanRowsStore | None = None) -> LossModel:
    """Return the fastest LossModel that is exact for this LM (HeadLosses, keeping its clean rows in `store` if given,
    where its head reproduces the LM's own logits on the first two sequences of tokens [n_seq, T]; SplicedLosses
    else)."""
    probe = tokens[:2] if isinstance(tokens, torch.Tensor) else torch.from_numpy(np.asarray(tokens[:2], np.int64))
    head = mlp_head(model, probe.to(device))
    if head is None:
        return SplicedLosses(model, device, rows_per_forward)
    return HeadLosses(model, head, device, store)
