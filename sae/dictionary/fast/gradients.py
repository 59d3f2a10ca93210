"""Hand-written SAE gradients (dense and sparse) with buffers reused across steps; sae/dictionary/fast/step.py has
the contract.

Notation for one batch: xc = x − b_dec [B, d]; pre = xc W_enc + b_enc [B, S]; f = act(pre) [B, S];
x̂ = f W_dec + b_dec [B, d]; g = dL/dx̂ = 2 (x̂ − x) / B [B, d]; dpre = (g W_decᵀ + λ/B) ⊙ [f > 0] [B, S].
Then dW_dec = fᵀ g, dW_enc = xcᵀ dpre, db_enc = Σ_b dpre and, because b_dec enters the encoder as −b_dec,
db_dec = Σ_b g − W_enc db_enc (no [B, d] backward matmul through the encoder is needed).

The sparse path keeps the active entries of f as (row, col, value) lists, nnz = B·L0 of them:
decode = embedding_bag over W_dec rows; g W_decᵀ only at active entries = one dot product per entry (the compiled
kernels.entry_grads; torch.sparse.sampled_addmm, an SDDMM, without numba or off CPU); fᵀ g and xcᵀ dpre =
embedding_bag over rows of g / xc grouped by latent (a counting sort by latent). Those ops are memory-bound. With bf16
precision the two weighted sums gather bf16 rows of g and xc (as autocast's backward matmuls take bf16 inputs:
3.5 against 7 ms for both, [4,096, 512] tables, 131,072 entries, 2 threads); the decode and the dot products, which
set x̂ and dL/dpre, stay fp32, and only the dense encoder matmul (2·B·d·S flops, the one cost that does not shrink
with L0) uses bf16 besides.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from sae.dictionary.architectures import Activation
from sae.dictionary.fast.select import kernels, positive_topk
from sae.dictionary.losses import AuxK, aux_normaliser, batch_top
from sae.dictionary.model import SparseAutoencoder
from sae.dictionary.model import sparse_decode as decode_entries

_WORKSPACES: "weakref.WeakKeyDictionary[SparseAutoencoder, Workspace]" = weakref.WeakKeyDictionary()


@dataclass
class Workspace:
    """Buffers for one (SAE, batch size, precision): allocated once, reused every step (fresh big tensors are slow)."""

    batch: int
    bf16: bool
    device: torch.device
    last_l0: float | None = None  # the previous batch's L0, for choosing sparse vs dense
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
            device: torch.device | None = None) -> torch.Tensor:
        """Return the buffer `name` of this shape and dtype (uninitialised when new; reused otherwise)."""
        t = self.tensors.get(name)
        if t is None or t.shape != torch.Size(shape) or t.dtype != dtype:
            t = self.tensors[name] = torch.empty(shape, dtype=dtype, device=device)
        return t


def workspace(sae: SparseAutoencoder, batch: int, bf16: bool, device: torch.device) -> Workspace:
    """Return the SAE's workspace for this batch size, precision and device (a new one when any changed)."""
    ws = _WORKSPACES.get(sae)
    if ws is None or (ws.batch, ws.bf16, ws.device) != (batch, bf16, device):
        ws = _WORKSPACES[sae] = Workspace(batch, bf16, device)
    return ws


def attach_grads(sae: SparseAutoencoder, ws: Workspace) -> dict[str, torch.Tensor]:
    """Point every parameter's .grad at a workspace buffer (overwritten each step) and return them by name."""
    grads = {}
    for name, p in sae.named_parameters():
        g = ws.get("grad_" + name, tuple(p.shape), p.dtype, p.device)
        if name == "threshold":
            g.zero_()
        p.grad = grads[name] = g
    return grads


