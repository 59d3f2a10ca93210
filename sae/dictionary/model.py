"""The sparse autoencoder module: one small file, reloadable from its state dict alone.

Shapes: x [..., d_in]; f [..., d_sae]. Weight layout follows SAELens (W_enc [d_in, d_sae], W_dec [d_sae, d_in]),
so our files and theirs hold the same tensors. The paper's recipe (architecture relu):
    x̄ = x − b_dec;  f = ReLU(x̄ W_enc + b_enc);  x̂ = f W_dec + b_dec,  with unit-norm decoder rows.
topk keeps the k largest pre-activations (then ReLU); jumprelu keeps pre-activations above a per-feature
threshold (BatchTopK SAEs are saved as jumprelu with their global threshold, as SAELens does). What each
architecture is lives in sae/dictionary/architectures.py; the maths of each activation is in `activate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sae.dictionary.architectures import MODULES, RELU, Activation, Architecture, architecture
from sae.errors import MonoscopeError


@dataclass(frozen=True)
class SAEConfig:
    """What defines an SAE's forward pass; training hyper-parameters live in the training config."""

    d_in: int
    d_sae: int
    architecture: str = RELU.name  # one of architectures.MODULES: relu | topk | jumprelu
    k: int | None = None  # active latents per token, topk only

    def __post_init__(self) -> None:
        if self.architecture not in MODULES:
            raise MonoscopeError(f"an SAE module's architecture is one of {', '.join(MODULES)}, "
                                 f"got {self.architecture!r}")
        if self.arch.uses_k and not (self.k and 0 < self.k <= self.d_sae):
            raise MonoscopeError(f"{self.architecture} needs 0 < k <= d_sae, got k={self.k}")

    @property
    def arch(self) -> Architecture:
        """The record of `architecture` (sae/dictionary/architectures.py)."""
        return architecture(self.architecture)


class SparseAutoencoder(nn.Module):
    """Encoder/decoder pair with a pre-encoder bias shared with the decoder (b_dec)."""

    def __init__(self, cfg: SAEConfig, *, dtype: torch.dtype = torch.float32, device=None) -> None:
        super().__init__()
        self.cfg = cfg
        kw = dict(dtype=dtype, device=device)
        self.W_enc = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_sae, **kw))  # [d_in, d_sae]
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, **kw))  # [d_sae]
        self.W_dec = nn.Parameter(torch.zeros(cfg.d_sae, cfg.d_in, **kw))  # [d_sae, d_in]
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, **kw))  # [d_in]
        if cfg.arch.has_threshold:
            self.threshold = nn.Parameter(torch.zeros(cfg.d_sae, **kw))  # [d_sae]

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> "SparseAutoencoder":
        """Initialise as is usual since the paper: random unit decoder rows, encoder = decoder transposed."""
        w = torch.randn(self.W_dec.shape, generator=generator, dtype=torch.float32)
        w /= w.norm(dim=1, keepdim=True)
        self.W_dec.copy_(w)
        self.W_enc.copy_(w.T)
        self.b_enc.zero_()
        self.b_dec.zero_()
        return self

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """Return encoder pre-activations [..., d_sae] for inputs x [..., d_in]."""
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Return feature activations [..., d_sae] from pre-activations, per the architecture."""
        activation = self.cfg.arch.activation
        if activation is Activation.TOPK:
            return topk_activation(pre, self.cfg.k)
        if activation is Activation.JUMPRELU:
            return torch.relu(pre) * (pre > self.threshold)  # as SAELens's JumpReLUSAE.encode computes it
        return torch.relu(pre)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Return feature activations f [..., d_sae] for x [..., d_in]."""
        return self.activate(self.pre_activations(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Return the reconstruction x̂ [..., d_in] of feature activations f [..., d_sae]."""
        return f @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the reconstruction x̂ [..., d_in] of x [..., d_in]."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale decoder rows to unit norm (the paper's constraint), in place."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)


def topk_activation(pre: torch.Tensor, k: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Return f [..., d_sae]: relu of each row's k largest pre-activations, 0 elsewhere (into `out` if given)."""
    values, indices = pre.topk(k, dim=-1, sorted=False)
    f = torch.zeros_like(pre) if out is None else out.zero_()
    return f.scatter_(-1, indices, torch.relu(values))


def sparse_decode(W_dec: torch.Tensor, units: torch.Tensor, offsets: torch.Tensor,
                  values: torch.Tensor) -> torch.Tensor:
    """Return f W_dec [N, d_in] (no bias) from f's non-zeros in token order: units and values [nnz], each token's
    first entry at offsets [N]. A weighted sum of decoder rows (embedding_bag): 3-5x faster here than a sparse
    matmul, and it never forms the dense [N, d_sae] f."""
    return torch.nn.functional.embedding_bag(units, W_dec, offsets, mode="sum", per_sample_weights=values)
