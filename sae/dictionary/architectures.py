"""The SAE architectures, one record each: what training, saving, loading, analysis and the CLI need to know.

Adding an architecture is one entry in `ARCHITECTURES` plus its maths: a new `Activation` gets a branch in
`model.SparseAutoencoder.activate` (inference), `losses.activate` (the autograd reference) and, with
`fast_path=True`, in `fast/gradients.active_entries` and `fast/dense.dense_step`. Everything else (which loss
terms, what is written to cfg.json, what the sweep varies, which names the CLI accepts) reads the record.
Torch-free, so the command line reads it without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sae.errors import MonoscopeError

L1 = "l1_coefficient"  # the sparsity knobs: the SAETrainConfig field that trades L0 against reconstruction
K = "k"


class Activation(Enum):
    """How feature activations f [..., d_sae] come from pre-activations (the maths each one names)."""

    RELU = "relu"  # f = ReLU(pre)
    TOPK = "topk"  # ReLU of each token's k largest pre-activations
    BATCHTOPK = "batchtopk"  # ReLU of the batch's k·B largest pre-activations (k is the mean L0)
    JUMPRELU = "jumprelu"  # ReLU(pre) where pre > a per-latent threshold, as SAELens computes it


@dataclass(frozen=True)
class Architecture:
    """One SAE architecture: how it trains, how it is saved, and what SAELens calls it."""

    name: str  # as `--architecture`, SAETrainConfig.architecture and SAEConfig.architecture spell it
    activation: Activation  # training activation; for a module architecture also its forward
    saved_as: str  # the architecture of the module that training writes (batchtopk -> jumprelu)
    sparsity: str | None  # L1 or K: the training setting that sets sparsity; None: load-only
    auxk: bool  # trained with the AuxK loss on dead latents (Gao et al. 2024)
    fast_path: bool  # the hand-written steps of sae/dictionary/fast/ train it (else plain autograd)
    trainable: bool  # SAETrainConfig accepts it; False: loaded from SAELens or written by another's training
    saelens: str | None = None  # SAELens cfg.json "architecture" of the module; None: never a module itself
    saelens_activation: str | None = None  # SAELens cfg.json "activation_fn_str"

    @property
    def l1_penalty(self) -> bool:
        """Whether the loss has λ·Σ|f| (the paper's recipe): λ is its sparsity knob."""
        return self.sparsity == L1

    @property
    def uses_k(self) -> bool:
        """Whether k (active latents per token) sets its sparsity, so configs must give one."""
        return self.sparsity == K

    @property
    def has_threshold(self) -> bool:
        """Whether the module holds a per-latent `threshold` tensor [d_sae]."""
        return self.activation is Activation.JUMPRELU

    @property
    def saved(self) -> Architecture:
        """The record of the module that training writes."""
        return ARCHITECTURES[self.saved_as]

    @property
    def fits_threshold(self) -> bool:
        """Whether training ends by fitting the saved module's threshold (BatchTopK's global one)."""
        return self.saved.has_threshold and not self.has_threshold


RELU = Architecture("relu", Activation.RELU, saved_as="relu", sparsity=L1, auxk=False, fast_path=True,
                    trainable=True, saelens="standard", saelens_activation="relu")  # the paper's recipe
TOPK = Architecture("topk", Activation.TOPK, saved_as="topk", sparsity=K, auxk=True, fast_path=True, trainable=True,
                    saelens="topk", saelens_activation="topk")
BATCHTOPK = Architecture("batchtopk", Activation.BATCHTOPK, saved_as="jumprelu", sparsity=K, auxk=True,
                         fast_path=True, trainable=True)
JUMPRELU = Architecture("jumprelu", Activation.JUMPRELU, saved_as="jumprelu", sparsity=None, auxk=False,
                        fast_path=False, trainable=False, saelens="jumprelu", saelens_activation="relu")
ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (RELU, TOPK, BATCHTOPK, JUMPRELU)}
TRAINABLE = tuple(name for name, a in ARCHITECTURES.items() if a.trainable)
MODULES = tuple(name for name, a in ARCHITECTURES.items() if a.saved_as == name)  # what a saved SAE can be


def architecture(name: str, *, trainable: bool = False) -> Architecture:
    """Return the record of `name`, refusing an unknown one (or, with `trainable`, a load-only one) in one line."""
    valid = TRAINABLE if trainable else tuple(ARCHITECTURES)
    if name not in valid:
        raise MonoscopeError(f"SAE architecture must be one of {', '.join(valid)}, got {name!r}")
    return ARCHITECTURES[name]


def from_saelens(saelens_name: str) -> Architecture | None:
    """Return the module architecture SAELens calls `saelens_name`, or None when ours has none."""
    return next((ARCHITECTURES[m] for m in MODULES if ARCHITECTURES[m].saelens == saelens_name), None)
