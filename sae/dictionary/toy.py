"""Synthetic data with known features (Sharkey et al. 2022) and MMCS, to check that an SAE recovers them.

Data: n_features unit ground-truth directions g_i in R^d (random Gaussian, normalised). A sample is
x = Σ_i c_i g_i over the features active in it, with c_i ~ U[0, 1]. Feature i is active with probability
p_i ∝ decay^i, scaled so that Σ p_i = mean_active (about 5 features per sample by default).

Correlated variant (`group_size > 1`): the features are dealt at random into groups of `group_size`, and whether
they fire is drawn through a Gaussian copula. Each feature gets z_i = √ρ·u_group + √(1−ρ)·e_i with independent
standard normals u (one per group per sample) and e (one per feature per sample), and fires when Φ(z_i) < p_i.
So every feature keeps exactly its marginal probability p_i while features of one group tend to fire together
(pairwise latent correlation ρ = `correlation`); features in different groups stay independent.

MMCS (mean max cosine similarity) = mean over true features of the best cosine with any decoder row: 1.0 means
every ground-truth direction has a dictionary element pointing exactly along it.

SAEs are trained by the project's own loop (sae.dictionary.train.fit_sae), so the toy checks the recipe real SAEs get;
λ is therefore on inputs scaled to mean norm √d, as for `monoscope train-sae`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sae.activations import ArrayActivations
from sae.dictionary.architectures import RELU
from sae.dictionary.config import SAETrainConfig, ToyConfig
from sae.dictionary.model import SparseAutoencoder
from sae.dictionary.train import fit_sae


class ToyData:
    """Ground-truth directions [n_features, d] and a sampler of activations drawn from them."""

    def __init__(self, cfg: ToyConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.generator = torch.Generator().manual_seed(seed)
        g = torch.randn(cfg.n_features, cfg.d, generator=self.generator)
        self.directions = g / g.norm(dim=1, keepdim=True)  # [n_features, d]
        self.probabilities = firing_probabilities(cfg)  # [n_features]
        self.group = torch.randperm(cfg.n_features, generator=self.generator) // cfg.group_size  # [n_features]

    def active(self, n: int) -> torch.Tensor:
        """Return which features fire in each of n samples, bool [n, n_features]."""
        cfg, gen = self.cfg, self.generator
        if cfg.group_size == 1:
            return torch.rand(n, cfg.n_features, generator=gen) < self.probabilities
        n_groups = int(self.group.max()) + 1
        shared = torch.randn(n, n_groups, generator=gen)[:, self.group]  # [n, n_features]
        own = torch.randn(n, cfg.n_features, generator=gen)
        z = math.sqrt(cfg.correlation) * shared + math.sqrt(1 - cfg.correlation) * own
        return torch.special.ndtr(z) < self.probabilities

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (x [n, d], coefficients [n, n_features]) for n fresh samples."""
        coefficients = torch.rand(n, self.cfg.n_features, generator=self.generator) * self.active(n)
        return coefficients @ self.directions, coefficients


def firing_probabilities(cfg: ToyConfig) -> torch.Tensor:
    """Return p_i ∝ decay^i [n_features], scaled to sum to mean_active (capped at 1, the excess re-spread)."""
    weights = cfg.decay ** torch.arange(cfg.n_features, dtype=torch.float64)
    p = weights * cfg.mean_active / weights.sum()
    for _ in range(50):  # a cap at 1 only matters for extreme settings; re-spread what it removes
        over = p > 1
        if not over.any():
            break
        p[over] = 1.0
        free = ~over
        p[free] *= (cfg.mean_active - over.sum()) / p[free].sum()
    return p.float()


def mmcs(decoder: torch.Tensor, directions: torch.Tensor) -> float:
    """Return the mean over true directions [n_features, d] of the best cosine with a decoder row [d_sae, d]."""
    dec = decoder / decoder.norm(dim=1, keepdim=True).clamp_min(1e-12)
    true = directions / directions.norm(dim=1, keepdim=True)
    return float((true @ dec.T).max(dim=1).values.mean())  # [n_features, d_sae] -> [n_features] -> mean


