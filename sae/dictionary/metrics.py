"""What an SAE's quality is judged by, defined once for training's log and evaluation and for the analysis:
reconstruction (MSE, FVU), sparsity (L0, L1, density), dead and dense latents, and loss recovered when the
reconstruction is spliced into the LM. Plus the data statistics training starts from (geometric median for b_dec).

MSE = Σ‖x − x̂‖² / (N·d_in): the mean over tokens AND dimensions, as SAELens's evals report it, in raw activation
units. (The training objective sums over d_in; that term stays inside the loss and is never reported as MSE.)
FVU (fraction of variance unexplained) = Σ‖x − x̂‖² / Σ‖x − x̄‖², x̄ the per-dimension mean over all the tokens
measured: scale-free, so it compares across models.
Loss recovered = (L_zero_ablation − L_sae) / (L_zero_ablation − L_clean), on held-out tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable

import torch

from sae.conventions import BOS_POSITION, DENSE_DENSITY
from sae.dictionary.model import SparseAutoencoder

if TYPE_CHECKING:  # sae.lm imports transformer_lens: not needed to define this module
    from sae.lm.model import MLPHead


@torch.no_grad()
def geometric_median(x: torch.Tensor, iterations: int = 20, eps: float = 1e-6) -> torch.Tensor:
    """Return the geometric median [d] of points x [N, d] by Weiszfeld's iterations, started at the mean.

    The paper initialises b_dec there: unlike the mean it is not dragged by the few huge-norm activations.
    """
    x = x.double()
    median = x.mean(0)
    for _ in range(iterations):
        distances = (x - median).norm(dim=1).clamp_min(eps)  # [N]
        weights = 1.0 / distances
        new = (weights[:, None] * x).sum(0) / weights.sum()
        if (new - median).norm() <= eps * max(1.0, float(median.norm())):
            median = new
            break
        median = new
    return median.float()


class FiringTracker:
    """Per-latent firing history: the step each latent last fired (dead = silent for a window) and counts
    since the last report (density, dense count)."""

    def __init__(self, d_sae: int, device: torch.device | str = "cpu") -> None:
        self.last_fired = torch.zeros(d_sae, dtype=torch.int64, device=device)  # step of last firing (0: start)
        self.counts = torch.zeros(d_sae, dtype=torch.int64, device=device)  # firings since the last report
        self.tokens = 0

    def update(self, step: int, fired: torch.Tensor, n_tokens: int) -> None:
        """Record one batch of n_tokens at `step` (1-based) with per-latent firing counts fired [d_sae]."""
        self.last_fired[fired > 0] = step
        self.counts += fired.to(self.counts.device)
        self.tokens += n_tokens

    def dead(self, step: int, window: int) -> torch.Tensor:
        """Return bool [d_sae]: latents that have not fired during the last `window` steps."""
        return (step - self.last_fired) >= window

    def report(self) -> tuple[torch.Tensor, int]:
        """Return (density [d_sae] since the last report, dense count) and start a new report period."""
        density = self.counts.double() / max(1, self.tokens)
        self.counts.zero_()
        self.tokens = 0
        return density, int((density > DENSE_DENSITY).sum())

    def state_dict(self) -> dict:
        return {"last_fired": self.last_fired.cpu(), "counts": self.counts.cpu(), "tokens": self.tokens}

    def load_state_dict(self, state: dict) -> None:
        self.last_fired.copy_(state["last_fired"])
        self.counts.copy_(state["counts"])
        self.tokens = int(state["tokens"])


# What SAELens's run_evals reports about a reconstruction, under its names (see ReconstructionSums.metrics).
SAELENS_RECONSTRUCTION_METRICS = ("explained_variance", "l2_norm_in", "l2_norm_out", "l2_ratio",
                                  "relative_reconstruction_bias", "cossim")


@dataclass
class ReconstructionSums:
    """Mergeable one-pass sums behind mse, fvu, l0 and l1: fed batch by batch (training's log, held-out
    evaluation, each analysis shard) and merged in any order, so every report computes the same definition.

    The per-dimension mean and the squared deviations from it merge by Chan's parallel update: exact FVU
    without a second pass and without the cancellation of Σx² − (Σx)²/N.
    """

    n_tokens: int = 0
    nnz: float = 0.0  # firing latents, summed over tokens
    l1: float = 0.0  # Σ_tokens Σ_j |f_j|
    sq_err: float = 0.0  # Σ_tokens ‖x − x̂‖²
    x_mean: torch.Tensor | None = None  # [d_in] float64, mean of the x given so far; None: no reconstruction
    x_m2: float = 0.0  # Σ_tokens ‖x − x_mean‖²
    # Σ over tokens of the terms of SAELens's eval metrics, when x̂ itself was given (see `_pair_terms`)
    pair: dict[str, float] = field(default_factory=dict)

    @torch.no_grad()
    def add(self, n_tokens: int, nnz: float, *, l1: float = 0.0, x: torch.Tensor | None = None,
            sq_err: float = 0.0, x_hat: torch.Tensor | None = None) -> None:
        """Add a batch of n_tokens; with its inputs x [n_tokens, d_in] and their Σ‖x − x̂‖² for reconstruction, and
        x̂ [n_tokens, d_in] itself for SAELens's norm and cosine metrics."""
        batch = ReconstructionSums(n_tokens, float(nnz), float(l1))
        if x is not None:
            mean = x.mean(0, dtype=torch.float64)  # [d_in]
            batch.x_mean, batch.sq_err = mean, float(sq_err)
            batch.x_m2 = float((x - mean.to(x.dtype)).pow(2).sum(dtype=torch.float64))
            if x_hat is not None:
                batch.pair = _pair_terms(x, x_hat)
        merged = self.merge(batch)
        self.__dict__.update(merged.__dict__)

    def merge(self, other: "ReconstructionSums") -> "ReconstructionSums":
        """Return the sums over both sets of tokens."""
        n = self.n_tokens + other.n_tokens
        out = ReconstructionSums(n, self.nnz + other.nnz, self.l1 + other.l1, self.sq_err + other.sq_err)
        out.pair = {k: self.pair.get(k, 0.0) + other.pair.get(k, 0.0) for k in {*self.pair, *other.pair}}
        if self.x_mean is None or other.x_mean is None:
            out.x_mean, out.x_m2 = (self.x_mean, self.x_m2) if other.x_mean is None else (other.x_mean, other.x_m2)
            return out
        delta = other.x_mean.to(self.x_mean.device) - self.x_mean  # [d_in]
        out.x_mean = self.x_mean + delta * (other.n_tokens / max(n, 1))
        out.x_m2 = self.x_m2 + other.x_m2 + float(delta @ delta) * self.n_tokens * other.n_tokens / max(n, 1)
        return out

    def metrics(self, scale: float = 1.0) -> dict:
        """Return {mse, fvu, l0, l1} per token, and SAELens's eval metrics under its names where x̂ was given
        (explained_variance = 1 − fvu, l2_norm_in, l2_norm_out, l2_ratio, relative_reconstruction_bias, cossim);
        None where they cannot be computed.

        scale: the factor the inputs were multiplied by (training's activation scaling); mse and the norms are
        reported in the units of x / scale, the raw activations.
        """
        n = max(self.n_tokens, 1)
        recon = self.x_mean is not None
        mse = self.sq_err / (n * len(self.x_mean)) / scale ** 2 if recon else None
        fvu = self.sq_err / self.x_m2 if recon and self.x_m2 > 0 else None
        out = {"mse": mse, "fvu": fvu, "l0": self.nnz / n, "l1": self.l1 / n}
        if self.pair:
            p, m = self.pair, max(self.pair["n"], 1)
            out |= {"explained_variance": None if fvu is None else 1 - fvu,
                    "l2_norm_in": p["norm_in"] / m / scale, "l2_norm_out": p["norm_out"] / m / scale,
                    "l2_ratio": p["norm_ratio"] / m,
                    "relative_reconstruction_bias": p["out_sq"] / p["dot"] if p["dot"] else None,
                    "cossim": p["cos"] / m}
        return out


