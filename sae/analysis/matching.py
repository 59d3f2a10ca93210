"""Best matches between the units of two bases over the same held-out tokens: each unit's most correlated unit in
the other basis (sae/analysis/correlation.py). Two dictionaries of one LM measure feature splitting; the same kind
of basis in two LMs trained on the same corpus (another seed) measures universality, as the paper's figures do.

Both LMs read the same token rows (run A's held-out tokens in the corpus's seeded order; run B must share A's
tokenizer, so the ids mean the same text), one forward of each per batch, BOS left out as everywhere
(sae.conventions). Two SAEs of one LM also get their decoder-cosine matches, and two of different sizes their
family edges (sae/analysis/masked_cosine.py: every pair at a masked cosine of at least FAMILY_FLOOR). match.json
says what the pair measures (sae/analysis/pairs.py: universality, seed control, splitting). The result goes to
runs/<A>/analysis/matches/<name>/ (matches.npz, match.json) through write_stage, with the fingerprints of both LMs
and SAEs as inputs, so an unchanged match is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sae import rundir
from sae.analysis.config import AnalysisConfig
from sae.analysis.correlation import CorrelationSums
from sae.analysis.masked_cosine import MaskedSums
from sae.analysis.pairs import pair_relation, paper_population, training_config
from sae.conventions import FAMILY_FLOOR, NEURON_BASIS
from sae.errors import MonoscopeError, load_json
from sae.lm.config import read_lm_config

Encoder = Callable[[torch.Tensor], torch.Tensor]  # MLP post-activations [N, d_mlp] -> unit activations [N, U]


def match_name(basis_a: str, run_b: Path, basis_b: str) -> str:
    """Return the folder name of a match under runs/<A>/analysis/matches/."""
    return f"{basis_a}--{Path(run_b).name}--{basis_b}"


def check_compatible(run_a: Path, run_b: Path) -> None:
    """Refuse two runs whose token ids or MLP widths differ (one line each)."""
    vocabularies = [Path(r) / "corpus" / "token_strings.json" for r in (run_a, run_b)]  # id -> text
    for path in vocabularies:
        if not path.is_file():
            raise MonoscopeError(f"no tokenized corpus at {path.parent}: run `monoscope corpus` first")
    if json.loads(vocabularies[0].read_text()) != json.loads(vocabularies[1].read_text()):
        raise MonoscopeError(f"{run_b} has a different tokenizer from {run_a}: matches need the same token ids "
                             "(build the second run's corpus from the same source and settings)")
    d_a, d_b = (read_lm_config(r).get("d_mlp") for r in (run_a, run_b))
    if d_a != d_b:
        raise MonoscopeError(f"{run_a} has d_mlp {d_a} and {run_b} has d_mlp {d_b}: match LMs of the same width")


def _encoder(run: Path, basis: str) -> tuple[int, Encoder, torch.Tensor | None, str | None, dict | None]:
    """Return (units, encoder, decoder [U, d_in] or None, the SAE folder's fingerprint or None, its training
    settings or None) of a basis."""
    if basis == NEURON_BASIS:
        return int(read_lm_config(run)["d_mlp"]), (lambda x: x), None, None, None
    from sae.dictionary.saelens_format import load_sae

    folder = Path(run) / "saes" / basis
    fingerprint = rundir.fingerprint(folder, "sae")
    sae, _ = load_sae(folder)
    sae = sae.float().requires_grad_(False)
    training = training_config({"sae": {"cfg": load_json(folder / "cfg.json", "train the SAE again")}})
    return sae.W_enc.shape[1], sae.encode, sae.W_dec.detach(), fingerprint, training


def _decoder_matches(w_a: torch.Tensor, w_b: torch.Tensor) -> dict[str, np.ndarray]:
    """Return each decoder row's most similar row of the other dictionary (cosine), both ways."""
    cos = torch.nn.functional.normalize(w_a.float(), dim=1) @ torch.nn.functional.normalize(w_b.float(), dim=1).T
    a_cos, a_best = cos.max(1)
    b_cos, b_best = cos.max(0)
    return {"a_best_decoder": a_best.numpy(), "a_decoder_cos": a_cos.numpy(), "b_best_decoder": b_best.numpy(),
            "b_decoder_cos": b_cos.numpy()}


