"""`monoscope demo`: every stage on the defaults (each the same function as its own command), then the web app."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from app.cli.common import DbOpt, DeviceOpt, ForceOpt, cli, default
from app.cli.demo_full import epoch_tokens
from app.cli.database import ingest
from app.cli.serve import serve
from app.cli.stages import analyze, corpus, fit_sae, train_lm
from sae.analysis.config import AnalysisConfig
from sae.corpus.config import CorpusConfig
from sae.dictionary.config import control_config, demo_config
from sae.lm.config import TrainLMConfig

DEMO_SAE = demo_config()  # the sweep's pick (BENCHMARKS.md, "SAE training sweep")
CONTROL_SAE = control_config()  # --full's dictionaries of the demo's size (BENCHMARKS.md, "Seed agreement")


@cli.command()
def demo(
    run: Annotated[Path, typer.Option("--run", help="Run folder for every stage.")] = Path("runs/demo"),
    source: Annotated[str, typer.Option("--source", help="Corpus source (see `monoscope corpus`).")] = default(CorpusConfig, "source"),
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="Cap on corpus training tokens.")] = default(CorpusConfig, "max_tokens"),
    tokens: Annotated[int, typer.Option("--tokens", help="LM training tokens (with --full: at least one epoch of the corpus).")] = default(TrainLMConfig, "tokens"),
    # The demo SAE is demo_config()'s, not SAETrainConfig's defaults: the sweep's pick (TopK k=32 with AuxK).
    d_sae: Annotated[int, typer.Option("--d-sae", help="SAE features (the paper's A/1: 4,096 on 512 neurons).")] = DEMO_SAE.d_sae,
    sae_tokens: Annotated[int, typer.Option("--sae-tokens", help="SAE training tokens (with --full: of the other sizes).")] = DEMO_SAE.tokens,
    control_tokens: Annotated[int, typer.Option("--control-tokens", help="With --full: training tokens of the three dictionaries of the demo's size that the seed control and universality compare (the demo's, its second seed, the second LM's), trained with resampling.")] = CONTROL_SAE.tokens,
    sae_batch_size: Annotated[int, typer.Option("--sae-batch-size", help="SAE activations per step.")] = DEMO_SAE.batch_size,
    analysis_tokens: Annotated[int, typer.Option("--analysis-tokens", help="Held-out tokens to analyse.")] = default(AnalysisConfig, "n_tokens"),
    db: DbOpt = None,
    full: Annotated[bool, typer.Option("--full", help="Also dictionaries of --sizes (feature splitting), a second dictionary from seed 1 (the seed control), and a second LM from seed 1 with its SAE (universality), with the matches between them.")] = False,
    sizes: Annotated[str, typer.Option("--sizes", help="With --full: the other dictionary sizes (the paper's A/0 and A/2).")] = "512,16384",
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="Start the web app at the end.")] = True,
    port: Annotated[Optional[int], typer.Option("--port", help="Port of the web app (default: as serve's).")] = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Run every stage on the defaults (skipping those up to date), print what was made, then serve it."""
    import json
    import time

    from app.settings import load_settings

    url = load_settings(database_url=db).database_url
    sae_cfg = demo_config(d_sae=d_sae, batch_size=sae_batch_size, tokens=sae_tokens)
    if full:  # the demo's own dictionary is one of the three the seed control and universality compare
        sizes_cfg, sae_cfg = sae_cfg, control_config(d_sae=d_sae, batch_size=sae_batch_size, tokens=control_tokens)
    # One entry per stage, in order: each is the same function as its own command.
    stages = [
        ("corpus", lambda: corpus(run, source=source, max_tokens=max_tokens, force=force)),
        ("lm", lambda: train_lm(run, tokens=epoch_tokens(run, tokens) if full else tokens, device=device, force=force)),
        ("sae", lambda: fit_sae(sae_cfg, run=run, name=f"{sae_cfg.architecture}-{d_sae}", device=device,
                                force=force)),
        ("analysis", lambda: analyze(run, tokens=analysis_tokens, device=device, force=force)),
        ("database", lambda: ingest(run, db=url)),
    ]
    if full:
        from app.cli.demo_full import full_stages

        stages += full_stages(run, sae_cfg, sizes_cfg, sizes, tokens, analysis_tokens, url, device, force)
    started = time.time()
    for name, stage in stages:
        print(f"== {name}", flush=True)
        stage()
    print(f"demo: built in {time.time() - started:.0f} s; run folder {run}, database {url}")
    lm_metrics = json.loads((run / "lm" / "metrics.json").read_text())
    print(f"  LM held-out loss {lm_metrics['heldout_loss']:.3f} nats (unigram baseline {lm_metrics['unigram_loss']:.3f})")
    for basis in sorted((run / "analysis").glob("*/basis.json")):
        m = json.loads(basis.read_text())["metrics"]
        shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in m.items() if v is not None}
        print(f"  {basis.parent.name}: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    if serve_after:
        serve(db=url, port=port)
