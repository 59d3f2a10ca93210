"""One SAE optimisation step's loss and gradients, fast on CPU: bf16 matmuls and a sparse path over active latents.

Interface (what the training loop calls once per step, before its decoder-gradient projection and Adam step):

    parts = loss_and_grads(sae, x, l1_coefficient=λ, precision="bf16")      # x [B, d_in] fp32
    parts.loss, parts.mse, parts.l1, parts.aux, parts.l0    # 0-dim fp32 tensors, detached (call .item() to log)
    parts.fired                                            # int64 [d_sae]: tokens of this batch where f > 0
    parts.method                                           # "sparse" | "dense" | "autograd": which path ran

Training BatchTopK (an SAE module saved as jumprelu): pass architecture="batchtopk", k=mean L0 (the k·B largest
relu pre-activations of the batch are kept); the default architecture is the module's own (relu | topk). Which
architectures have a fast path and AuxK is their record's (sae/dictionary/architectures.py).
It sets every parameter's `.grad` to what `loss.backward()` after `zero_grad()` would give with dense autograd
(the grads are overwritten, not accumulated, and live in buffers reused across steps: don't keep references).
Losses, as in the paper and SAELens: mse = Σ_d (x̂ − x)² averaged over the batch; l1 = Σ_j |f_j| averaged over the
batch (multiplied by λ in the loss; use λ = 0 for topk); aux = the AuxK loss of Gao et al. (topk/batchtopk, when
`dead_mask` is given and `aux_coefficient` > 0): the residual e = x − x̂ (detached) is reconstructed without bias by
the relu of the `aux_k` (default d_in // 2) largest pre-activations among dead latents, aux = Σ_d (ê − e)² averaged
over the batch, added to the loss as aux_coefficient · min(n_dead / aux_k, 1) · aux (SAELens's scaling); with
`aux_normalised`, OpenAI's form: aux / mean_batch Σ_d e², added as aux_coefficient · aux (losses.py says why).
loss = mse + λ·l1 + that aux term.

precision "fp32": everything fp32. "bf16": the big matmuls take bf16 inputs (fp32 accumulation inside), master
weights and grads stay fp32, as with torch.autocast on CPU (the "autograd" method runs under autocast itself).
method "autograd": plain autograd through `sae` (the reference; the path a jumprelu module trains by). "dense":
hand-written backprop, five big matmuls, into buffers reused across steps. "sparse": only the encoder matmul stays
dense; the decode and all weight gradients touch just the active latents (the ReLU/TopK gradient is zero
elsewhere): the decode and dL/dpre in fp32, the weight gradients' sums from bf16 rows when precision is bf16.
"auto": sparse while L0 is small enough to win (SPARSE_MAX_L0_FRACTION, measured), else dense.
`adam(params, lr=...)` returns the fused Adam (4x faster here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from sae.dictionary import architectures, losses
from sae.dictionary.fast.dense import dense_step
from sae.dictionary.fast.gradients import sparse_step, workspace
from sae.dictionary.model import SparseAutoencoder
from sae.errors import MonoscopeError

PRECISIONS = ("fp32", "bf16")
METHODS = ("auto", "sparse", "dense", "autograd")
# "auto" goes sparse while L0 (the last batch's, for relu; k for topk) is at most this fraction of d_sae: the
# crossovers measured here (512 -> 4096, batch 4096, 1 thread; BENCHMARKS.md) were L0 ~260 with bf16 matmuls and
# ~700 with fp32 ones.
SPARSE_MAX_L0_FRACTION = {"fp32": 1 / 6, "bf16": 1 / 16}


@dataclass
class LossParts:
    """The step's losses (0-dim, detached, fp32), per-latent firing counts and the path that ran."""

    loss: torch.Tensor
    mse: torch.Tensor
    l1: torch.Tensor
    aux: torch.Tensor
    l0: torch.Tensor
    fired: torch.Tensor  # int64 [d_sae]
    method: str


def _check(sae: SparseAutoencoder, x: torch.Tensor, precision: str, method: str) -> None:
    if precision not in PRECISIONS:
        raise MonoscopeError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if method not in METHODS:
        raise MonoscopeError(f"method must be one of {METHODS}, got {method!r}")
    if x.ndim != 2 or x.shape[1] != sae.cfg.d_in:
        raise MonoscopeError(f"activations must be [batch, {sae.cfg.d_in}], got {list(x.shape)}")


def loss_and_grads(
    sae: SparseAutoencoder,
    x: torch.Tensor,
    *,
    l1_coefficient: float = 0.0,
    precision: str = "fp32",
    method: str = "auto",
    dead_mask: torch.Tensor | None = None,
    aux_coefficient: float = 0.0,
    aux_k: int | None = None,
    architecture: str | None = None,
    k: int | None = None,
    aux_normalised: bool = False,
) -> LossParts:
    """Return the step's LossParts and set every parameter's .grad (see the module docstring)."""
    _check(sae, x, precision, method)
    arch, k = architectures.architecture(architecture or sae.cfg.architecture), k or sae.cfg.k
    if arch.uses_k and not k:
        raise MonoscopeError(f"{arch.name} needs k (active latents per token)")
    if method == "autograd" or not arch.fast_path:
        for p in sae.parameters():
            p.grad = None
        loss, parts = losses.sae_loss(  # the plain-autograd reference
            sae, x, architecture=arch.name, k=k, l1_coefficient=l1_coefficient, dead=dead_mask,
            aux_coefficient=aux_coefficient, aux_k=aux_k, precision=precision, aux_normalised=aux_normalised,
        )
        loss.backward()
        return LossParts(loss=loss.detach(), method="autograd", **parts)
    aux = losses.auxk_term(dead_mask if arch.auxk else None, aux_coefficient, aux_k or sae.cfg.d_in // 2,
                           aux_normalised)
    ws = workspace(sae, x.shape[0], precision == "bf16", x.device)
    if method == "auto":
        last_l0 = ws.last_l0 if ws.last_l0 is not None else sae.cfg.d_sae  # relu: first step assumed dense
        expected_l0 = k if arch.uses_k else last_l0
        method = "sparse" if expected_l0 <= SPARSE_MAX_L0_FRACTION[precision] * sae.cfg.d_sae else "dense"
    run = sparse_step if method == "sparse" else dense_step
    with torch.no_grad():
        parts = run(sae, x, ws, activation=arch.activation, k=k, l1_coefficient=l1_coefficient, aux=aux)
    ws.last_l0 = float(parts["l0"])
    loss = parts["mse"] + l1_coefficient * parts["l1"]
    if aux is not None:
        loss = loss + aux.weight * parts["aux"]
    return LossParts(loss=loss, method=method, **parts)


def adam(params: Iterable[torch.nn.Parameter], *, lr: float,
         betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Adam:
    """Return torch's fused Adam where this torch has it (same update; measured here 4.4 ms against 18.6 ms for the
    default on 4.2M parameters, 1 thread), else the default implementation."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, betas=betas)
