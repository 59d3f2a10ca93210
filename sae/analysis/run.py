"""`monoscope analyze`: analyse the neuron basis and every SAE of a run over held-out tokens into analysis/<basis>/.

Reads corpus/heldout.npy (sae.corpus.build.load_heldout: the first `n_tokens` of its rows in the corpus's seeded
order, rounded up to whole sequences, or all of them when fewer), the LM and the SAEs; writes basis.json, units.npz
(and links.npz for an SAE) per basis through `write_stage`, with the fingerprints of corpus, lm (and sae) as inputs
and the config (its `conventions` included), so an unchanged basis is skipped. One pass-1 loop serves every basis
that is out of date; it runs as shards of sequences on an executor (sae/analysis/executor.py: here, or Ray tasks
that load everything from the run folder through `run_shard`), and the reduce runs here. The spills live in a
temporary folder under analysis/ and are removed at the end. What the LM-loss metrics compute of the clean LM is
kept in the run's .cache/lm-losses/ for the next analysis (sae/analysis/loss_cache.py).
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from itertools import chain
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sae import rundir
from sae.analysis.effects import Windows, ablation_effects
from sae.analysis.executor import LocalExecutor, shard_ranges
from sae.analysis.logits import links, logit_effects
from sae.analysis.loss_cache import CleanRowsCache, clean_rows_cache
from sae.analysis.npz import save_npz
from sae.analysis.proxies import Proxy
from sae.analysis.proxy_run import analysis_proxies, heldout_scores
from sae.analysis.proxy_scores import buckets
from sae.analysis.reduce import BasisResult, finish
from sae.analysis.residuals import Residuals, keeps
from sae.analysis.shard import ActsFn, AnalysisConfig, Basis, ShardState, analyze_shard, loss_mean
from sae.conventions import NEURON_BASIS
from sae.corpus.build import load_heldout
from sae.errors import MonoscopeError
from sae.lm.head_losses import loss_model
from sae.lm.losses import LossModel
from sae.memory import give_back_freed_memory


def list_saes(run_dir: Path) -> list[str]:
    """Return the names of the completed SAEs in runs/<run>/saes/, sorted."""
    saes = Path(run_dir) / "saes"
    return sorted(p.name for p in saes.iterdir() if (p / rundir.MANIFEST).exists()) if saes.is_dir() else []


@dataclass(frozen=True)
class PlannedBasis:
    """A basis that needs (re)analysis: where it comes from, where it goes, and what its stage records."""

    name: str
    sae_dir: Path | None  # None: the neuron basis
    out_dir: Path  # analysis/<name>
    config: dict  # the analysis config plus the basis name (the stage's config)
    inputs: dict[str, str]  # fingerprints of corpus, lm (and the SAE)


@dataclass(frozen=True)
class LoadedBasis:
    """A planned basis with its units loaded: the Basis the passes run on, and the SAE's cfg.json (None: neurons)."""

    plan: PlannedBasis
    basis: Basis
    sae_cfg: dict | None


def _plan(run_dir: Path, sae_names: list[str] | None, cfg: AnalysisConfig, force: bool,
          include_neurons: bool) -> list[PlannedBasis]:
    """Return the bases that need (re)analysis: the neurons (if included) first, then the SAEs asked for."""
    inputs = {"corpus": rundir.fingerprint(run_dir / "corpus", "corpus"),
              "lm": rundir.fingerprint(run_dir / "lm", "lm")}
    available = list_saes(run_dir)
    names = available if sae_names is None else list(sae_names)
    for name in names:
        if name not in available:
            have = ", ".join(available) or "none"
            raise MonoscopeError(f"no trained SAE {name!r} in {run_dir / 'saes'} (have: {have})")
        if name == NEURON_BASIS:
            raise MonoscopeError(f"an SAE may not be named {NEURON_BASIS!r}: that name is the neuron basis")
    todo = []
    neurons = [(NEURON_BASIS, None)] if include_neurons else []
    for name, sae_dir in neurons + [(n, run_dir / "saes" / n) for n in names]:
        basis_inputs = dict(inputs, sae=rundir.fingerprint(sae_dir, "sae")) if sae_dir else inputs
        config = {**asdict(cfg), "basis": name}
        out_dir = run_dir / "analysis" / name
        if force or not rundir.is_current(out_dir, config=config, inputs=basis_inputs):
            todo.append(PlannedBasis(name, sae_dir, out_dir, config, basis_inputs))
    return todo