def _pair_terms(x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, float]:
    """Return Σ over tokens of ‖x‖, ‖x̂‖, ‖x̂‖/‖x‖ (‖x‖ < 1e-4 counts as 1), ‖x̂‖², x·x̂ and cos(x, x̂): SAELens's
    l2 and cosine terms (its relative_reconstruction_bias is mean ‖x̂‖² / mean x·x̂, Marks et al.'s shrinkage)."""
    x, x_hat = x.double(), x_hat.double()
    norm_in, norm_out = x.norm(dim=-1), x_hat.norm(dim=-1)  # [N]
    dot = (x * x_hat).sum(-1)
    return {"n": float(len(x)), "norm_in": float(norm_in.sum()), "norm_out": float(norm_out.sum()),
            "norm_ratio": float((norm_out / torch.where(norm_in < 1e-4, 1.0, norm_in)).sum()),
            "out_sq": float(norm_out.pow(2).sum()), "dot": float(dot.sum()),
            "cos": float((dot / (norm_in * norm_out).clamp_min(1e-12)).sum())}


@torch.no_grad()
def reconstruction_metrics(sae: SparseAutoencoder, x: torch.Tensor, chunk: int = 8192) -> dict:
    """Return {mse, fvu, l0, l1, density [d_sae] tensor} of `sae` on activations x [N, d_in]."""
    device = sae.W_enc.device
    sums = ReconstructionSums()
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.float64, device=device)
    for start in range(0, len(x), chunk):
        xb = x[start: start + chunk].to(device, torch.float32)  # [b, d_in]
        f = sae.encode(xb)  # [b, d_sae]
        active = f > 0
        x_hat = sae.decode(f)
        sums.add(len(xb), float(active.sum()), l1=float(f.abs().double().sum()), x=xb,
                 sq_err=float((x_hat - xb).double().pow(2).sum()), x_hat=x_hat)
        fired += active.sum(0)
    return {**sums.metrics(), "density": (fired / max(1, len(x))).cpu()}


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


