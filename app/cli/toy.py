"""`monoscope toy`: SAEs on synthetic data with known features, to check the recipe recovers them."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.common import cli, default, limit_cpu_threads, number_list
from sae.dictionary.config import ToyConfig
from sae.errors import MonoscopeError


@cli.command()
def toy(
    samples: Annotated[int, typer.Option("--samples", help="Training samples drawn from the generator.")] = 50_000,
    l1: Annotated[str, typer.Option("--l1", help="Comma-separated λ (inputs scaled to mean norm √d, as train-sae).")
                  ] = "1,3,10",
    d_sae: Annotated[str, typer.Option("--d-sae", help="Comma-separated dictionary sizes.")] = "512,1024",
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the samples per SAE.")] = 2,
    group_size: Annotated[int, typer.Option("--group-size", help="> 1: correlated feature groups of this size.")] = default(ToyConfig, "group_size"),
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Train SAEs on synthetic data with known features (Sharkey et al.) and print how well they recover them."""
    from tqdm import tqdm

    from sae.dictionary.toy import ToyData, format_table, mmcs, random_dictionary, sweep

    cfg = ToyConfig(group_size=group_size)
    if samples < 1000 or epochs < 1:
        raise MonoscopeError("--samples must be >= 1000, --epochs >= 1")
    l1s, sizes = number_list(l1, float, "--l1"), number_list(d_sae, int, "--d-sae")
    limit_cpu_threads()
    print(f"toy data: d {cfg.d}, {cfg.n_features} true features, ~{cfg.mean_active:g} active per sample, "
          f"group size {cfg.group_size}; {samples} samples x {epochs} epochs")
    with tqdm(total=len(l1s) * len(sizes), desc="toy SAEs") as bar:
        results = sweep(cfg, samples=samples, l1s=l1s, d_saes=sizes, seed=seed, epochs=epochs,
                        progress=lambda r: bar.update(1))
    baseline = mmcs(random_dictionary(max(sizes), cfg.d, seed=seed + 1), ToyData(cfg, seed=seed).directions)
    print(format_table(results, random_mmcs=baseline))
