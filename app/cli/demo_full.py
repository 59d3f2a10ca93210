"""The stages `monoscope demo --full` adds after the plain demo: the paper's other two results on the user's own
runs. Dictionaries of other sizes on the same LM (feature splitting, with their family graphs), a second dictionary
of the demo's size from another seed (the seed control: how far the recipe itself reproduces), a second LM from
another seed on the same corpus with the same SAE recipe (universality), the matches between them, the feature map of
every dictionary (needs the `map` extra), and the database again. Each stage is the
same function as its own command, so each is resumable and skipped when up to date."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Callable

from app.cli.common import number_list


def epoch_tokens(run: Path, tokens: int) -> int:
    """LM training tokens under --full: `tokens`, raised to one epoch of the corpus's training split. Universality
    compares two LMs; one that has not seen its data once is still far from what it converges to, and two such LMs
    differ by where training stopped as much as by their seeds."""
    from sae.corpus.build import load_corpus_meta

    return max(tokens, int(load_corpus_meta(run)["train_tokens"]))


def full_stages(run: Path, sae_cfg, sizes_cfg, sizes: str, tokens: int, analysis_tokens: int, db: str, device: str,
                force: bool) -> list[tuple[str, Callable[[], None]]]:
    """Return the extra (name, stage) pairs, in order; `sae_cfg` is the demo SAE's config (its size included), which
    its seed control and the second LM's SAE share; `sizes_cfg` that of the other sizes (feature splitting)."""
    from app.cli.database import ingest
    from app.cli.stages import analyze, feature_map, fit_sae, match, train_lm

    def name(d_sae: int) -> str:
        return f"{sae_cfg.architecture}-{d_sae}"

    all_sizes = sorted({*number_list(sizes, int, "--sizes"), sae_cfg.d_sae})
    other = run.with_name(f"{run.name}-seed1")
    demo_sae = name(sae_cfg.d_sae)

    def second_corpus() -> None:  # the same token rows: a copy of the first run's corpus stage
        if not (other / "corpus" / "manifest.json").is_file() or force:
            shutil.rmtree(other / "corpus", ignore_errors=True)
            shutil.copytree(run / "corpus", other / "corpus")

    stages = [(f"sae {name(d)}", lambda d=d: fit_sae(replace(sizes_cfg, d_sae=d), run=run, name=name(d),
                                                        device=device, force=force))
              for d in all_sizes if d != sae_cfg.d_sae]
    control = f"{demo_sae}-seed{sae_cfg.seed + 1}"
    stages.append((f"seed control {control}", lambda: fit_sae(replace(sae_cfg, seed=sae_cfg.seed + 1), run=run,
                                                               name=control, device=device, force=force)))
    stages.append(("analysis of the sizes", lambda: analyze(run, tokens=analysis_tokens, device=device, force=force)))
    stages += [(f"splitting {name(large)} / {name(small)}",
                lambda large=large, small=small: match(run, basis=name(large), other_basis=name(small),
                                                       tokens=analysis_tokens, device=device, force=force))
               for small, large in zip(all_sizes, all_sizes[1:])]
    stages.append((f"seed control: {demo_sae} / {control}", lambda: match(
        run, basis=demo_sae, other_basis=control, tokens=analysis_tokens, device=device, force=force)))
    stages += [
        ("second LM (seed 1)", lambda: (second_corpus(), train_lm(other, tokens=epoch_tokens(run, tokens), seed=1,
                                                                   device=device, force=force))),
        ("second LM's SAE", lambda: fit_sae(sae_cfg, run=other, name=demo_sae, device=device, force=force)),
        ("second LM's analysis", lambda: analyze(other, tokens=analysis_tokens, device=device, force=force)),
        ("second LM into the database", lambda: ingest(other, db=db)),
    ]
    stages += [(f"universality: {basis}", lambda basis=basis: match(run, basis=basis, other_basis=basis, other_run=other,
                                                                     tokens=analysis_tokens, device=device,
                                                                     force=force))
               for basis in ("neurons", demo_sae)]
    stages.append(("feature map", lambda: feature_map(run, force=force)))
    stages.append(("database, with the matches and the map", lambda: ingest(run, db=db)))
    return stages
