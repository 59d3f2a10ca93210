"""What an SAE's quality is judged by: reconstruction (MSE, FVU), sparsity (L0, L1, density), dead and dense
latents, and loss recovered when the reconstruction is spliced into the LM. Plus the data statistics training
starts from (geometric median for b_dec, the mean norm for scaling).

FVU (fraction of variance unexplained) = Σ‖x − x̂‖² / Σ‖x − mean(x)‖²: scale-free, so it compares across models.
Loss recovered = (L_zero_ablation − L_sae) / (L_zero_ablation − L_clean), on held-out tokens.
"""

from __future__ import annotations

import torch

from sae.conventions import DENSE_DENSITY
from sae.dictionary.model import SparseAutoencoder

DENSE_THRESHOLD = DENSE_DENSITY


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
        return density, int((density > DENSE_THRESHOLD).sum())

    def state_dict(self) -> dict:
        return {"last_fired": self.last_fired.cpu(), "counts": self.counts.cpu(), "tokens": self.tokens}

    def load_state_dict(self, state: dict) -> None:
        self.last_fired.copy_(state["last_fired"])
        self.counts.copy_(state["counts"])
        self.tokens = int(state["tokens"])


@torch.no_grad()
def reconstruction_metrics(sae: SparseAutoencoder, x: torch.Tensor, chunk: int = 8192) -> dict:
    """Return {mse, fvu, l0, l1, density [d_sae] tensor} of `sae` on activations x [N, d_in] (mean per token)."""
    device = sae.W_enc.device
    sq_err = l0 = l1 = 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.float64, device=device)
    mean = x.double().mean(0).to(device)
    total_var = 0.0
    for start in range(0, len(x), chunk):
        xb = x[start: start + chunk].to(device, torch.float32)  # [b, d_in]
        f = sae.encode(xb)  # [b, d_sae]
        x_hat = sae.decode(f)
        sq_err += float((x_hat - xb).double().pow(2).sum())
        total_var += float((xb.double() - mean).pow(2).sum())
        active = f > 0
        l0 += float(active.sum())
        l1 += float(f.abs().double().sum())
        fired += active.sum(0)
    n = max(1, len(x))
    return {"mse": sq_err / n, "fvu": sq_err / max(total_var, 1e-30), "l0": l0 / n, "l1": l1 / n,
            "density": (fired / n).cpu()}


@torch.no_grad()
def loss_recovered(model, tokens: torch.Tensor, sae: SparseAutoencoder, batch_rows: int = 32) -> dict:
    """Return clean, zero-ablated and SAE-spliced LM losses on tokens [B, T] and the fraction of loss recovered."""
    from sae.lm.model import lm_loss

    device = sae.W_enc.device

    def splice(act: torch.Tensor) -> torch.Tensor:  # [b, T, d_mlp] -> same, through the SAE
        return sae(act.to(device, torch.float32)).to(act.device)

    totals = {"loss_clean": 0.0, "loss_zero_ablation": 0.0, "loss_reconstructed": 0.0}
    for start in range(0, len(tokens), batch_rows):
        batch = tokens[start: start + batch_rows]
        weight = len(batch) / len(tokens)
        totals["loss_clean"] += float(lm_loss(model, batch)) * weight
        totals["loss_zero_ablation"] += float(lm_loss(model, batch, replace_mlp_post=torch.zeros_like)) * weight
        totals["loss_reconstructed"] += float(lm_loss(model, batch, replace_mlp_post=splice)) * weight
    gap = totals["loss_zero_ablation"] - totals["loss_clean"]
    recovered = (totals["loss_zero_ablation"] - totals["loss_reconstructed"]) / gap if abs(gap) > 1e-12 else None
    return {**totals, "loss_recovered": recovered}