def _heldout(run_dir: Path, cfg: AnalysisConfig, log: Callable[[str], None]) -> tuple[np.ndarray, AnalysisConfig]:
    """Return the held-out tokens [n_seq, T] to analyse and cfg with n_tokens set to their number."""
    tokens = load_heldout(run_dir, cfg.n_tokens)
    if tokens.size < cfg.n_tokens:
        log(f"held-out tokens: all {tokens.size:,} of them (fewer than the {cfg.n_tokens:,} asked for)")
    return tokens, replace(cfg, n_tokens=int(tokens.size))


def _load_bases(todo: list[PlannedBasis], d_in: int) -> list[LoadedBasis]:
    """Return each planned basis with its units: the identity for the neurons, the SAE (float32, frozen) else."""
    from sae.dictionary.saelens_format import load_sae

    loaded = []
    for planned in todo:
        if planned.sae_dir is None:
            loaded.append(LoadedBasis(planned, Basis(planned.name, d_in), None))
            continue
        sae, _ = load_sae(planned.sae_dir)
        sae = sae.float().requires_grad_(False)
        if sae.W_enc.shape[0] != d_in:
            raise MonoscopeError(f"SAE {planned.name!r} has d_in {sae.W_enc.shape[0]}, the LM's MLP has {d_in}")
        sae_cfg = json.loads((planned.sae_dir / "cfg.json").read_text())
        loaded.append(LoadedBasis(planned, Basis(planned.name, sae.W_enc.shape[1], sae), sae_cfg))
    return loaded


def _lm_functions(model, dev: torch.device, tokens: np.ndarray, cfg: AnalysisConfig,
                  cache: CleanRowsCache | None) -> tuple[ActsFn, LossModel]:
    """Return the LM as the shard pass sees it: activations on CPU, and its LM-loss sums (sae/lm/losses.py), what
    they compute of the clean LM kept in cache (None: nothing kept)."""
    from sae import lm

    def acts_fn(batch: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, T, d_mlp] on CPU
        return lm.mlp_activations(model, batch.to(dev)).float().cpu()

    return acts_fn, loss_model(model, dev, tokens, cfg.loss_batch_sequences, cache)


@dataclass(frozen=True)
class ShardJob:
    """One shard as a Ray task sees it: everything `run_shard` needs to rebuild it from the run folder (picklable)."""

    run_dir: Path  # absolute: workers on other machines see it at the same path (a shared filesystem)
    plans: list[PlannedBasis]
    cfg: AnalysisConfig  # n_tokens: the analysed tokens, so load_heldout gives the driver's array
    seq_range: tuple[int, int]
    spill_dir: Path  # under run_dir/analysis, where the reduce reads the spills back
    device: str
    mean: torch.Tensor | None  # [d_in] mean ablation's vector, computed once by the driver
    proxy_scores: np.ndarray | None = None  # [seq_end - seq_start, T, K] this shard's token proxy scores
    residuals: bool = False  # keep the final residual rows in spill_dir for the ablation effects


def run_shard(job: ShardJob) -> list[ShardState]:
    """Return one shard's pass-1 states, loading the LM, the bases and the tokens from the run folder (a Ray task)."""
    from sae import lm
    from sae.device import resolve_device

    if not (job.run_dir / "lm").is_dir() or not job.spill_dir.is_dir():
        raise MonoscopeError(f"the Ray worker on {socket.gethostname()} cannot see the run folder {job.run_dir}: "
                             "workers need it on a shared filesystem, at the same path")
    dev = resolve_device(job.device)
    model = lm.load_lm(job.run_dir, dev)
    tokens = load_heldout(job.run_dir, job.cfg.n_tokens)
    bases = [item.basis for item in _load_bases(job.plans, int(model.cfg.d_mlp))]
    acts_fn, losses = _lm_functions(model, dev, tokens, job.cfg, clean_rows_cache(job.run_dir, job.cfg, dev))
    return analyze_shard(acts_fn, losses, tokens, job.seq_range, bases, job.cfg, job.spill_dir, mean=job.mean,
                         proxy_scores=job.proxy_scores, proxy_from=job.seq_range[0],
                         residuals=job.spill_dir if job.residuals else None)


