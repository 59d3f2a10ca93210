"""Per-unit analysis of every basis (MLP neurons and each SAE) over held-out tokens, as mergeable shards.

`analyze_shard` is pass 1 over one shard of sequences: ONE LM forward per batch (stopped at the hook, or run
through the block when the final residual is kept for the ablation effects: sae/analysis/residuals.py) feeds every
basis; each basis encodes (identity for neurons), takes its non-zeros once (a compiled pass), updates its `UnitStats`,
keeps the batch's `BasisSums` and spills the non-zeros to disk. `sae.analysis.reduce.finish` is the reduce: it
merges pass-1 states, then streams each shard's spill for pass 2 (histograms, intervals, reservoirs; no second
encode) and the windows, and returns the arrays of units.npz. Shards are independent (their states pickle), so they
can run in separate processes or machines and meet in `finish` (sae/analysis/executor.py); the two-pass scheme is
described in sae/analysis/state.py.
The sharded result equals the whole one exactly (tests/sae/test_analysis.py, tests/sae/test_executors.py): the
LM-loss region (the first `loss_tokens`) is counted from sequence 0 of the token array, not from the shard's start,
and its mean activation (mean ablation's vector) is one vector for all shards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sae.analysis.config import AnalysisConfig
from sae.analysis.proxy_stats import ProxyStats
from sae.analysis.residuals import append, shard_file
from sae.analysis.spill import Spill
from sae.analysis.state import UnitStats
from sae.conventions import BOS_POSITION
from sae.dictionary.architectures import Activation
from sae.compiled import kernels as compiled_kernels
from sae.dictionary.fast.select import kernels
from sae.dictionary.metrics import ReconstructionSums
from sae.dictionary.model import sparse_decode
from sae.lm.losses import LossModel, LossSums, mean_activation
from sae.memory import give_back_freed_memory

ActsFn = Callable[[torch.Tensor], torch.Tensor]  # tokens [B, T] long -> MLP activations [B, T, d_in]


@dataclass
class Basis:
    """A set of directions in the hook's activation space: the neurons themselves, or an SAE's dictionary."""

    name: str
    n_units: int
    sae: torch.nn.Module | None = None  # SparseAutoencoder; None = neuron basis (identity encoder)

    @property
    def kind(self) -> str:
        return "neuron" if self.sae is None else "sae"


@dataclass
class BasisSums:
    """Mergeable sums behind the per-basis metrics: reconstruction and sparsity (the same sums as training's
    evaluation) and the LM losses and KL divergences (sae.lm.losses.LossSums)."""

    recon: ReconstructionSums = field(default_factory=ReconstructionSums)
    loss: LossSums = field(default_factory=LossSums)

    def merge(self, other: "BasisSums") -> "BasisSums":
        return BasisSums(self.recon.merge(other.recon), self.loss.merge(other.loss))


@dataclass
class ShardState:
    """Pass-1 result of one basis over one shard of sequences [seq_start, seq_end).

    batch_sums holds one `BasisSums` per batch, unmerged: the reduce folds the batches of all shards in token order,
    so that the float sums are added in the same order however the sequences were sharded (a few numbers and one
    [d_in] mean per batch).
    """

    seq_start: int
    seq_end: int
    stats: UnitStats
    batch_sums: list[BasisSums]
    spill: Spill = field(repr=False)
    proxies: ProxyStats | None = None  # the proxy sums (sae/analysis/proxy_stats.py); None without proxies


@torch.no_grad()
def analyze_shard(acts_fn: ActsFn, losses: LossModel | None, tokens: np.ndarray, seq_range: tuple[int, int],
                  bases: list[Basis], cfg: AnalysisConfig, spill_dir: Path,
                  progress: Callable[[int], None] | None = None, mean: torch.Tensor | None = None,
                  proxy_scores: np.ndarray | None = None, proxy_from: int = 0,
                  residuals: Path | None = None) -> list[ShardState]:
    """Return pass-1 states (one per basis) of sequences seq_range of tokens [n_seq, T]; spills go to spill_dir.

    mean [d_in]: `loss_mean(acts_fn, tokens, cfg)`, computed here when not given (a driver computes it once for all
    shards). Batches start at multiples of batch_sequences from sequence 0 when seq_range starts on one.
    proxy_scores [m, T, K]: the token scores of sequences proxy_from.. (sae/analysis/proxy_run.py), or None.
    residuals: a folder where the shard's final residual rows are kept for the ablation effects
    (sae/analysis/residuals.py; needs losses, whose forward gives them), or None.
    """
    seq_start, seq_end = seq_range
    n_ctx = tokens.shape[1]
    n_proxies = 0 if proxy_scores is None else proxy_scores.shape[-1]
    states = [ShardState(seq_start, seq_end, UnitStats(b.n_units, cfg.top_k), [],
                         Spill.create(Path(spill_dir) / f"{b.name.replace('/', '_')}-{seq_start}", b.n_units),
                         ProxyStats(b.n_units, n_proxies) if n_proxies else None)
              for b in bases]
    buffers: dict[str, torch.Tensor] = {}
    loss_limit = math.inf if cfg.loss_tokens is None else cfg.loss_tokens
    if losses is not None and mean is None:
        mean = loss_mean(acts_fn, tokens, cfg)
    if residuals is not None:
        if losses is None:
            raise ValueError("keeping the final residual needs the LM's loss model: its forward gives it")
        kept_residuals = shard_file(residuals, seq_start)
        kept_residuals.write_bytes(b"")  # a task run again starts its file again
    for s0 in range(seq_start, seq_end, cfg.batch_sequences):
        s1 = min(s0 + cfg.batch_sequences, seq_end)
        batch = torch.from_numpy(np.asarray(tokens[s0:s1], dtype=np.int64))  # [B, T]
        token_offset = s0 * n_ctx
        # The loss region is the whole batches that start before loss_tokens, counted from the array's start.
        with_loss = losses is not None and token_offset < loss_limit
        if with_loss or residuals is not None:  # the loss's forward also yields the activations (and the residual)
            post, kept, final = losses.forward(batch, final=residuals is not None)
            if final is not None:
                append(kept_residuals, final)
        else:
            post = acts_fn(batch)
        x = post.reshape(-1, post.shape[-1]).float()  # [N, d_in]
        reconstructions, batch_sums = {}, []
        n = x.shape[0]
        # Statistics leave BOS out (sae.conventions); the spill keeps it, so context windows still show it.
        counted = torch.arange(n) % n_ctx != BOS_POSITION  # [N]
        x_counted = x[counted]  # [N - B, d_in]
        scores = None if not n_proxies else proxy_scores[s0 - proxy_from: s1 - proxy_from].reshape(n, -1)[
            counted.numpy()]  # [N - B, K]
        for basis, state in zip(bases, states):
            rows, units, values = _firing(basis, x, buffers)
            row_counts = np.bincount(rows, minlength=n)  # [N] non-zeros per token
            keep = rows % n_ctx != BOS_POSITION  # [nnz]
            state.stats.update(rows[keep], units[keep], values[keep], len(x_counted), token_offset)
            if state.proxies is not None:  # rows among the counted tokens: each sequence drops its BOS
                r = rows[keep]
                state.proxies.update(scores, r - r // n_ctx - 1, units[keep], values[keep],
                                     x_counted if basis.sae is None else None)
            state.spill.append(row_counts, units, values)
            sums = BasisSums()
            state.batch_sums.append(sums)
            batch_sums.append((basis.name, sums))
            if basis.sae is not None:
                x_hat = _decode_sparse(basis.sae, row_counts, units, values)  # [N, d_in]
                if with_loss:
                    reconstructions[basis.name] = x_hat.reshape(post.shape)
                counted_err = x_hat[counted].sub_(x_counted)  # [N - B, d_in]
                sq_err = float(counted_err.pow(2).sum())
                sums.recon.add(len(x_counted), int(keep.sum()), x=x_counted, sq_err=sq_err,
                               x_hat=counted_err.add_(x_counted))  # (x̂ - x) + x, as the metrics always had it
            else:
                sums.recon.add(len(x_counted), int(keep.sum()))
        if with_loss:  # after the encoders: each SAE's reconstruction is its splice
            shared, own = losses.sums(kept, batch, post, mean, reconstructions, s0)
            for name, sums in batch_sums:
                sums.loss = shared.merge(own.get(name, LossSums()))
        if progress is not None:
            progress(n)
        if (s0 - seq_start) // cfg.batch_sequences % TRIM_EVERY == TRIM_EVERY - 1:
            give_back_freed_memory()
    return states


def loss_mean(acts_fn: ActsFn, tokens: np.ndarray, cfg: AnalysisConfig) -> torch.Tensor | None:
    """Return the mean activation [d_in] over the loss tokens after BOS: what mean ablation puts there (None: no
    loss metrics). The loss runs on the whole batches that start before loss_tokens: these batches' sequences, of the
    whole token array tokens [n_seq, T], whichever shard they fall in."""
    if cfg.loss_tokens == 0:
        return None
    n_seq = len(tokens)
    if cfg.loss_tokens is not None:
        n_seq = min(n_seq, math.ceil(cfg.loss_tokens / (cfg.batch_sequences * tokens.shape[1])) * cfg.batch_sequences)
    return mean_activation(acts_fn(torch.from_numpy(np.asarray(tokens[s: min(s + cfg.batch_sequences, n_seq)],
                                                               dtype=np.int64)))
                           for s in range(0, n_seq, cfg.batch_sequences))


def _buffer(buffers: dict, key: str, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """Return a reused buffer of at least this many rows (large fresh tensors page-fault on every batch)."""
    buf = buffers.get(key)
    if buf is None or buf.shape[0] < shape[0] or buf.dtype != dtype:
        buf = buffers[key] = torch.empty(shape, dtype=dtype)
    return buf[: shape[0]]


TRIM_EVERY = 4  # batches between returns of the heap's free pages: a batch's temporaries vary in size with its
# non-zeros, and the holes they leave grew the resident heap by ~0.12 GiB over 32 batches
ENCODE_ROWS = 2048  # rows encoded at a time: a [2048, U] pre-activation buffer, not the batch's [8192, U] (96 MB less
# at 4,096 units); the rows' values are the same to the bit either way (a matmul's row does not depend on the others)


def _firing(basis: Basis, x: torch.Tensor, buffers: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (rows, units, values) [nnz] of the units firing on x [N, d_in]: token-ordered, units ascending within a
    token. An SAE encodes ENCODE_ROWS rows at a time into one reused buffer."""
    if basis.sae is None or len(x) <= ENCODE_ROWS:
        return _firing_rows(basis, x, buffers)
    starts = range(0, len(x), ENCODE_ROWS)
    rows, units, values = zip(*(_firing_rows(basis, x[r0: r0 + ENCODE_ROWS], buffers) for r0 in starts))
    return (np.concatenate([r + r0 for r, r0 in zip(rows, starts)]), np.concatenate(units),
            np.concatenate(values))