def encoder_pre(sae: SparseAutoencoder, x: torch.Tensor, ws: Workspace) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (xc [B, d], pre [B, S]), both in bf16 when the workspace is bf16 (x − b_dec rounded once; bias added
    in the matmul), else fp32. The gradients take xc in that dtype too (dW_enc's sum gathers its rows)."""
    B, d, S = x.shape[0], sae.cfg.d_in, sae.cfg.d_sae
    dt = torch.bfloat16 if ws.bf16 else torch.float32
    xc = torch.sub(x, sae.b_dec.detach(), out=ws.get("xc", (B, d), dt, x.device))
    if not ws.bf16:
        pre = ws.get("pre", (B, S), device=x.device)
        return xc, torch.addmm(sae.b_enc.detach(), xc, sae.W_enc.detach(), out=pre)
    wb = ws.get("W_enc_bf16", (d, S), dt, x.device).copy_(sae.W_enc.detach())
    bb = ws.get("b_enc_bf16", (S,), dt, x.device).copy_(sae.b_enc.detach())
    return xc, torch.addmm(bb, xc, wb, out=ws.get("pre_bf16", (B, S), dt, x.device))


@dataclass
class Entries:
    """The nonzero activations of one batch in two orders: by row (for the decode) and by latent (for the grads)."""

    row_offsets: torch.Tensor  # [B] start of each row's entries in the by-row lists
    row_cols: torch.Tensor  # [nnz] latent of each entry, by row
    row_values: torch.Tensor  # [nnz] fp32 activation (may be 0 for topk), by row
    lat_counts: torch.Tensor  # [S] entries per latent
    lat_rows: torch.Tensor  # [nnz] batch row of each entry, by latent
    lat_cols: torch.Tensor  # [nnz] latent of each entry, non-decreasing
    lat_values: torch.Tensor  # [nnz] fp32 activation, by latent

    def lat_offsets(self) -> torch.Tensor:
        """Return [S]: where each latent's entries start in the by-latent lists."""
        offsets = torch.zeros_like(self.lat_counts)
        torch.cumsum(self.lat_counts[:-1], 0, out=offsets[1:])
        return offsets


def make_entries(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n_rows: int, n_latents: int) -> Entries:
    """Return Entries from by-row lists rows, cols (long [nnz]) and values (fp32 [nnz]); a counting sort by latent
    gives the rest (kernels.group_by_latent; torch.argsort without numba or off CPU)."""
    row_offsets = torch.zeros(n_rows, dtype=torch.long, device=rows.device)
    torch.cumsum(torch.bincount(rows, minlength=n_rows)[:-1], 0, out=row_offsets[1:])
    compiled = kernels(cols.device)
    if compiled is None:
        order = torch.argsort(cols)
        return Entries(row_offsets=row_offsets, row_cols=cols, row_values=values,
                       lat_counts=torch.bincount(cols, minlength=n_latents), lat_rows=rows[order],
                       lat_cols=cols[order], lat_values=values[order])
    rows, cols, values = rows.contiguous(), cols.contiguous(), values.contiguous()
    e = Entries(row_offsets=row_offsets, row_cols=cols, row_values=values,
                lat_counts=torch.empty(n_latents, dtype=torch.long), lat_rows=torch.empty_like(rows),
                lat_cols=torch.empty_like(cols), lat_values=torch.empty_like(values))
    compiled.group_by_latent(cols.numpy(), rows.numpy(), values.numpy(), e.lat_counts.numpy(), e.lat_rows.numpy(),
                             e.lat_cols.numpy(), e.lat_values.numpy())
    return e


def fixed_k_entries(cols: torch.Tensor, values: torch.Tensor, n_latents: int, ws: Workspace) -> Entries:
    """Return Entries from k picks per row: cols [B, k] long, values [B, k] fp32 (TopK and AuxK)."""
    B, k = cols.shape
    rows = ws.tensors.get(f"rows_{k}")
    if rows is None or rows.numel() != B * k:
        rows = ws.tensors[f"rows_{k}"] = torch.arange(B, device=cols.device).repeat_interleave(k)
    return make_entries(rows, cols.reshape(-1), values.reshape(-1), B, n_latents)


def topk_select(pre: torch.Tensor, k: int, ws: Workspace) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (values, cols) [B, k] of the k largest entries of each row of pre [B, S] (any order), like topk.

    torch.topk runs a selection over all S entries of every row; here a cheap bound prunes first: the k-th largest
    of a row's block maxima is ≤ its k-th largest entry, so only entries ≥ that bound (typically ~1.2 k) remain
    candidates. Measured here (4096 x 4096, k 32, 1 thread): about 55 ms against 90 ms for torch.topk in fp32. Not
    in bf16: this CPU build reduces bf16 ~7x slower than fp32 (the block maxima alone took 45 ms), so a bf16 pre
    (training's default) goes to positive_topk.
    """
    B, S = pre.shape
    if pre.dtype == torch.bfloat16:
        return positive_topk(pre, k)
    block = 1 << max(0, (S // (4 * k)).bit_length() - 1)  # about 4k blocks per row, a power of two wide
    if block < 4 or S % block or pre.dtype != torch.float32:
        return pre.topk(k, dim=-1, sorted=False)
    bound = pre.view(B, S // block, block).amax(-1).topk(k, dim=-1, sorted=False).values.amin(-1, keepdim=True)
    mask = torch.ge(pre, bound, out=ws.get("mask", (B, S), torch.bool, pre.device))  # [B, S]
    rows, cols = mask.nonzero(as_tuple=True)  # by row
    counts = torch.bincount(rows, minlength=B)
    width = int(counts.max()) if rows.numel() else 0
    if width < k or rows.numel() != int(counts.sum()):  # NaN rows: let torch.topk decide
        return pre.topk(k, dim=-1, sorted=False)
    starts = torch.zeros_like(counts)
    torch.cumsum(counts[:-1], 0, out=starts[1:])
    slot = torch.arange(rows.numel(), device=pre.device) - starts[rows]
    cand = torch.full((B, width), float("-inf"), dtype=pre.dtype, device=pre.device)
    cand[rows, slot] = torch.take(pre, rows * S + cols)
    cand_cols = torch.zeros((B, width), dtype=torch.long, device=pre.device)
    cand_cols[rows, slot] = cols
    values, picked = cand.topk(k, dim=-1, sorted=False)
    return values, cand_cols.gather(1, picked)


def active_entries(activation: Activation, k: int | None, pre: torch.Tensor, ws: Workspace) -> Entries:
    """Return the Entries of f = act(pre) for pre [B, S] (fp32 or bf16); activation relu | topk | batchtopk."""
    B, S = pre.shape
    if activation is Activation.TOPK:
        top, cols = topk_select(pre, k, ws)  # [B, k]
        return fixed_k_entries(cols, torch.relu(top.float()), S, ws)
    if activation is Activation.BATCHTOPK:
        flat = torch.clamp(pre, min=0, out=ws.get("relu_pre", (B, S), pre.dtype, pre.device)).view(-1)  # [B·S]
        values, index = batch_top(flat, min(k * B, flat.numel()))
        index, order = index.sort()  # by row
        return make_entries(index // S, index % S, values[order].float(), B, S)
    mask = torch.gt(pre, 0, out=ws.get("mask", (B, S), torch.bool, pre.device))  # [B, S]
    rows, cols = mask.nonzero(as_tuple=True)  # by row; (masked_select and bool sums are slow here)
    return make_entries(rows, cols, torch.take(pre, rows * S + cols).float(), B, S)


def sparse_decode(e: Entries, W_dec: torch.Tensor) -> torch.Tensor:
    """Return f W_dec [B, d] from the by-row entries (no bias)."""
    return decode_entries(W_dec, e.row_cols, e.row_offsets, e.row_values)


def entry_grads(e: Entries, offsets: torch.Tensor, W_dec: torch.Tensor, g: torch.Tensor, shift: float) -> torch.Tensor:
    """Return dL/dpre at each by-latent entry [nnz] (offsets: e.lat_offsets()): (g W_decᵀ)[row, latent] + shift where
    the entry is active, else 0 (ReLU's and TopK's gradient), never forming the dense [B, S] product."""
    compiled = kernels(g.device)
    if compiled is not None and W_dec.dtype == g.dtype == torch.float32:
        out = torch.empty(e.lat_rows.numel(), dtype=torch.float32)
        compiled.entry_grads(offsets.numpy(), e.lat_counts.numpy(), e.lat_rows.numpy(), e.lat_values.numpy(),
                             W_dec.contiguous().numpy(), g.contiguous().numpy(), shift, out.numpy())
        return out
    return sddmm_entry_grads(e, W_dec, g, shift)


def sddmm_entry_grads(e: Entries, W_dec: torch.Tensor, g: torch.Tensor, shift: float) -> torch.Tensor:
    """entry_grads by torch.sparse.sampled_addmm (any device, no numba)."""
    S, B = W_dec.shape[0], g.shape[0]
    crow = torch.zeros(S + 1, dtype=torch.long, device=g.device)
    torch.cumsum(e.lat_counts, 0, out=crow[1:])
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore")
        pattern = torch.sparse_csr_tensor(crow, e.lat_rows, torch.zeros(e.lat_rows.numel(), device=g.device),
                                          (S, B), check_invariants=False)  # [S, B]
    dpre = torch.sparse.sampled_addmm(pattern, W_dec, g.t(), beta=0.0).values()
    if shift:
        dpre.add_(shift)
    return dpre.mul_(e.lat_values > 0)


def latent_sums(e: Entries, offsets: torch.Tensor, weights: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Return [S, d] in table's dtype: for each latent j, Σ over its entries n of weights[n] · table[row n] (fᵀ g or
    dpreᵀ xc)."""
    return F.embedding_bag(e.lat_rows, table, offsets, mode="sum", per_sample_weights=weights.to(table.dtype))


def backprop_entries(e: Entries, g: torch.Tensor, xc: torch.Tensor, W_dec: torch.Tensor,
                     l1_over_b: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (dpre [nnz] fp32, dW_dec [S', d], dW_encᵀ [S', d]) of a term whose dL/dx̂ is g [B, d] fp32 (xc [B, d]),
    over the S' latents of W_dec [S', d] that e's columns index. The two weight gradients are summed from rows in
    xc's dtype (bf16 with bf16 precision: g is rounded for them) and come back in it."""
    offsets = e.lat_offsets()
    dpre = entry_grads(e, offsets, W_dec, g, l1_over_b)
    return dpre, latent_sums(e, offsets, e.lat_values, g.to(xc.dtype)), latent_sums(e, offsets, dpre, xc)


def aux_term(pre: torch.Tensor, err: torch.Tensor, aux: AuxK, dead: torch.Tensor, W_dead: torch.Tensor,
             ws: Workspace) -> tuple[torch.Tensor, Entries, torch.Tensor]:
    """AuxK: return (aux loss [], its Entries (columns index `dead`), its dL/dê [B, d]) for the top aux.k of the
    dead latents `dead` [n_dead] in each row of pre [B, S], with err = x̂ − x [B, d] and their decoder rows
    W_dead [n_dead, d].

    err = x̂ − x, so the (detached) residual x − x̂ is −err and ê − residual = ê + err. The normalised form
    divides loss and gradient by the constant mean_batch ‖err‖² (the residual is detached).
    """
    top, pos = positive_topk(pre.index_select(1, dead), aux.k)  # [B, aux.k]
    e = fixed_k_entries(pos, torch.relu(top.float()), len(dead), ws)
    diff = sparse_decode(e, W_dead).add_(err)  # [B, d]
    loss = diff.square().sum() / pre.shape[0]
    norm = float(aux_normaliser(err)) if aux.normalised else 1.0
    return loss / norm, e, diff.mul_(2.0 * aux.weight / (pre.shape[0] * norm))


def auxk_and_b_dec_grads(sae: SparseAutoencoder, xc: torch.Tensor, pre: torch.Tensor, err: torch.Tensor,
                         g: torch.Tensor, grads: dict[str, torch.Tensor], aux: AuxK | None,
                         ws: Workspace) -> torch.Tensor:
    """The tail both steps share: add the AuxK term's W_dec, W_enc, b_enc grads (when `aux` is on), then write
    b_dec's, which needs the final b_enc grad; return the aux loss [] (0 when off).

    xc [B, d], pre [B, S] (fp32 or bf16), err = x̂ − x [B, d], g = dL/dx̂ of the main term [B, d]. The AuxK
    residual is detached and ê has no bias, so b_dec gets the aux term only through the encoder (via db_enc).
    The AuxK grads are nonzero only in the dead latents' rows and columns: they are computed over those alone and
    added there (adding a whole transposed [S, d] term into W_enc's [d, S] grad took 4.5 ms a step).
    """
    W_enc, W_dec = sae.W_enc.detach(), sae.W_dec.detach()
    aux_loss = err.new_zeros(())
    if aux is not None:
        dead = aux.dead.nonzero().squeeze(1)  # [n_dead]
        W_dead = W_dec.index_select(0, dead)  # [n_dead, d]
        aux_loss, e_aux, g_aux = aux_term(pre, err, aux, dead, W_dead, ws)
        dpre, dW_dec, dW_enc_t = backprop_entries(e_aux, g_aux, xc, W_dead, 0.0)
        grads["W_dec"].index_add_(0, dead, dW_dec.float())
        grads["W_enc"].index_add_(1, dead, dW_enc_t.t().float())
        grads["b_enc"].index_add_(0, dead[e_aux.lat_cols], dpre)
    torch.sub(g.sum(0), W_enc @ grads["b_enc"], out=grads["b_dec"])  # b_dec enters the encoder as −b_dec
    return aux_loss


def sparse_step(sae: SparseAutoencoder, x: torch.Tensor, ws: Workspace, *, activation: Activation, k: int | None,
                l1_coefficient: float, aux: AuxK | None) -> dict[str, torch.Tensor]:
    """Fill .grad by sparse backprop over the active latents for x [B, d]; return the detached loss parts."""
    B, S = x.shape[0], sae.cfg.d_sae
    grads = attach_grads(sae, ws)
    W_dec, b_dec = sae.W_dec.detach(), sae.b_dec.detach()
    xc, pre = encoder_pre(sae, x, ws)  # [B, d], [B, S]
    e = active_entries(activation, k, pre, ws)
    err = sparse_decode(e, W_dec).add_(b_dec).sub_(x)  # [B, d]  x̂ − x
    mse = err.square().sum() / B  # Σ_d err² averaged over the batch (one cascade sum: sum(-1), mean is slow)
    g = err.mul(2.0 / B)  # [B, d]  dL/dx̂
    dpre, dW_dec, dW_enc_t = backprop_entries(e, g, xc, W_dec, l1_coefficient / B)
    grads["W_dec"].copy_(dW_dec)
    grads["W_enc"].copy_(dW_enc_t.t())
    grads["b_enc"].zero_().index_add_(0, e.lat_cols, dpre)
    aux_loss = auxk_and_b_dec_grads(sae, xc, pre, err, g, grads, aux, ws)
    fired_mask = e.lat_values > 0
    fired = torch.bincount(e.lat_cols[fired_mask], minlength=S)
    return dict(mse=mse, l1=e.row_values.sum() / B, aux=aux_loss, l0=fired_mask.sum() / B, fired=fired)
