"""How a model's logits are read off its residual stream, written out as plain tensors: the final norm and unembedding
(`Readout`, for the ablation and logit effects) and, for a one-layer LM, everything after the MLP's activations
(`MLPHead`, for the LM-loss metrics without a forward per replacement)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sae.errors import MonoscopeError


@dataclass(frozen=True)
class Readout:
    """What turns the final residual stream into logits, as plain float32 tensors on CPU:
    logits(r) = norm(r) @ W_U + b_U with norm(r) = c(r) / sqrt(mean(c(r)²) + eps) · w + b, c the centring for
    LayerNorm (LN, LNPre) and the identity for RMSNorm (RMS, RMSPre); w = 1 and b = 0 where the norm has none, and
    no division at all for a model without a final norm.

    Written out because for r − a·v the logits are (c(r)·w @ W_U − a·c(v)·w @ W_U) / scale + b @ W_U + b_U, so a
    rank-one change of the residual costs O(d_vocab) once both products are known (sae/analysis/effects.py).
    """

    centre: bool
    normalised: bool  # False: the model has no final norm (scale 1)
    w: torch.Tensor  # [d_model]
    eps: float
    W_U: torch.Tensor  # [d_model, d_vocab]
    bias: torch.Tensor  # [d_vocab]: b @ W_U + b_U

    def project(self, resid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (c(resid) [N, d_model], c(resid)·w @ W_U [N, d_vocab]) of residual vectors resid [N, d_model]."""
        centred = resid - resid.mean(-1, keepdim=True) if self.centre else resid
        return centred, (centred * self.w) @ self.W_U

    def scale(self, centred: torch.Tensor) -> torch.Tensor:
        """Return the norm's divisor [N, 1] of centred vectors [N, d_model]."""
        if not self.normalised:
            return centred.new_ones(centred.shape[0], 1)
        return (centred.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()


def readout(model) -> Readout:
    """Return the model's final norm and unembedding as a Readout (see there)."""
    kind = model.cfg.normalization_type
    if kind not in ("LN", "LNPre", "RMS", "RMSPre", None):
        raise MonoscopeError(f"no readout for normalization_type {kind!r}")
    ln = getattr(model, "ln_final", None)  # absent without a final norm
    d_model = model.cfg.d_model
    w = getattr(ln, "w", None)
    b = getattr(ln, "b", None)
    W_U = model.W_U.detach().float().cpu()
    b = torch.zeros(d_model) if b is None else b.detach().float().cpu()
    return Readout(centre=kind is not None and kind.startswith("LN"), normalised=kind is not None,
                   w=torch.ones(d_model) if w is None else w.detach().float().cpu(), eps=float(getattr(ln, "eps", 0.0)),
                   W_U=W_U, bias=b @ W_U + model.b_U.detach().float().cpu())


@dataclass(frozen=True)
class MLPHead:
    """What a one-layer LM does after its MLP's activations: logits = readout(resid_mid + post @ W_out + b_out).

    The LM-loss metrics replace the hook's activations by zeros, their mean or a reconstruction; with the head, each
    replacement costs one MLP output and one unembedding, and the attention before it runs once, not once per
    replacement (sae.lm.head_losses.head_losses)."""

    W_out: torch.Tensor  # [d_mlp, d_model]
    b_out: torch.Tensor  # [d_model]
    readout: Readout

    def mlp_out(self, post: torch.Tensor) -> torch.Tensor:
        """Return the MLP's output [N, d_model] of hook activations post [N, d_mlp]."""
        return torch.addmm(self.b_out, post, self.W_out)

    def logits(self, resid: torch.Tensor) -> torch.Tensor:
        """Return the logits [N, d_vocab] of final residual vectors resid [N, d_model]."""
        centred, projected = self.readout.project(resid)
        return projected.div_(self.readout.scale(centred)).add_(self.readout.bias)


def mlp_head(model, probe: torch.Tensor) -> MLPHead | None:
    """Return the model's MLPHead on its device, or None where the logits are not resid_mid + MLP out read by the
    final norm: more than one layer, or any other block or readout, found by comparing the head's clean logits
    with the model's own on probe tokens [b, T] (a few sequences) rather than by listing architectures."""
    cfg = model.cfg
    if cfg.n_layers != 1 or cfg.attn_only or cfg.parallel_attn_mlp or not hasattr(model.blocks[0].mlp, "W_out"):
        return None
    try:
        ro = readout(model)
    except MonoscopeError:
        return None
    dev = model.W_U.device
    head = MLPHead(model.blocks[0].mlp.W_out.detach().float(), model.blocks[0].mlp.b_out.detach().float(),
                   Readout(ro.centre, ro.normalised, ro.w.to(dev), ro.eps, ro.W_U.to(dev), ro.bias.to(dev)))
    from sae.lm.model import lm_logits, mid_and_post

    with torch.no_grad():
        mid, post = mid_and_post(model, probe)
        ours = head.logits((mid + head.mlp_out(post.reshape(-1, post.shape[-1])).reshape(*mid.shape[:2], -1))
                           .reshape(-1, mid.shape[-1]))
        theirs = lm_logits(model, probe).float().reshape(ours.shape)
    return head if torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4) else None