def _firing_rows(basis: Basis, x: torch.Tensor, buffers: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_firing` of one block of rows. A TopK SAE's come from the compiled selection of each row's k largest
    pre-activations (their float32 bits read as int32 order the positive ones as floats; the others are dropped by the
    ReLU), never a dense [N, U] f: 4x less time than torch.topk, a scatter into zeros and torch.nonzero. A row with a
    tie at its k-th largest value (two in the demo's million tokens) is selected by torch.topk, so the units are
    sae.encode's, whoever breaks the tie."""
    sae = basis.sae
    compiled = kernels(x.device) if sae is not None and sae.cfg.arch.activation is Activation.TOPK else None
    if compiled is not None and basis.n_units % compiled.LANES == 0 and 0 < sae.cfg.k <= compiled.LANES:
        k, pre = sae.cfg.k, _pre_activations(basis, x, buffers)
        keys, cols = np.empty((len(x), k), np.int32), np.empty((len(x), k), np.int64)
        tied = np.empty(len(x), dtype=bool)
        compiled.rows_topk(pre.numpy().view(np.int32), k, keys, cols, tied, 8 * torch.get_num_threads())
        if tied.any():  # a tie at the k-th value: those rows as torch.topk chooses, as sae.encode does
            again = np.flatnonzero(tied)
            top = pre[torch.from_numpy(again)].topk(k, dim=-1, sorted=False)
            keys[again], cols[again] = top.values.numpy().view(np.int32), top.indices.numpy()
        order = np.argsort(cols, axis=1, kind="stable")
        cols, values = np.take_along_axis(cols, order, 1), np.take_along_axis(keys, order, 1).view(np.float32)
        firing = ~(values <= 0)  # the ReLU's non-zeros (NaN stays, as torch.nonzero keeps it)
        rows = np.repeat(np.arange(len(x), dtype=np.int64), k).reshape(len(x), k)[firing]
        return rows, cols[firing], values[firing]
    if sae is None or sae.cfg.arch.activation is Activation.RELU:
        firing = compiled_kernels("sae.analysis.firing_kernels", x.device)
        if firing is not None:  # one compiled pass for the bias, the ReLU, the non-zeros and their values
            pre = x if sae is None else _pre_activations(basis, x, buffers, bias=False)
            bias = np.zeros(basis.n_units, np.float32) if sae is None else sae.b_enc.detach().numpy()
            # Neurons may be negative (GELU) and fire where positive; an SAE's ReLU keeps NaN, which nonzero counts.
            return firing.firing_entries(np.ascontiguousarray(pre.numpy()), bias, sae is not None)
    f = _encode(basis, x, buffers)  # [N, U]
    # Neurons may be negative (GELU); SAE outputs are >= 0, so for them non-zero means firing.
    firing = f if sae is not None else torch.gt(f, 0, out=_buffer(buffers, "mask", f.shape, torch.bool))
    nz = torch.nonzero(firing).numpy()  # [nnz, 2], token-ordered
    rows, units = nz[:, 0].copy(), nz[:, 1].copy()
    return rows, units, f.numpy().reshape(-1)[rows * basis.n_units + units]  # (masked_select is 10x slower here)


def _encode(basis: Basis, x: torch.Tensor, buffers: dict) -> torch.Tensor:
    """Return unit activations f [N, U] of x [N, d_in] (neurons: x itself), written into a reused buffer."""
    sae = basis.sae
    if sae is None:
        return x
    pre = _pre_activations(basis, x, buffers)
    if sae.cfg.arch.activation is Activation.RELU:  # in place: the same maths as sae.activate, no new [N, U]
        return pre.relu_()
    return sae.activate(pre)


def _pre_activations(basis: Basis, x: torch.Tensor, buffers: dict, bias: bool = True) -> torch.Tensor:
    """Return an SAE basis's pre-activations [N, U] of x [N, d_in] (without b_enc unless bias), written into the
    basis's reused buffer."""
    sae = basis.sae
    pre = torch.matmul(x - sae.b_dec, sae.W_enc, out=_buffer(buffers, basis.name, (x.shape[0], basis.n_units), x.dtype))
    return pre.add_(sae.b_enc) if bias else pre


def _decode_sparse(sae, row_counts: np.ndarray, units: np.ndarray, values: np.ndarray) -> torch.Tensor:
    """Return x_hat [N, d_in] from the non-zeros only; row_counts [N], units and values [nnz] in token order."""
    offsets = np.zeros(len(row_counts), dtype=np.int64)
    np.cumsum(row_counts[:-1], out=offsets[1:])
    x_hat = sparse_decode(sae.W_dec, torch.from_numpy(units), torch.from_numpy(offsets), torch.from_numpy(values))
    return x_hat.add_(sae.b_dec)