def _passes(run_dir: Path, model, dev: torch.device, tokens: np.ndarray, loaded: list[LoadedBasis],
            cfg: AnalysisConfig, executor, device: str, progress: bool, log: Callable[[str], None],
            proxies: list[Proxy], spill: Path, residuals: bool) -> tuple[list[BasisResult], list[tuple[int, int]]]:
    """Run pass 1 over all tokens for every basis at once, as shards on the executor, then the reduce here; return
    the results and the shards' sequence ranges. The spills live in `spill` (and with residuals, the final residual
    rows that the ablation effects read: sae/analysis/residuals.py)."""
    from tqdm import tqdm

    cache = clean_rows_cache(run_dir, cfg, dev, tidy=True)
    acts_fn, losses = _lm_functions(model, dev, tokens, cfg, cache)
    bases = [item.basis for item in loaded]
    started = time.perf_counter()
    ranges = shard_ranges(len(tokens), cfg.batch_sequences, executor.n_shards())
    # mean ablation's vector, one for every shard
    mean = loss_mean(acts_fn, tokens, cfg) if cache is None else cache.mean(lambda: loss_mean(acts_fn, tokens, cfg))
    give_back_freed_memory()  # the mean's forwards, before pass 1
    scores = None
    if proxies:
        scored = time.perf_counter()
        scores = heldout_scores(run_dir, proxies, len(tokens))  # [n_seq, T, K], once for every basis
        log(f"proxy scores of {len(proxies)} proxies: {time.perf_counter() - scored:.1f} s")
    if len(ranges) > 1:
        log(f"pass 1 in {len(ranges)} shards of about {len(tokens) // len(ranges):,} sequences"
            + (" on Ray" if executor.remote else ""))
    with tqdm(total=int(tokens.size), unit="tok", unit_scale=True, disable=not progress, desc="analyze") as bar:
        if executor.remote:
            jobs = [ShardJob(run_dir.resolve(), [item.plan for item in loaded], cfg, r, spill, device, mean,
                             None if scores is None else scores[r[0]: r[1]], residuals) for r in ranges]
            n_tokens = [(end - start) * tokens.shape[1] for start, end in ranges]
            states = executor.map(run_shard, jobs, lambda i: bar.update(n_tokens[i]))
        else:
            states = executor.map(lambda r: analyze_shard(acts_fn, losses, tokens, r, bases, cfg, spill, bar.update,
                                                          mean, scores, residuals=spill if residuals else None),
                                  ranges)
    give_back_freed_memory()  # pass 1's heap, before pass 2's windows
    log("pass 2 over the spilled activations: histograms, intervals, context windows")
    results = finish(states, bases, tokens, cfg, None if scores is None else buckets(scores))
    log(f"passes 1 and 2: {time.perf_counter() - started:.1f} s")
    return results, ranges


def _residual_directions(basis: Basis, W_out: torch.Tensor) -> torch.Tensor:
    """Return [U, d_model]: what one unit of each unit's activation adds to the residual stream (through W_out)."""
    return W_out if basis.sae is None else basis.sae.W_dec.detach() @ W_out


def _add_ablation_effects(model, dev: torch.device, tokens: np.ndarray, results: list[BasisResult],
                          directions: list[torch.Tensor], cfg: AnalysisConfig, progress: bool,
                          log: Callable[[str], None], residuals: Residuals | None) -> None:
    """Add top_effects and interval_effects (sae/analysis/effects.py) to every basis's arrays; the final residual
    from `residuals` (kept by pass 1) or, where None, from a forward."""
    from tqdm import tqdm

    from sae import lm

    if model.cfg.n_layers != 1:
        log(f"ablation effects left out: the LM has {model.cfg.n_layers} layers, and the per-position effect is exact"
            " for one layer only")
        return
    windows = [Windows(r.units[:r.n_open], r.centers[:r.n_open], r.acts[:r.n_open], d, cfg.context_before)
               for r, d in zip(results, directions)]
    started, pairs = time.perf_counter(), []
    with tqdm(unit="pair", unit_scale=True, disable=not progress, desc="ablation effects") as bar:
        resid_fn = residuals or (lambda s0, s1: lm.final_residual(
            model, torch.from_numpy(np.asarray(tokens[s0:s1], dtype=np.int64)).to(dev)).cpu())
        effects = ablation_effects(resid_fn, lm.readout(model), tokens, windows, cfg.batch_sequences,
                                   progress=lambda n: (bar.update(n), pairs.append(n)))
    log(f"ablation effects: {sum(pairs):,} (token, unit) pairs in {time.perf_counter() - started:.1f} s")
    for result, effect in zip(results, effects):
        arrays = result.arrays
        n_top = arrays["top_acts"].shape[0] * arrays["top_acts"].shape[1]
        arrays["top_effects"] = effect[:n_top].reshape(arrays["top_acts"].shape)
        arrays["interval_effects"] = effect[n_top:].reshape(arrays["interval_acts"].shape)


