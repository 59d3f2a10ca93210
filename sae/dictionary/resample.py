"""Resampling of dead latents exactly as in "Towards Monosemanticity" (appendix, "Neuron Resampling").

At each scheduled point (the paper: steps 25k/50k/75k/100k of 1M; we take the schedule as fractions of training):
  1. a latent is dead if it has not fired in the preceding window (the paper: 12,500 steps);
  2. compute the loss of the current model on a random sample of inputs (the paper: 819,200);
  3. give each input a probability proportional to the square of its loss;
  4. for each dead latent draw an input (without replacement while the sample lasts): its decoder row becomes the
     normalised input, its encoder column the normalised input × 0.2 × the mean norm of the alive encoder
     columns, its encoder bias 0;
  5. reset the Adam moments (exp_avg, exp_avg_sq) of exactly the modified entries: W_enc columns, b_enc entries,
     W_dec rows. Resetting all of Adam causes loss spikes, per the paper.
"The input" is x − b_dec by default (`centre` = b_dec; SAETrainConfig.resample_from "x_minus_b_dec"): the
vector the encoder sees and the decoder adds to b_dec. The paper's words, x itself (resample_from "x"), measured
worse here: MLP activations are non-negative with a large common mean, so every direction drawn from x points
near that mean and the resampled latents fired on almost every token (BENCHMARKS.md, "ReLU recipe and AuxK study":
L0 jumped to 204 and FVU to 1.51 after resampling 1,965 latents, against 168 and 0.52 after 1,419 from x − b_dec).
"""

from __future__ import annotations

import torch

from sae.dictionary.model import SparseAutoencoder

ENCODER_SCALE = 0.2  # the paper's factor on the mean alive encoder norm


@torch.no_grad()
def reset_adam_entries(optimizer: torch.optim.Optimizer, param: torch.Tensor, index: torch.Tensor, dim: int) -> None:
    """Zero Adam's exp_avg and exp_avg_sq of `param` at `index` along `dim` (no-op before the first step)."""
    state = optimizer.state.get(param, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            state[key].index_fill_(dim, index, 0.0)


@torch.no_grad()
def resample_dead(
    sae: SparseAutoencoder, optimizer: torch.optim.Optimizer, dead: torch.Tensor, inputs: torch.Tensor,
    input_losses: torch.Tensor, generator: torch.Generator | None = None, centre: torch.Tensor | None = None,
) -> torch.Tensor:
    """Re-initialise the dead latents (bool [d_sae]) from inputs [N, d_in] drawn ∝ input_losses² [N], each minus
    `centre` [d_in] when given (b_dec: resampling from x − b_dec).

    Returns the indices of the resampled latents (int64 [n_dead]); does nothing when none is dead.
    """
    index = torch.nonzero(dead, as_tuple=False).flatten().to(sae.W_enc.device)  # [n_dead]
    if index.numel() == 0:
        return index
    weights = input_losses.double().pow(2)  # [N]
    if not torch.isfinite(weights).all() or float(weights.sum()) <= 0:
        weights = torch.ones_like(weights)  # a perfect (or broken) fit gives no preference: draw uniformly
    replacement = index.numel() > int((weights > 0).sum())
    picked = torch.multinomial(weights.cpu(), index.numel(), replacement=replacement, generator=generator)
    chosen = inputs[picked].to(sae.W_dec.device, torch.float32)  # [n_dead, d_in]
    if centre is not None:
        chosen = chosen - centre.to(chosen.device, torch.float32)
    directions = chosen / chosen.norm(dim=1, keepdim=True).clamp_min(1e-8)  # [n_dead, d_in]

    alive = ~dead.to(sae.W_enc.device)
    enc_norms = sae.W_enc.float().norm(dim=0)  # [d_sae]: norm of each latent's encoder column
    mean_alive = float(enc_norms[alive].mean()) if bool(alive.any()) else 1.0

    sae.W_dec[index] = directions.to(sae.W_dec.dtype)
    sae.W_enc[:, index] = (directions * (ENCODER_SCALE * mean_alive)).T.to(sae.W_enc.dtype)
    sae.b_enc[index] = 0.0
    reset_adam_entries(optimizer, sae.W_enc, index, dim=1)
    reset_adam_entries(optimizer, sae.b_enc, index, dim=0)
    reset_adam_entries(optimizer, sae.W_dec, index, dim=0)
    return index
