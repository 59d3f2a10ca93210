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

import torch

from sae.conventions import DENSE_DENSITY
from sae.dictionary.model import SparseAutoencoder


@torch.no_grad()
def geometric_median(x: torch.Tensor, iterations: int = 20, eps: float = 1e-6) -> torch.Tensor:
    """Return the geometric median [d] of points x [N, d] by Weiszfeld's iterations, started at the mean.

    The paper initialises b_dec there: unlike the mean it is not dragged by the few huge-norm activations. In float64,
    squared distances as ‖x‖² − 2 x·m + ‖m‖²: two matrix-vector products an iteration and no [N, d] temporaries
    (32,768 × 512: 0.17 against 0.54 s for x − m each iteration; the same float32 result here).
    """
    x = x.double()
    sq_norms = (x * x).sum(1)  # [N]
    median = x.mean(0)
    for _ in range(iterations):
        weights = (sq_norms - 2 * (x @ median) + median @ median).clamp_min(eps * eps).rsqrt()  # 1 / distance [N]
        new = (weights @ x) / weights.sum()
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
            # Two passes in x's dtype: the mean, then the squared deviations from it, both by torch's cascade sums
            # (~1e-7 relative here, far from zero included; a BLAS dot was 1e-5). torch.var_mean over dim 0 took
            # 11-16 ms of a ~119 ms TopK training step here, these two under 1 ms; float64 copies of x took ~6 ms.
            mean = x.mean(0)  # [d_in]
            batch.x_mean, batch.sq_err = mean.double(), float(sq_err)
            batch.x_m2 = float((x - mean).square_().sum())
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


PAIR_ROWS = 2048  # rows of x and x̂ in float64 at a time: 16 MB each at d_in 512, not the batch's 64 MB


def _pair_terms(x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, float]:
    """Return Σ over tokens of ‖x‖, ‖x̂‖, ‖x̂‖/‖x‖ (‖x‖ < 1e-4 counts as 1), ‖x̂‖², x·x̂ and cos(x, x̂): SAELens's
    l2 and cosine terms (its relative_reconstruction_bias is mean ‖x̂‖² / mean x·x̂, Marks et al.'s shrinkage).
    The per-token terms are made in float64 PAIR_ROWS rows at a time (each row's own: the same bits as all at once)."""
    norm_in, norm_out, dot = (torch.empty(len(x), dtype=torch.float64, device=x.device) for _ in range(3))  # [N]
    for r0 in range(0, len(x), PAIR_ROWS):
        rows = slice(r0, r0 + PAIR_ROWS)
        xr, hr = x[rows].double(), x_hat[rows].double()
        norm_in[rows], norm_out[rows], dot[rows] = xr.norm(dim=-1), hr.norm(dim=-1), (xr * hr).sum(-1)
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


@torch.no_grad()
def loss_recovered(model, tokens: torch.Tensor, sae: SparseAutoencoder, batch_rows: int = 32) -> dict:
    """Return the LM-loss metrics of `sae` spliced in on tokens [B, T] (LossSums.metrics), mean ablation by the mean
    activation over these tokens; by the same LossModel the analysis uses (sae.lm.head_losses.loss_model)."""
    from sae.lm.head_losses import loss_model
    from sae.lm.losses import LossSums, mean_activation
    from sae.lm.model import mlp_activations

    device = sae.W_enc.device
    mean = mean_activation(mlp_activations(model, tokens[s: s + batch_rows])
                           for s in range(0, len(tokens), batch_rows))
    lm, sums = loss_model(model, device, tokens, batch_rows), LossSums()
    for start in range(0, len(tokens), batch_rows):
        rows = tokens[start: start + batch_rows]
        post, kept, _ = lm.forward(rows)  # [b, T, d_mlp] float32 on CPU
        shared, own = lm.sums(kept, rows, post, mean, {"sae": sae(post.to(device)).cpu()})
        sums = sums.merge(shared).merge(own["sae"])
    return sums.metrics()
