"""The dictionary package's configs (SAE training, toy data), validated, and the lr / λ schedules training implies.

Torch-free (torch is imported inside the functions that need it), so the command line reads these defaults without
loading torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sae.dictionary.architectures import RELU, TOPK, Architecture, architecture
from sae.errors import MonoscopeError

if TYPE_CHECKING:
    import torch

    from sae.dictionary.model import SAEConfig


@dataclass(frozen=True)
class SAETrainConfig:
    """Everything that decides the trained SAE. Fractions are of the training steps (the paper's schedule of
    resampling at 25k/50k/75k/100k of 1M steps with a 12.5k-step dead window is (0.025, 0.05, 0.075, 0.1), 0.0125;
    the default spreads resampling further because our runs are ~1,000 steps, not 1M)."""

    architecture: str = RELU.name  # relu (paper: ReLU + L1) | topk | batchtopk (saved as jumprelu): architectures.py
    d_sae: int = 4096
    l1_coefficient: float = 2.0  # λ, on activations scaled to mean norm √d_in; relu only
    k: int | None = None  # topk / batchtopk: active latents per token (batchtopk: on average)
    lr: float = 1e-3
    tokens: int = 3_000_000
    batch_size: int = 4096
    seed: int = 0
    lr_warmup_frac: float = 0.01  # linear warm-up of the lr
    lr_decay_frac: float = 0.2  # linear decay of the lr to 0 over the last fraction
    l1_warmup_frac: float = 0.05  # λ ramps up from 0 (avoids killing latents in the first steps)
    resample_at: tuple[float, ...] = (0.1, 0.2, 0.35, 0.5, 0.65)
    dead_window_frac: float = 0.05  # dead = no firing during this fraction of training (resampling, AuxK, metrics)
    resample_sample_tokens: int = 16_384  # inputs the resampling loss is computed on (paper: 819,200)
    resample_from: str = "x_minus_b_dec"  # or x (the paper's words): a resampled latent's direction (resample.py)
    aux_coefficient: float = 1 / 32  # AuxK (topk / batchtopk), Gao et al.
    aux_loss: str = "sae_lens"  # sae_lens | normalised: the AuxK form (sae/dictionary/losses.py)
    aux_k: int | None = None  # None: d_in // 2
    b_dec_init: str = "geometric_median"  # or "mean"
    encoder_init_scale: float | None = None  # W_enc = W_decᵀ · this; None: min(1, 2·d_in/d_sae) for relu, else 1
    init_sample_tokens: int = 32_768  # activations used for the scale and the b_dec initialisation
    scale_activations: bool = True  # train on x · √d_in / mean‖x‖ (folded into the weights before saving)
    precision: str = "auto"  # fp32 | bf16 (bf16 matmuls, fp32 weights) | auto (bf16 where fast)
    grad_path: str = "fast"  # fast (sae/dictionary/fast/step.py) | reference (plain autograd, sae/dictionary/losses.py)
    log_every: int = 20  # steps between log.jsonl lines
    checkpoint_every: int = 100  # steps between checkpoints
    eval_tokens: int = 32_768  # held-out activations for metrics.json (MSE, FVU, L0, density)
    loss_tokens: int = 16_384  # held-out tokens for loss recovered (3 full LM passes: the costly part)

    def __post_init__(self) -> None:
        bad = []
        try:
            if architecture(self.architecture, trainable=True).uses_k and not (self.k and 0 < self.k <= self.d_sae):
                bad.append(f"{self.architecture} needs --k between 1 and d_sae")
        except MonoscopeError as e:
            bad.append(str(e))
        if min(self.d_sae, self.batch_size, self.tokens, self.log_every, self.checkpoint_every) <= 0:
            bad.append("d_sae, batch_size, tokens, log_every and checkpoint_every must be positive")
        if not (self.lr > 0 and math.isfinite(self.lr)) or self.l1_coefficient < 0:
            bad.append("lr must be positive and the L1 coefficient non-negative")
        if any(not 0 < f < 1 for f in self.resample_at) or not 0 < self.dead_window_frac <= 1:
            bad.append("resample_at fractions must lie in (0, 1) and dead_window_frac in (0, 1]")
        if self.b_dec_init not in ("geometric_median", "mean") or self.precision not in ("auto", "fp32", "bf16"):
            bad.append("b_dec_init is geometric_median|mean, precision auto|fp32|bf16")
        if self.grad_path not in ("fast", "reference"):
            bad.append("grad_path is fast|reference")
        if self.resample_from not in ("x", "x_minus_b_dec") or self.aux_loss not in ("sae_lens", "normalised"):
            bad.append("resample_from is x|x_minus_b_dec, aux_loss sae_lens|normalised")
        if bad:
            raise MonoscopeError("; ".join(bad))

    @property
    def steps(self) -> int:
        return max(1, self.tokens // self.batch_size)

    @property
    def arch(self) -> Architecture:
        """The record of `architecture` (sae/dictionary/architectures.py)."""
        return architecture(self.architecture)

    def sae_config(self, d_in: int) -> SAEConfig:
        """Return the saved module's config: batchtopk is saved as jumprelu with a global threshold."""
        from sae.dictionary.model import SAEConfig

        saved = self.arch.saved
        return SAEConfig(d_in=d_in, d_sae=self.d_sae, architecture=saved.name, k=self.k if saved.uses_k else None)


