"""The feature map: a 2-D UMAP of the decoder directions of a run's dictionaries, all of them in one embedding so
that the map of several sizes shows splitting as the paper's figure does (a small dictionary's feature sits among
the larger ones' features it split into). The paper's settings: cosine metric, 15 neighbours, min_dist 0.05.

Written to runs/<run>/analysis/map/ (map.npz: per SAE `<name>.x`, `<name>.y`; map.json) through write_stage with
the SAEs' fingerprints as inputs, so an unchanged map is skipped. umap-learn is an optional extra (`map`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from sae import rundir
from sae.errors import MonoscopeError

UMAP_SETTINGS = {"n_neighbors": 15, "min_dist": 0.05, "metric": "cosine", "random_state": 0}


def build_feature_map(run: Path, sae_names: list[str] | None = None, *, force: bool = False,
                      log: Callable[[str], None] = print) -> dict:
    """Embed the decoder rows of the run's SAEs (default: every one) in 2-D; return map.json's summary."""
    from sae.analysis.run import list_saes
    from sae.dictionary.saelens_format import load_sae

    run = Path(run)
    available = list_saes(run)
    names = available if sae_names is None else list(sae_names)
    missing = [n for n in names if n not in available]
    if missing or not names:
        raise MonoscopeError(f"no trained SAE {missing[0]!r} in {run / 'saes'}" if missing else
                             f"no trained SAE in {run / 'saes'} to map: run `monoscope train-sae` first")
    try:
        import umap
    except ImportError:
        raise MonoscopeError("the feature map needs umap-learn: pip install 'monoscope[map]'") from None
    out_dir = run / "analysis" / "map"
    config = {"saes": sorted(names), **UMAP_SETTINGS}
    inputs = {n: rundir.fingerprint(run / "saes" / n, "sae") for n in names}
    if not force and rundir.is_current(out_dir, config=config, inputs=inputs):
        log(f"map: up to date at {out_dir} (use --force to redo it)")
        return json.loads((out_dir / "map.json").read_text())
    decoders = [load_sae(run / "saes" / n)[0].W_dec.detach().float().numpy() for n in sorted(names)]
    points = np.concatenate(decoders)  # [sum U, d_in]
    if len(points) <= UMAP_SETTINGS["n_neighbors"]:
        raise MonoscopeError(f"the map needs more than {UMAP_SETTINGS['n_neighbors']} features, got {len(points)}")
    log(f"map: UMAP of {len(points):,} decoder directions from {', '.join(sorted(names))}")
    with warnings.catch_warnings():  # "n_jobs overridden": a fixed seed makes UMAP single-threaded, as intended
        warnings.simplefilter("ignore", UserWarning)
        embedding = umap.UMAP(**UMAP_SETTINGS).fit_transform(points).astype(np.float32)  # [sum U, 2]
    arrays, start = {}, 0
    for name, decoder in zip(sorted(names), decoders):
        arrays[f"{name}.x"], arrays[f"{name}.y"] = embedding[start:start + len(decoder)].T
        start += len(decoder)
    summary = {"saes": sorted(names), "n_points": len(points), **UMAP_SETTINGS}
    with rundir.write_stage(out_dir, stage="map", config=config, inputs=inputs) as tmp:
        np.savez(tmp / "map.npz", **arrays)
        (tmp / "map.json").write_text(json.dumps(summary, indent=1))
    return summary
