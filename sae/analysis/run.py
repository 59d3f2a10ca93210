"""`monoscope analyze`: analyse the neuron basis and every SAE of a run over held-out tokens into analysis/<basis>/.

Reads corpus/heldout.npy (the first `n_tokens`, rounded up to whole sequences, or all of them when fewer), the LM
and the SAEs; writes basis.json, units.npz (and links.npz for an SAE) per basis through `write_stage`, with the
fingerprints of corpus, lm (and sae) as inputs, so an unchanged basis is skipped. One pass-1 loop serves every basis
that is out of date; the spills live in a temporary folder under analysis/ and are removed at the end.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sae import rundir
from sae.analysis.logits import links, logit_effects
from sae.analysis.reduce import finish
from sae.analysis.shard import AnalysisConfig, Basis, analyze_shard
from sae.conventions import NEURON_BASIS
from sae.errors import MonoscopeError


def list_saes(run_dir: Path) -> list[str]:
    """Return the names of the completed SAEs in runs/<run>/saes/, sorted."""
    saes = Path(run_dir) / "saes"
    return sorted(p.name for p in saes.iterdir() if (p / rundir.MANIFEST).exists()) if saes.is_dir() else []


def load_heldout(run_dir: Path, n_tokens: int) -> np.ndarray:
    """Return the first ceil(n_tokens / T) held-out sequences [n_seq, T] (memory-mapped; all when fewer)."""
    path = Path(run_dir) / "corpus" / "heldout.npy"
    if not path.exists():
        raise MonoscopeError(f"no held-out tokens at {path}: run `monoscope corpus` first")
    if n_tokens <= 0:
        raise MonoscopeError(f"--tokens must be positive, got {n_tokens}")
    heldout = np.load(path, mmap_mode="r")
    if heldout.ndim != 2 or len(heldout) == 0:
        raise MonoscopeError(f"{path}: expected a non-empty [n_sequences, n_ctx] array, got shape {heldout.shape}")
    return heldout[: min(math.ceil(n_tokens / heldout.shape[1]), len(heldout))]


def _plan(run_dir: Path, sae_names: list[str] | None, cfg: AnalysisConfig, force: bool, include_neurons: bool):
    """Return [(basis name, sae dir or None, out dir, config, inputs)] of the bases that need (re)analysis."""
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
            todo.append((name, sae_dir, out_dir, config, basis_inputs))
    return todo


def run_analysis(run_dir: Path, *, sae_names: list[str] | None = None, cfg: AnalysisConfig = AnalysisConfig(),
                 force: bool = False, device: str = "auto", progress: bool = True, include_neurons: bool = True,
                 log: Callable[[str], None] = print) -> dict[str, dict]:
    """Analyse the out-of-date bases of a run; return {basis name: metrics} of every basis analysed now.

    sae_names: SAEs under saes/ (None: all); the neuron basis comes too unless include_neurons is False.
    """
    from sae import lm
    from sae.device import resolve_device
    from sae.dictionary.saelens_format import load_sae

    run_dir = Path(run_dir)
    tokens = load_heldout(run_dir, cfg.n_tokens)
    if tokens.size < cfg.n_tokens:
        log(f"held-out tokens: all {tokens.size:,} of them (fewer than the {cfg.n_tokens:,} asked for)")
    cfg = replace(cfg, n_tokens=int(tokens.size))
    todo = _plan(run_dir, sae_names, cfg, force, include_neurons)
    if not todo:
        log("analysis is up to date (use --force to redo it)")
        return {}
    dev = resolve_device(device)
    model = lm.load_lm(run_dir, dev)
    W_out, W_U = (w.detach().float().cpu() for w in lm.unembed_directions(model))
    bases, cfgs = [], {}
    for name, sae_dir, *_ in todo:
        if sae_dir is None:
            bases.append(Basis(name, W_out.shape[0]))
            continue
        sae, _ = load_sae(sae_dir)
        sae = sae.float().requires_grad_(False)
        if sae.W_enc.shape[0] != W_out.shape[0]:
            raise MonoscopeError(f"SAE {name!r} has d_in {sae.W_enc.shape[0]}, the LM's MLP has {W_out.shape[0]}")
        bases.append(Basis(name, sae.W_enc.shape[1], sae))
        cfgs[name] = json.loads((sae_dir / "cfg.json").read_text())

    def acts_fn(batch: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, T, d_mlp] on CPU
        return lm.mlp_activations(model, batch.to(dev)).float().cpu()

    def loss_fn(batch: torch.Tensor, replace_post) -> float:
        if replace_post is None:
            return float(lm.lm_loss(model, batch.to(dev), None))
        splice = lambda post: replace_post(post.cpu()).to(post.device, post.dtype)  # noqa: E731
        return float(lm.lm_loss(model, batch.to(dev), splice))

    from tqdm import tqdm

    log(f"analysing {', '.join(b.name for b in bases)} over {tokens.size:,} held-out tokens")
    (run_dir / "analysis").mkdir(parents=True, exist_ok=True)
    for stale in (run_dir / "analysis").glob(".spill-*"):  # left by a killed analysis
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=run_dir / "analysis", prefix=".spill-") as spill_dir:
        with tqdm(total=int(tokens.size), unit="tok", unit_scale=True, disable=not progress, desc="analyze") as bar:
            states = analyze_shard(acts_fn, loss_fn, tokens, (0, len(tokens)), bases, cfg, Path(spill_dir), bar.update)
        log("pass 2 over the spilled activations: histograms, intervals, context windows")
        results = finish([states], bases, tokens, cfg)
    out = {}
    for (name, sae_dir, out_dir, config, inputs), basis, (arrays, summary) in zip(todo, bases, results):
        out_dirs = W_out if basis.sae is None else basis.sae.W_dec.detach() @ W_out  # [U, d_model]
        arrays.update(logit_effects(out_dirs, W_U, cfg.logit_k, cfg.logit_hist_bins))
        meta = {"name": name, "kind": basis.kind, "n_units": basis.n_units, "d_in": int(W_out.shape[0]),
                "hook_name": lm.HOOK_POST,
                "sae": None if basis.sae is None else {"name": name, "architecture": basis.sae.cfg.architecture,
                                                       "cfg": cfgs[name]},
                "n_tokens": int(tokens.size), "n_ctx": int(tokens.shape[1]), "context_before": cfg.context_before,
                "context_after": cfg.context_after, "top_k": cfg.top_k, "n_intervals": cfg.n_intervals,
                "samples_per_interval": cfg.samples_per_interval, "logit_k": cfg.logit_k, **summary}
        with rundir.write_stage(out_dir, stage="analysis", config=config, inputs=inputs) as tmp:
            np.savez(tmp / "units.npz", **arrays)
            if basis.sae is not None:
                np.savez(tmp / "links.npz", **links(basis.sae.W_dec.detach(), cfg.n_links))
            (tmp / "basis.json").write_text(json.dumps(meta, indent=1))
        out[name] = summary["metrics"]
    return out