HEAD_ROWS = 256  # predicted positions per chunk of head_losses: their [rows, d_vocab] log-probabilities stay in cache


@torch.no_grad()
def head_losses(head: MLPHead, resid_mid: torch.Tensor, post: torch.Tensor, tokens: torch.Tensor,
                mean: torch.Tensor | None, reconstructions: dict[str, torch.Tensor]
                ) -> tuple[LossSums, dict[str, LossSums]]:
    """Return the sums `add_losses` returns (its `shared` and `own`) for a one-layer LM, from its residual before the
    MLP resid_mid [b, T, d_model] and the hook's activations post [b, T, d_mlp] (sae.lm.model.mid_and_post) on
    tokens [b, T], with no forward (sae.lm.model.MLPHead).

    reconstructions: name -> the SAE's reconstruction of post [b, T, d_mlp] (a splice's output).
    The final norm's projection is linear, so the logits of resid_mid + out are (P(resid_mid) + P(out)) / scale(...)
    + bias: one unembedding of resid_mid, one of the clean MLP output and one per reconstruction serve every
    replacement (zero and mean ablation add a constant row). KL(clean || replaced) per position is
    Σ p·log p − Σ p·log q, so the clean distribution is exponentiated once.
    """
    b, n_ctx, d_mlp = post.shape
    n = b * (n_ctx - 1)  # predicted positions: every one but the last of each sequence
    mid = resid_mid[:, :-1].reshape(n, -1)
    clean_post = post[:, :-1].reshape(n, d_mlp)
    targets = tokens[:, 1:].reshape(n, 1).to(post.device)
    bos = torch.arange(n, device=post.device) % (n_ctx - 1) == BOS_POSITION  # [n] BOS keeps its own activations
    outs = {"zero": head.b_out} | ({} if mean is None else {"mean": head.mlp_out(mean[None])[0]})
    constants = {name: head.readout.project(out[None]) for name, out in outs.items()}  # (c(out), P(out) [1, V])
    recon = {name: r[:, :-1].reshape(n, d_mlp) for name, r in reconstructions.items()}
    ce = dict.fromkeys(["clean", *constants, *recon], 0.0)
    kl = dict.fromkeys([*constants, *recon], 0.0)
    for r0 in range(0, n, HEAD_ROWS):
        rows = slice(r0, min(r0 + HEAD_ROWS, n))
        m = rows.stop - r0
        own = [clean_post[rows]] + [r[rows] for r in recon.values()]
        centred, projected = head.readout.project(torch.cat([mid[rows]] + [head.mlp_out(o) for o in own]))
        (c_mid, *c_outs), (p_mid, *p_outs) = centred.split(m), projected.split(m)
        kept = torch.nonzero(bos[rows])[:, 0]
        target = targets[rows]

        def logprobs(c_out: torch.Tensor, p_out: torch.Tensor) -> torch.Tensor:  # [m, V]
            scale = head.readout.scale(c_mid + c_out)
            return (p_mid + p_out).div_(scale).add_(head.readout.bias).log_softmax(-1)

        lp = logprobs(c_outs[0], p_outs[0])
        p = lp.exp()
        neg_entropy = _row_dot(p, lp)  # [m] Σ p log p
        ce["clean"] -= float(lp.gather(-1, target).sum(dtype=torch.float64))
        replaced = constants | dict(zip(recon, zip(c_outs[1:], p_outs[1:])))  # name -> (c(out), P(out))
        for name, (c_out, p_out) in replaced.items():
            lq = logprobs(c_out, p_out).index_copy_(0, kept, lp[kept])
            ce[name] -= float(lq.gather(-1, target).sum(dtype=torch.float64))
            kl[name] += float((neg_entropy - _row_dot(p, lq)).sum(dtype=torch.float64))
    shared = LossSums(n, {k: ce[k] for k in ("clean", *constants)}, {k: kl[k] for k in constants})
    return shared, {name: LossSums(0, {"spliced": ce[name]}, {"spliced": kl[name]}) for name in recon}


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Return the dot product of each row [N] of a and b [N, V], without an [N, V] temporary."""
    return torch.linalg.vecdot(a, b)


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


@torch.no_grad()
def loss_recovered(model, tokens: torch.Tensor, sae: SparseAutoencoder, batch_rows: int = 32) -> dict:
    """Return the LM-loss metrics of `sae` spliced in on tokens [B, T] (LossSums.metrics), mean ablation by the mean
    activation over these tokens."""
    from sae.lm.model import lm_logits, mid_and_post, mlp_activations, mlp_head

    device = sae.W_enc.device
    mean = mean_activation(mlp_activations(model, tokens[s: s + batch_rows])
                           for s in range(0, len(tokens), batch_rows))

    def splice(act: torch.Tensor) -> torch.Tensor:  # [b, T, d_mlp] -> same, through the SAE
        return sae(act.to(device, torch.float32))

    head = mlp_head(model, tokens[:2])
    sums = LossSums()
    for start in range(0, len(tokens), batch_rows):
        rows = tokens[start: start + batch_rows]
        if head is None:
            _, shared, own = add_losses(lambda t, replace: lm_logits(model, t, replace), rows, mean, {"sae": splice})
        else:
            mid, post = mid_and_post(model, rows)
            shared, own = head_losses(head, mid, post, rows, mean, {"sae": splice(post).to(post.device)})
        sums = sums.merge(shared).merge(own["sae"])
    return sums.metrics()