def random_dictionary(d_sae: int, d: int, seed: int = 1) -> torch.Tensor:
    """Return d_sae random unit rows [d_sae, d]: the MMCS baseline a trained SAE must beat by far."""
    w = torch.randn(d_sae, d, generator=torch.Generator().manual_seed(seed))
    return w / w.norm(dim=1, keepdim=True)


@dataclass(frozen=True)
class ToyResult:
    l1: float
    d_sae: int
    mmcs: float
    l0: float  # mean active latents per sample on held-out samples
    mse: float  # squared error summed over d, mean over held-out samples
    fvu: float  # fraction of variance unexplained
    dead: int  # latents that never fired on held-out samples


@torch.no_grad()
def evaluate(sae: SparseAutoencoder, data: ToyData, x: torch.Tensor, l1: float) -> ToyResult:
    """Return the toy metrics of a trained SAE on held-out samples x [n, d]."""
    f = sae.encode(x)  # [n, d_sae]
    err = ((sae.decode(f) - x) ** 2).sum(dim=1)  # [n]
    total = ((x - x.mean(dim=0)) ** 2).sum(dim=1).mean()
    return ToyResult(l1=l1, d_sae=sae.cfg.d_sae, mmcs=mmcs(sae.W_dec, data.directions),
                     l0=float((f > 0).sum(dim=1).float().mean()), mse=float(err.mean()),
                     fvu=float(err.mean() / total), dead=int(((f > 0).sum(dim=0) == 0).sum()))


def fit_toy_sae(x: torch.Tensor, *, d_sae: int, l1: float, lr: float = 1e-3, batch_size: int = 256,
                epochs: int = 5, seed: int = 0) -> SparseAutoencoder:
    """Return a ReLU SAE trained on x [n, d] by the project's training loop (sae.dictionary.train.fit_sae).

    So the toy judges the recipe every real SAE gets: inputs scaled to mean norm √d (λ is on that scale, as for
    `train-sae`), b_dec at the geometric median, unit-norm decoder rows, λ warm-up, resampling of dead latents.
    """
    cfg = SAETrainConfig(architecture=RELU.name, d_sae=d_sae, l1_coefficient=l1, lr=lr, batch_size=batch_size,
                         tokens=len(x) * epochs, seed=seed, precision="fp32", log_every=10**9,
                         checkpoint_every=10**9, init_sample_tokens=min(len(x), 8192),
                         resample_sample_tokens=min(len(x), 8192))
    source = ArrayActivations(np.ascontiguousarray(x.numpy(), dtype=np.float32), seed=seed,
                              heldout_fraction=0.0, name="toy")
    sae, _, _ = fit_sae(cfg, source, device="cpu", progress=False, log=lambda _: None)
    return sae


def sweep(cfg: ToyConfig, *, samples: int, l1s: list[float], d_saes: list[int], seed: int = 0,
          epochs: int = 5, progress=None) -> list[ToyResult]:
    """Return one ToyResult per (λ, d_sae) pair, all trained on the same samples and judged on the same held-out."""
    data = ToyData(cfg, seed=seed)
    x, _ = data.sample(samples)  # [samples, d]
    heldout, _ = data.sample(max(2000, samples // 10))
    results = []
    for d_sae in d_saes:
        for l1 in l1s:
            sae = fit_toy_sae(x, d_sae=d_sae, l1=l1, epochs=epochs, seed=seed)
            results.append(evaluate(sae, data, heldout, l1))
            if progress:
                progress(results[-1])
    return results


def format_table(results: list[ToyResult], random_mmcs: float | None = None) -> str:
    """Return the sweep as a fixed-width text table, one row per (d_sae, λ)."""
    lines = [f"{'d_sae':>6} {'l1':>8} {'MMCS':>6} {'L0':>7} {'MSE':>8} {'FVU':>6} {'dead':>5}"]
    for r in results:
        lines.append(f"{r.d_sae:>6} {r.l1:>8.4g} {r.mmcs:>6.3f} {r.l0:>7.2f} {r.mse:>8.4f} {r.fvu:>6.3f} {r.dead:>5}")
    if random_mmcs is not None:
        lines.append(f"random dictionary MMCS: {random_mmcs:.3f}")
    return "\n".join(lines)