def match_bases(run_a: Path, basis_a: str, run_b: Path, basis_b: str, *,
                n_tokens: int = AnalysisConfig.n_tokens, batch_sequences: int = AnalysisConfig.batch_sequences,
                device: str = "auto", force: bool = False, progress: bool = True,
                log: Callable[[str], None] = print) -> dict:
    """Write the best matches of basis_a (run A) against basis_b (run B, may be A) over run A's first n_tokens
    held-out tokens; return match.json's summary (medians of the best-match correlations both ways)."""
    from tqdm import tqdm

    from sae import lm
    from sae.conventions import BOS_POSITION
    from sae.corpus.build import load_heldout
    from sae.device import resolve_device

    run_a, run_b = Path(run_a), Path(run_b)
    check_compatible(run_a, run_b)
    if run_a.resolve() == run_b.resolve() and basis_a == basis_b:
        raise MonoscopeError("a basis matched against itself tells nothing: name another basis or another run")
    (n_a, enc_a, dec_a, sae_a, train_a), (n_b, enc_b, dec_b, sae_b, train_b) = (_encoder(run_a, basis_a),
                                                                              _encoder(run_b, basis_b))
    same_lm = run_a.resolve() == run_b.resolve()
    relation = pair_relation(same_lm, "sae" if sae_a else "neuron", "sae" if sae_b else "neuron", n_a, n_b, train_a,
                             train_b)
    tokens = load_heldout(run_a, n_tokens)
    out_dir = run_a / "analysis" / "matches" / match_name(basis_a, run_b, basis_b)
    config = {"basis_a": basis_a, "run_b": str(run_b.resolve()), "basis_b": basis_b, "n_tokens": int(tokens.size),
              "family_floor": FAMILY_FLOOR if relation == "splitting" else None}
    inputs = {"corpus": rundir.fingerprint(run_a / "corpus", "corpus"), "lm_a": rundir.fingerprint(run_a / "lm", "lm"),
              "lm_b": rundir.fingerprint(run_b / "lm", "lm"), "sae_a": sae_a or "", "sae_b": sae_b or ""}
    if not force and rundir.is_current(out_dir, config=config, inputs=inputs):
        log(f"match: up to date at {out_dir} (use --force to redo it)")
        return json.loads((out_dir / "match.json").read_text())
    dev = resolve_device(device)
    lm_a = lm.load_lm(run_a, dev)
    lm_b = lm_a if same_lm else lm.load_lm(run_b, dev)
    sums = CorrelationSums.zeros(n_a, n_b)
    masked = MaskedSums.zeros(n_a, n_b) if relation == "splitting" else None
    fired_a, fired_b = np.zeros(n_a, np.int64), np.zeros(n_b, np.int64)  # tokens where each unit fires
    with torch.no_grad(), tqdm(total=int(tokens.size), unit="tok", unit_scale=True, disable=not progress,
                               desc="match") as bar:
        for s0 in range(0, len(tokens), batch_sequences):
            batch = torch.from_numpy(np.asarray(tokens[s0:s0 + batch_sequences], dtype=np.int64))
            keep = torch.arange(batch.shape[1]) != BOS_POSITION
            post_a = lm.mlp_activations(lm_a, batch.to(dev))[:, keep].reshape(-1, lm_a.cfg.d_mlp).cpu()
            post_b = post_a if lm_b is lm_a else lm.mlp_activations(lm_b, batch.to(dev))[:, keep].reshape(
                -1, lm_b.cfg.d_mlp).cpu()
            acts_a, acts_b = enc_a(post_a).numpy(), enc_b(post_b).numpy()
            sums.update(acts_a, acts_b)
            fired_a += (acts_a > 0).sum(0)
            fired_b += (acts_b > 0).sum(0)
            if masked is not None:
                masked.update(acts_a, acts_b)
            bar.update(batch.numel())
    a_best, a_corr, b_best, b_corr = sums.best_matches()
    arrays = {"a_best": a_best, "a_corr": a_corr, "b_best": b_best, "b_corr": b_corr, "fired_a": fired_a,
              "fired_b": fired_b}
    if dec_a is not None and dec_b is not None and lm_b is lm_a:  # decoder directions compare within one LM only
        arrays |= _decoder_matches(dec_a, dec_b)
    families = {}
    if masked is not None:
        family_a, family_b, score = masked.edges(sums.cross, sums.sumsq_a, sums.sumsq_b, FAMILY_FLOOR)
        arrays |= {"family_a": family_a, "family_b": family_b, "family_score": score}
        families = {"family_edges": len(score), "family_units": [int(k.sum()) for k in masked.kept()]}
    summary = {**config, "run_a": str(run_a.resolve()), "relation": relation, "n_units_a": n_a, "n_units_b": n_b,
               "tokens_correlated": sums.n, "median_a": _median(a_corr), "median_b": _median(b_corr),
               **_population_figures(arrays, sums.n), **families}
    with rundir.write_stage(out_dir, stage="match", config=config, inputs=inputs) as tmp:
        np.savez(tmp / "matches.npz", **arrays)
        (tmp / "match.json").write_text(json.dumps(summary, indent=1))
    return summary


def _population_figures(m: dict[str, np.ndarray], n_tokens: int) -> dict:
    """Both ways: the paper's population (neither dead nor ultralow over the matched tokens), its median best
    correlation and its share of mutual best matches (A's best in B has A's unit as its own best), as /matches
    gives them from the analysis's densities."""
    out = {}
    for side, other in (("a", "b"), ("b", "a")):
        best, back = m[f"{side}_best"], m[f"{other}_best"]
        population = paper_population(m[f"fired_{side}"], m[f"fired_{side}"] / max(n_tokens, 1))
        mutual = (best >= 0) & (back[np.maximum(best, 0)] == np.arange(len(best)))
        out |= {f"n_population_{side}": int(population.sum()),
                f"median_population_{side}": _median(m[f"{side}_corr"][population]),
                f"mutual_share_{side}": float(mutual[population].mean()) if population.any() else None}
    return out


def _median(values: np.ndarray) -> float | None:
    """Median over the units that have a match (NaN: dead)."""
    live = values[~np.isnan(values)]
    return float(np.median(live)) if len(live) else None