def _write_basis(loaded: LoadedBasis, result: BasisResult, directions: torch.Tensor, W_U: torch.Tensor,
                 tokens: np.ndarray, cfg: AnalysisConfig, proxies: list[Proxy]) -> None:
    """Add the weight-based views to one basis's result and write its stage: units.npz, links.npz, basis.json."""
    from sae import lm

    basis, arrays, summary = loaded.basis, result.arrays, result.summary
    arrays.update(logit_effects(directions, W_U, cfg.logit_k, cfg.logit_hist_bins))
    d_in = basis.n_units if basis.sae is None else int(basis.sae.W_enc.shape[0])
    meta = {"name": basis.name, "kind": basis.kind, "n_units": basis.n_units, "d_in": d_in, "hook_name": lm.HOOK_POST,
            "sae": None if basis.sae is None else {"name": basis.name, "architecture": basis.sae.cfg.architecture,
                                                   "cfg": loaded.sae_cfg},
            "n_tokens": int(tokens.size), "n_ctx": int(tokens.shape[1]), "context_before": cfg.context_before,
            "context_after": cfg.context_after, "top_k": cfg.top_k, "n_intervals": cfg.n_intervals,
            "samples_per_interval": cfg.samples_per_interval, "review_top_k": cfg.review_top_k,
            "review_samples_per_interval": cfg.review_samples_per_interval, "logit_k": cfg.logit_k,
            "ablation_effects": "top_effects" in arrays,
            "proxies": [{"name": p.name, "kind": p.kind, "description": p.description} for p in proxies], **summary}
    if proxies:
        arrays["proxy_names"] = np.array([p.name for p in proxies])
    planned = loaded.plan
    with rundir.write_stage(planned.out_dir, stage="analysis", config=planned.config, inputs=planned.inputs) as tmp:
        save_npz(tmp / "units.npz", chain(arrays.items(), result.token_ids(tokens, cfg.context_before)))
        if basis.sae is not None:
            np.savez(tmp / "links.npz", **links(basis.sae.W_dec.detach(), cfg.n_links))
        (tmp / "basis.json").write_text(json.dumps(meta, indent=1))


def run_analysis(run_dir: Path, *, sae_names: list[str] | None = None, cfg: AnalysisConfig = AnalysisConfig(),
                 force: bool = False, device: str = "auto", progress: bool = True, include_neurons: bool = True,
                 log: Callable[[str], None] = print, executor=None) -> dict[str, dict]:
    """Analyse the out-of-date bases of a run; return {basis name: metrics} of every basis analysed now.

    sae_names: SAEs under saes/ (None: all); the neuron basis comes too unless include_neurons is False.
    executor: where pass 1's shards run (sae/analysis/executor.py; None: here, in one shard). The result is the
    same, to the bit, whatever the executor and the number of shards.
    """
    from sae import lm
    from sae.device import resolve_device

    run_dir = Path(run_dir)
    tokens, cfg = _heldout(run_dir, cfg, log)
    todo = _plan(run_dir, sae_names, cfg, force, include_neurons)
    if not todo:
        log("analysis is up to date (use --force to redo it)")
        return {}
    dev = resolve_device(device)
    model = lm.load_lm(run_dir, dev)
    W_out, W_U = (w.detach().float().cpu() for w in lm.unembed_directions(model))
    loaded = _load_bases(todo, W_out.shape[0])
    bases = [item.basis for item in loaded]
    log(f"analysing {', '.join(b.name for b in bases)} over {tokens.size:,} held-out tokens")
    proxies = analysis_proxies(run_dir, cfg.proxies, cfg.extra_proxies)
    (run_dir / "analysis").mkdir(parents=True, exist_ok=True)
    for stale in (run_dir / "analysis").glob(".spill-*"):  # left by a killed analysis
        shutil.rmtree(stale, ignore_errors=True)
    d_model = int(model.cfg.d_model)
    keep = model.cfg.n_layers == 1 and keeps(int(tokens.size), d_model)  # what the effects read
    with tempfile.TemporaryDirectory(dir=run_dir / "analysis", prefix=".spill-") as spill_dir:
        spill = Path(spill_dir).resolve()
        results, ranges = _passes(run_dir, model, dev, tokens, loaded, cfg, executor or LocalExecutor(), device,
                                  progress, log, proxies, spill, keep)
        give_back_freed_memory()  # pass 2's heap, before the effects
        directions = [_residual_directions(b, W_out) for b in bases]
        kept = Residuals(spill, ranges, tokens.shape[1], d_model) if keep else None
        _add_ablation_effects(model, dev, tokens, results, directions, cfg, progress, log, kept)
    give_back_freed_memory()  # the effects' heap, before the windows' token ids
    for item, result, d in zip(loaded, results, directions):
        _write_basis(item, result, d, W_U, tokens, cfg, proxies)
    return {item.basis.name: result.summary["metrics"] for item, result in zip(loaded, results)}
