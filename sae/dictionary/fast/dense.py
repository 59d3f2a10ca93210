"""Dense hand-written SAE backprop (the path for high L0, e.g. early ReLU training); see sae/dictionary/fast/step.py.

Same notation as sae/dictionary/fast/gradients.py. Five [B, d] x [d, S]-sized matmuls (bf16 or fp32) into reused
buffers; the AuxK term and b_dec's gradient come from the tail both steps share (gradients.auxk_and_b_dec_grads).
"""

from __future__ import annotations

import torch

from sae.dictionary.architectures import Activation
from sae.dictionary.fast.gradients import Workspace, attach_grads, auxk_and_b_dec_grads, encoder_pre
from sae.dictionary.losses import AuxK, batch_top
from sae.dictionary.model import SparseAutoencoder, topk_activation


def block_ones(ws: Workspace, B: int, dt: torch.dtype, device: torch.device) -> torch.Tensor:
    """Return [⌈B/256⌉, B] with ones on row i over columns 256i..256i+255: its product with a [B, S] matrix gives
    column sums over blocks of 256 rows, each exact in bf16 for 0/1 entries (integers ≤ 256 are exact)."""
    n = -(-B // 256)
    ones = ws.tensors.get("block_ones")
    if ones is None or ones.shape != (n, B) or ones.dtype != dt:
        ones = torch.zeros(n, B, dtype=dt, device=device)
        for i in range(n):
            ones[i, 256 * i: 256 * (i + 1)] = 1
        ws.tensors["block_ones"] = ones
    return ones


def dense_step(sae: SparseAutoencoder, x: torch.Tensor, ws: Workspace, *, activation: Activation, k: int | None,
               l1_coefficient: float, aux: AuxK | None) -> dict[str, torch.Tensor]:
    """Fill .grad by dense hand-written backprop for x [B, d] (bf16 or fp32 matmuls into reused buffers); return
    the loss parts.

    Masks are kept as 0/1 in the matmul dtype and column sums are done by a matmul: here, bool masks and
    reductions with a dtype change copy the whole [B, S] tensor first (measured 150-330 ms each against 4-8 ms).
    """
    B, d, S = x.shape[0], sae.cfg.d_in, sae.cfg.d_sae
    dt = torch.bfloat16 if ws.bf16 else torch.float32
    grads = attach_grads(sae, ws)
    W_dec, b_dec = sae.W_dec.detach(), sae.b_dec.detach()
    xc, pre = encoder_pre(sae, x, ws)  # [B, d], [B, S]
    f = ws.get("f", (B, S), dt, x.device)
    if activation is Activation.TOPK:
        topk_activation(pre, k, out=f)
    elif activation is Activation.BATCHTOPK:
        flat = torch.clamp(pre, min=0, out=f).view(-1)
        values, index = batch_top(flat.clone(), min(k * B, flat.numel()))
        flat.zero_().scatter_(0, index, values)
    else:
        torch.clamp(pre, min=0, out=f)
    gate = torch.gt(f, 0, out=ws.get("gate", (B, S), dt, x.device))  # [B, S] 0/1
    Wd = W_dec if not ws.bf16 else ws.get("W_dec_bf16", (S, d), dt, x.device).copy_(W_dec)
    err = torch.mm(f, Wd).float().add_(b_dec).sub_(x)  # [B, d]  x̂ − x
    mse = err.square().sum() / B  # Σ_d err² averaged over the batch (one cascade sum: sum(-1), mean is slow)
    g = err.mul(2.0 / B)  # [B, d]
    gb = g.to(dt)
    grads["W_dec"].copy_(torch.mm(f.t(), gb, out=ws.get("dW_dec", (S, d), dt, x.device)))
    df = torch.mm(gb, Wd.t(), out=ws.get("df", (B, S), dt, x.device))  # [B, S]
    df.add_(l1_coefficient / B).mul_(gate)  # dL/dpre
    grads["W_enc"].copy_(torch.mm(xc.t(), df, out=ws.get("dW_enc", (d, S), dt, x.device)))
    grads["b_enc"].copy_(df.sum(0))
    ones = block_ones(ws, B, dt, x.device)
    fired = torch.mm(ones, gate).float().sum(0).round_().long()  # [S]
    l1 = torch.mm(ones, f).float().sum() / B
    aux_loss = auxk_and_b_dec_grads(sae, xc, pre, err, g, grads, aux, ws)
    return dict(mse=mse, l1=l1, aux=aux_loss, l0=fired.sum() / B, fired=fired)
