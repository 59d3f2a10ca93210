"""SAE training losses as plain autograd functions: the reference the fast path (sae/dictionary/fast/step.py) is checked against.

Shapes: x [B, d_in], pre / f [B, d_sae]. Conventions shared with sae/dictionary/fast/step.py (and SAELens):
    mse = Σ_d (x̂ − x)², averaged over the batch;  l1 = Σ_j |f_j|, averaged over the batch;
    aux (AuxK, Gao et al. 2024) = Σ_d (ê − e)² averaged over the batch, where e = x − x̂ (detached) and
    ê = W_dec-reconstruction (no bias) from the relu of the aux_k largest pre-activations among dead latents,
    added as aux_coefficient · min(n_dead / aux_k, 1) · aux (form "sae_lens", SAELens's scaling); form
    "normalised" (OpenAI's): aux / mean_batch Σ_d e², a normalised MSE, added as aux_coefficient · aux, so its
    pull does not shrink with the residual as training goes on nor depend on how many latents are dead;
    loss = mse + λ·l1 + that aux term.
BatchTopK (Bussmann et al. 2024) keeps the k·B largest relu pre-activations of the whole batch, so k is the
*mean* L0 per token; after training it is saved as a jumprelu with one global threshold (see train.py).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from sae.dictionary import architectures
from sae.dictionary.architectures import Activation, Architecture
from sae.dictionary.model import SparseAutoencoder, topk_activation


def batch_top(flat: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (values, indices) of the n largest entries of flat [M], exactly, ~5x faster than flat.topk(n).

    A strided 1/16 subsample gives a bound that about 1.5·n entries exceed; topk runs on those only. When fewer
    than n exceed it, the bound was too high and the full topk runs instead, so the result is always exact.
    """
    sub = flat[::16]
    bound = sub.topk(min(sub.numel(), int(1.5 * n / 16) + 1)).values[-1]
    candidates = torch.nonzero(flat >= bound).squeeze(1)  # [~1.5 n]
    if candidates.numel() < n:
        return flat.topk(n)
    values, picked = flat[candidates].topk(n)
    return values, candidates[picked]


def batchtopk_activate(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Return f [B, d_sae]: relu(pre) where it is among the k·B largest entries of the batch, else 0."""
    flat = torch.relu(pre).flatten()  # [B * d_sae]
    values, indices = batch_top(flat, min(k * pre.shape[0], flat.numel()))
    return torch.zeros_like(flat).scatter_(0, indices, values).view_as(pre)


def activate(pre: torch.Tensor, arch: Architecture, k: int | None) -> torch.Tensor:
    """Return training-time activations f [B, d_sae] from pre [B, d_sae] for an architecture's record."""
    if arch.activation is Activation.BATCHTOPK:
        return batchtopk_activate(pre, int(k))
    if arch.activation is Activation.TOPK:
        return topk_activation(pre, int(k))
    return torch.relu(pre)  # relu; a load-only jumprelu module trains as relu (its threshold is not learned here)


@dataclass(frozen=True)
class AuxK:
    """One batch's AuxK term (Gao et al. 2024): the latents it draws from, how many per token, its weight."""

    dead: torch.Tensor  # bool [d_sae]
    k: int  # latents per token: min(aux_k, n_dead)
    weight: float  # its factor in the loss: aux_coefficient, × min(n_dead / aux_k, 1) unless normalised
    normalised: bool = False  # aux divided by the residual's mean squared norm (OpenAI's form)


def auxk_term(dead: torch.Tensor | None, aux_coefficient: float, aux_k: int, normalised: bool = False) -> AuxK | None:
    """Return the batch's AuxK term, or None when it is off or no latent is dead."""
    n_dead = 0 if dead is None or aux_coefficient <= 0 else int(dead.sum())
    if n_dead == 0:
        return None
    weight = aux_coefficient if normalised else aux_coefficient * min(n_dead / aux_k, 1.0)
    return AuxK(dead, min(aux_k, n_dead), weight, normalised)


def aux_normaliser(residual: torch.Tensor) -> torch.Tensor:
    """Return what the aux loss is divided by for residual [B, d_in]: mean_batch Σ_d e² (normalised form)."""
    return residual.float().pow(2).sum(-1).mean().clamp_min(1e-12)


def aux_k_loss(sae: SparseAutoencoder, pre: torch.Tensor, residual: torch.Tensor, aux: AuxK) -> torch.Tensor:
    """Return the aux loss [] reconstructing residual [B, d_in] from the top aux.k dead pre [B, d_sae]."""
    masked = torch.where(aux.dead, pre, torch.full_like(pre, float("-inf")))
    values, indices = masked.topk(aux.k, dim=-1)  # [B, k]
    z = torch.zeros_like(pre).scatter_(-1, indices, torch.relu(values))  # [B, d_sae]
    recon = (z @ sae.W_dec).float()  # [B, d_in], no bias: it reconstructs an error
    loss = (recon - residual).pow(2).sum(-1).mean()
    return loss / aux_normaliser(residual) if aux.normalised else loss


def sae_loss(
    sae: SparseAutoencoder, x: torch.Tensor, *, architecture: str, k: int | None = None,
    l1_coefficient: float = 0.0, dead: torch.Tensor | None = None, aux_coefficient: float = 0.0,
    aux_k: int | None = None, precision: str = "fp32", aux_normalised: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Return (loss [] with its graph, detached parts: mse, l1, aux, l0 [], fired int64 [d_sae]) for x [B, d_in]."""
    arch = architectures.architecture(architecture)
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    with autocast:
        pre = sae.pre_activations(x)  # [B, d_sae]
        f = activate(pre, arch, k)
        x_hat = sae.decode(f)  # [B, d_in]
    pre, f, x_hat = pre.float(), f.float(), x_hat.float()
    mse = (x_hat - x).pow(2).sum(-1).mean()
    l1 = f.abs().sum(-1).mean()
    loss = mse + l1_coefficient * l1
    aux = x.new_zeros(())
    term = auxk_term(dead if arch.auxk else None, aux_coefficient, aux_k or sae.cfg.d_in // 2,
                     aux_normalised)
    if term is not None:
        with autocast:
            aux = aux_k_loss(sae, pre, (x - x_hat).detach(), term)
        loss = loss + term.weight * aux
    active = f > 0
    parts = dict(mse=mse.detach(), l1=l1.detach(), aux=aux.detach(), l0=active.sum(-1).float().mean(),
                 fired=active.sum(0))
    return loss, parts


@torch.no_grad()
def per_input_loss(sae: SparseAutoencoder, x: torch.Tensor, *, architecture: str, k: int | None,
                   l1_coefficient: float, chunk: int = 8192) -> torch.Tensor:
    """Return each input's loss [N] = Σ_d (x̂ − x)² + λ·Σ_j |f_j| (the quantity resampling weights by, squared)."""
    arch = architectures.architecture(architecture)
    out = []
    for start in range(0, len(x), chunk):
        xb = x[start: start + chunk]
        f = activate(sae.pre_activations(xb), arch, k)
        out.append((sae.decode(f) - xb).pow(2).sum(-1) + l1_coefficient * f.abs().sum(-1))
    return torch.cat(out)