def resolve_precision(precision: str, device: torch.device) -> str:
    """Return fp32 or bf16; "auto" takes bf16 where bf16 matmuls are fast (CPUs with AVX512_BF16/AMX, CUDA)."""
    from sae.device import bf16_is_fast

    if precision != "auto":
        return precision
    return "bf16" if bf16_is_fast(device) else "fp32"


def schedules(step: int, cfg: SAETrainConfig) -> tuple[float, float]:
    """Return (lr, λ) at 0-based `step`: lr warm-up / flat / linear decay to 0; λ linear warm-up."""
    total = cfg.steps
    warm = max(1, int(total * cfg.lr_warmup_frac))
    decay_start = total - int(total * cfg.lr_decay_frac)
    lr = cfg.lr * min(1.0, (step + 1) / warm)
    if step >= decay_start:
        lr *= (total - step) / max(1, total - decay_start)
    l1_warm = int(total * cfg.l1_warmup_frac)
    l1 = cfg.l1_coefficient * (min(1.0, (step + 1) / l1_warm) if l1_warm > 0 else 1.0)
    return lr, l1


def demo_config(**overrides) -> SAETrainConfig:
    """Return the demo SAE's training config, picked by the sweep recorded in BENCHMARKS.md ("SAE training sweep").

    TopK / BatchTopK with AuxK met the targets (L0 ≤ 32, FVU ≤ 0.13, dead < 5%) at 4,096 latents on the demo LM
    where the paper's ReLU + L1 did not at any λ tried. TopK k = 32 over BatchTopK: its L0 is exactly k on any
    tokens (BatchTopK's global threshold gave 33.3 on held-out files at k = 32), it tracked BatchTopK's FVU step
    for step, and it runs on the fast sparse step (BatchTopK on plain autograd: ~3x slower). Measured at 4M
    tokens: L0 32.0, FVU 0.124, dead 0.34%, loss recovered 98.6%.
    No resampling (BENCHMARKS.md, "ReLU recipe and AuxK study"): with AuxK it changed nothing measurable at 4M
    tokens (held-out FVU 0.1254 with, 0.1255 without; 4 against 0 latents dead on 1M held-out tokens), and a
    resampled latent leaves the AuxK set for a full window while its 0.2x encoder rarely reaches the top k.
    """
    return SAETrainConfig(**{**dict(architecture=TOPK.name, k=32, d_sae=4096, lr=1e-3, tokens=4_000_000,
                                    batch_size=4096, resample_at=()), **overrides})


def control_config(**overrides) -> SAETrainConfig:
    """Return the recipe `demo --full` trains the dictionaries its seed control and universality compare with: the
    demo's TopK at 32M tokens (4.2 epochs of the demo corpus) with resampling, the best seed agreement measured within
    about 40 minutes an SAE on these cores (BENCHMARKS.md, "Seed agreement: the recipe frontier"): a median best
    correlation of 0.67-0.68 between two seeds over the paper's population, against 0.43 at the demo's 4M tokens."""
    return demo_config(**{"tokens": 32_000_000, "resample_at": SAETrainConfig.resample_at, **overrides})


@dataclass(frozen=True)
class ToyConfig:
    """The shape of the toy data (sae/dictionary/toy.py); defaults are Sharkey et al.'s (d 256, 512 features,
    about 5 active)."""

    d: int = 256
    n_features: int = 512
    mean_active: float = 5.0
    decay: float = 0.99  # p_i ∝ decay^i
    group_size: int = 1  # > 1: correlated groups (see toy.py's docstring)
    correlation: float = 0.8  # ρ between the latent Gaussians of one group

    def __post_init__(self) -> None:
        if not (self.d > 0 and self.n_features > 0 and 0 < self.mean_active <= self.n_features):
            raise MonoscopeError(f"toy data needs d, n_features > 0 and 0 < mean_active <= n_features: {self}")
        if not (0 < self.decay <= 1 and self.group_size >= 1 and 0 <= self.correlation < 1):
            raise MonoscopeError(f"toy data needs 0 < decay <= 1, group_size >= 1 and 0 <= correlation < 1: {self}")
