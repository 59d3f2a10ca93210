"""`monoscope sweep`: a grid of SAEs on one run's activations, each trained, analysed and ingested, so the overview
page draws every dictionary of the database on the L0–FVU and L0–loss-recovered frontier."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from app.cli.common import DbOpt, DeviceOpt, ForceOpt, RunOpt, cli, default, number_list
from sae.analysis.config import AnalysisConfig
from sae.dictionary.architectures import ARCHITECTURES, TRAINABLE
from sae.dictionary.config import SAETrainConfig
from sae.errors import MonoscopeError


def sweep_grid(architectures: str, k: str, l1: str, sizes: str, **fixed) -> dict[str, list]:
    """Return {SAE name: SAETrainConfig} for architectures × their sparsity settings (k, or λ for an L1 penalty) ×
    dictionary sizes, grouped: {group: [(name, config) in increasing size]}, a group being one architecture and
    setting. Each architecture's record says which setting it varies."""
    groups: dict[str, list] = {}
    d_saes = sorted(set(number_list(sizes, int, "--d-sae")))
    for name in [a.strip() for a in architectures.split(",") if a.strip()]:
        if name not in TRAINABLE:
            raise MonoscopeError(f"--architectures takes {', '.join(TRAINABLE)}, got {name!r}")
        arch = ARCHITECTURES[name]
        values = sorted(set(number_list(k, int, "--k") if arch.uses_k else number_list(l1, float, "--l1")))
        for value in values:
            group = f"{name}-k{value}" if arch.uses_k else f"{name}-l1-{value:g}"
            for d_sae in d_saes:
                if arch.uses_k and value > d_sae:
                    raise MonoscopeError(f"--k {value} is larger than --d-sae {d_sae}")
                config = SAETrainConfig(architecture=name, d_sae=d_sae, **{arch.sparsity: value}, **fixed)
                groups.setdefault(group, []).append((f"{group}-{d_sae}", config))
    if not groups:
        raise MonoscopeError("--architectures names no architecture")
    return groups


@cli.command()
def sweep(
    run: RunOpt,
    architectures: Annotated[str, typer.Option("--architectures", help=f"Comma-separated: {', '.join(TRAINABLE)}.")] = "topk,relu",
    k: Annotated[str, typer.Option("--k", help="Active latents per token for topk / batchtopk, comma-separated.")] = "16,32,64",
    l1: Annotated[str, typer.Option("--l1", help="L1 coefficients λ for relu, comma-separated.")] = "3,5,8",
    d_sae: Annotated[str, typer.Option("--d-sae", help="Dictionary sizes, comma-separated (several: each size is matched with the next smaller, for feature splitting).")] = str(default(SAETrainConfig, "d_sae")),
    tokens: Annotated[Optional[int], typer.Option("--tokens", help="Training tokens per SAE (default: the demo's).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Activations per step.")] = default(SAETrainConfig, "batch_size"),
    analysis_tokens: Annotated[int, typer.Option("--analysis-tokens", help="Held-out tokens to analyse.")] = default(AnalysisConfig, "n_tokens"),
    db: DbOpt = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Train a grid of SAEs (architectures × sparsity settings × sizes) on one run's activations, analyse and ingest
    each, and match every size with the next smaller one; SAEs already trained with the same settings are skipped.
    The overview page then shows the L0–FVU frontier, and unit pages their families across sizes."""
    from app.cli.database import ingest
    from app.cli.stages import analyze, fit_sae, match
    from sae.dictionary.config import demo_config

    if not (run / "lm").is_dir():
        raise MonoscopeError(f"no trained LM in {run}: run `monoscope train-lm` (or `monoscope demo`) first")
    AnalysisConfig(n_tokens=analysis_tokens)  # a bad --analysis-tokens is refused before any training
    groups = sweep_grid(architectures, k, l1, d_sae, batch_size=batch_size,
                        tokens=tokens if tokens is not None else demo_config().tokens)
    grid = dict(item for members in groups.values() for item in members)
    for i, (name, cfg) in enumerate(grid.items(), 1):
        print(f"== sweep {i}/{len(grid)}: {name}", flush=True)
        fit_sae(cfg, run=run, name=name, device=device, force=force)
    print("== analysis", flush=True)
    analyze(run, sae=list(grid), tokens=analysis_tokens, device=device, force=force)
    pairs = [(larger[0], smaller[0]) for members in groups.values() for smaller, larger in zip(members, members[1:])]
    for larger, smaller in pairs:  # feature splitting: each size against the next smaller one
        print(f"== splitting: {larger} against {smaller}", flush=True)
        match(run, basis=larger, other_basis=smaller, tokens=analysis_tokens, device=device, force=force)
    print("== database", flush=True)
    ingest(run, db=db)
    _print_frontier(run, list(grid))


def _print_frontier(run: Path, names: list[str]) -> None:
    """Print L0, FVU and loss recovered of the swept SAEs, by L0."""
    import json

    rows = []
    for name in names:
        m = json.loads((run / "analysis" / name / "basis.json").read_text())["metrics"]
        rows.append((m["l0"], name, m["fvu"], m.get("loss_recovered"), m["dead"]))
    for l0, name, fvu, recovered, dead in sorted(rows):
        shown = "n/a" if recovered is None else f"{recovered:.4f}"
        print(f"  {name}: L0 {l0:.1f}, FVU {fvu:.4f}, loss recovered {shown}, dead {dead}")
