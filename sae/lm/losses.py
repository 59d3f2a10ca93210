"""The LM-loss metrics: what replacing the MLP's activations (by zeros, their mean, an SAE's reconstruction) costs
the LM in next-token loss and KL divergence, defined once for training's evaluation and for the analysis.

Two ways to the same sums (up to float rounding; tests/sae/test_metrics.py):
- `HeadLosses`, a one-layer LM (sae.lm.heads.mlp_head): the forward keeps the residual before the MLP too, and each
  replacement is one MLP output and one unembedding (`head_losses`), no further forward; what the clean LM gives
  (`CleanRows`: its loss, the ablations', and what a splice's KL needs of the clean distribution) does not depend
  on the SAE, so it may be kept and a later SAE pays one unembedding a position;
- `SplicedLosses`, any other LM: one forward per replacement with the activations spliced in at the hook
  (`add_losses`).
`loss_model` picks the fastest exact one for an LM. The analysis's pass 1 uses it through `LossModel`'s two calls:
one forward per batch gives the activations every basis encodes, and the sums come after the bases have encoded,
from their reconstructions (no second encode).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

import numpy as np
import torch

from sae.compiled import kernels
from sae.conventions import BOS_POSITION
from sae.lm.heads import MLPHead


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
    u, lse = torch.empty(n, mid.shape[-1], device=post.device), torch.empty(n, device=post.device)
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
        scale = head.readout.scale(centred[:m][None] + centred[add_of])[..., 0]  # [D, m] the norm's divisors
        if compiled is None:
            logp[:, rows], kl[:, rows], probs, lse[rows] = _replaced_logprobs(projected, local, add_of, scale, bias,
                                                                              targets[rows])
        else:
            sums, probs = torch.empty(len(names), m), torch.empty(m, projected.shape[1])
            compiled.replaced_logprobs(projected.numpy(), add_of.numpy(), (1.0 / scale).numpy(), bias.numpy(),
                                       targets[rows].numpy(), logp[:, rows].numpy(), kl[:, rows].numpy(),
                                       sums.numpy(), probs.numpy(), lse[rows].numpy(), 4 * torch.get_num_threads())
            bad = torch.nonzero(compiled.out_of_range(sums))  # (distribution, row) whose sums left the range
            if len(bad):  # never the clean row, whose sum lies in [1, d_vocab]
                d, i = bad[:, 0], bad[:, 1]
                redo_logp, redo_kl, _, _ = _replaced_logprobs(projected, i, torch.stack([add_of[0, i], add_of[d, i]]),
                                                              torch.stack([scale[0, i], scale[d, i]]), bias,
                                                              targets[rows][i])
                logp[d, r0 + i], kl[d, r0 + i] = redo_logp[1], redo_kl[1]
        torch.mm(probs, W_U.T, out=u[rows])
        direction[rows] = ((centred[:m] + centred[m: 2 * m]) * head.readout.w).double() / scale[0, :, None].double()
    bos = _bos_rows(b, n_ctx, post.device)
    logp[1:, bos] = logp[0, bos]  # BOS keeps its activations: its ablated distributions are the clean one
    kl[1:, bos] = 0.0
    return CleanRows(names, logp, kl, u, torch.linalg.vecdot(direction, u.double()) - lse.double())


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
    logp, lse = torch.empty(n, device=mid.device), torch.empty(n, device=mid.device)
    dot = torch.empty(n, dtype=torch.float64, device=mid.device)  # (c(r)·w)·u / s
    ro = head.readout
    for r0 in range(0, n, HEAD_ROWS):
        rows = slice(r0, min(r0 + HEAD_ROWS, n))
        centred, projected = ro.project(mid[rows] + head.mlp_out(spliced[rows]))
        scale = ro.scale(centred)[:, 0]
        dot[rows] = torch.linalg.vecdot((centred * ro.w).double(), clean.u[rows].double()) / scale.double()
        if compiled is None:
            x = projected.div_(scale[:, None]).add_(ro.bias)
            lse[rows] = x.logsumexp(-1)
            logp[rows] = x.gather(-1, targets[rows][:, None])[:, 0] - lse[rows]
        else:
            compiled.spliced_logprobs(projected.numpy(), (1.0 / scale).numpy(), ro.bias.numpy(),
                                      targets[rows].numpy(), logp[rows].numpy(), lse[rows].numpy(),
                                      4 * torch.get_num_threads())
    kl = (clean.kappa - dot + lse.double()).float()
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


def _replaced_logprobs(projected: torch.Tensor, base_of: torch.Tensor, add_of: torch.Tensor, scale: torch.Tensor,
                       bias: torch.Tensor, target: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """sae.softmax_kernels.replaced_logprobs in torch ops (off CPU, without numba, and for the rows whose sums left
    the kernel's range): position i's logits under distribution d are (projected[base_of[i]] +
    projected[add_of[d, i]]) / scale[d, i] + bias, d = 0 the clean ones. Returns (logp, kl) [D, m]: the
    log-probability of target [m] and KL(clean || d); the clean probabilities [m, V] and logits' log-sum-exp [m]."""
    base = projected[base_of]  # [m, V]
    logp, kl = torch.empty(add_of.shape, device=base.device), torch.zeros(add_of.shape, device=base.device)
    for d in range(add_of.shape[0]):
        logits = (base + projected[add_of[d]]).div_(scale[d][:, None]).add_(bias)  # [m, V]
        x = logits.log_softmax(-1)
        logp[d] = x.gather(-1, target[:, None])[:, 0]
        if d == 0:
            clean, p, lse = x, x.exp(), logits[:, 0] - x[:, 0]
        else:
            kl[d] = torch.linalg.vecdot(p, clean - x)
    return logp, kl, p, lse


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
    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, object]:
        """Return (the hook's activations [B, T, d_in] float32 on CPU, what `sums` needs of this forward)."""

    def sums(self, kept: object, batch: torch.Tensor, post: torch.Tensor, mean: torch.Tensor | None,
             reconstructions: dict[str, torch.Tensor], first_sequence: int | None = None
             ) -> tuple[LossSums, dict[str, LossSums]]:
        """Return (the sums every basis shares: clean, zero and mean ablation; each reconstruction's own) on batch
        [B, T]; reconstructions: basis name -> [B, T, d_in] on CPU. first_sequence: where the batch starts in the
        analysed tokens, for a model that keeps what it computed of the clean LM (None: nothing kept)."""


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

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, object]:
        from sae.lm.model import mid_and_post

        mid, post = mid_and_post(self.model, batch.to(self.device))
        return post.float().cpu(), (mid, post)

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


class SplicedLosses:
    """Any LM: the clean and every replaced forward run whole, rows_per_forward sequences at a time (their logits
    [rows, T, d_vocab] dominate memory)."""

    def __init__(self, model, device: torch.device, rows_per_forward: int) -> None:
        self.model, self.device, self.rows = model, device, rows_per_forward

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, object]:
        from sae.lm.model import mlp_activations

        return mlp_activations(self.model, batch.to(self.device)).float().cpu(), None

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


def loss_model(model, device: torch.device, tokens: np.ndarray | torch.Tensor, rows_per_forward: int,
               store: CleanRowsStore | None = None) -> LossModel:
    """Return the fastest LossModel that is exact for this LM (HeadLosses, keeping its clean rows in `store` if given,
    where its head reproduces the LM's own logits on the first two sequences of tokens [n_seq, T])."""
    from sae.lm.heads import mlp_head

    probe = tokens[:2] if isinstance(tokens, torch.Tensor) else torch.from_numpy(np.asarray(tokens[:2], np.int64))
    head = mlp_head(model, probe.to(device))
    if head is None:
        return SplicedLosses(model, device, rows_per_forward)
    return HeadLosses(model, head, device, store)
