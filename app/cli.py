"""The `monoscope` command: one entry point for every pipeline stage, the server and the demo.

Commands stay thin: they turn options into a stage config and call `sae/` or `app/`. Bad input raises
MonoscopeError, which `main` prints as one line on stderr with exit code 2 (never a stack trace).
Heavy imports (torch, transformer_lens) happen inside commands so `monoscope serve` starts fast.
"""

from __future__ import annotations

import os
import sys

# OpenMP's busy-wait made 2-thread torch 3-6x slower on shared 2-core machines (BENCHMARKS.md); it must be set
# before torch loads. A user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from pathlib import Path
from typing import Annotated, Optional

import typer

from sae.errors import MonoscopeError

cli = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Sparse autoencoders on one-layer transformer MLPs: build, analyse, browse.")

RunOpt = Annotated[Path, typer.Option("--run", help="Run folder (runs/<name>) holding every stage's output.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo the stage even if it is up to date.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]


def _number_list(text: str, kind: type, option: str) -> list:
    """Return the comma-separated numbers of a list option, or refuse it in one line."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise MonoscopeError(f"{option} takes comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise MonoscopeError(f"{option} needs positive numbers, got {text!r}")
    return values


@cli.command()
def corpus(
    run: RunOpt,
    source: Annotated[str, typer.Option("--source", help="stdlib, a folder of text files, or a .jsonl with `text`.")] = "stdlib",
    vocab_size: Annotated[int, typer.Option("--vocab-size", help="BPE vocabulary size (with end-of-text).")] = 4096,
    n_ctx: Annotated[int, typer.Option("--n-ctx", help="Tokens per row (the first is BOS).")] = 128,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="Cap on training tokens.")] = None,
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Existing HF tokenizer (local folder or cached name) instead of training a BPE.")] = None,
    heldout_fraction: Annotated[float, typer.Option("--heldout-fraction", help="Share of files held out for evaluation (and analysis).")] = 0.2,
    force: ForceOpt = False,
) -> None:
    """Tokenize a text source into runs/<run>/corpus (tokenizer, train / held-out token rows split by file)."""
    from sae.corpus import CorpusConfig, build_corpus

    if not 0.0 < heldout_fraction < 1.0:
        raise MonoscopeError(f"--heldout-fraction must be between 0 and 1, got {heldout_fraction}")

    if tokenizer is not None and not Path(tokenizer).is_dir():
        from sae.lm import pretrained_tokenizer_name

        tokenizer = pretrained_tokenizer_name(tokenizer)  # a transformer_lens name means its tokenizer repo
    build_corpus(run, CorpusConfig(source=source, vocab_size=vocab_size, n_ctx=n_ctx, max_tokens=max_tokens,
                                   heldout_fraction=heldout_fraction, tokenizer=tokenizer), force=force)


@cli.command("train-lm")
def train_lm(
    run: RunOpt,
    tokens: Annotated[int, typer.Option("--tokens", help="Training tokens.")] = 2_500_000,
    d_model: Annotated[int, typer.Option("--d-model")] = 128,
    d_mlp: Annotated[int, typer.Option("--d-mlp", help="MLP width (512 as in the paper).")] = 512,
    n_heads: Annotated[int, typer.Option("--n-heads", help="Attention heads (d_head = d_model / n_heads).")] = 4,
    act_fn: Annotated[str, typer.Option("--act-fn", help="relu (paper) or gelu.")] = "relu",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per step.")] = 32,
    lr: Annotated[float, typer.Option("--lr", help="Peak AdamW learning rate.")] = 3e-3,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    pretrained: Annotated[Optional[str], typer.Option("--pretrained", help="transformer_lens model name from the local HF cache (e.g. gelu-1l) instead of training.")] = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Train the one-layer transformer on the corpus into runs/<run>/lm (or point it at a cached pretrained one)."""
    from sae.device import resolve_device
    from sae.lm import LMConfig
    from sae.lm_train import TrainLMConfig, train_lm as train, use_pretrained

    resolve_device(device)  # a bad --device is reported before any work
    if pretrained is not None:
        use_pretrained(run, pretrained, device=device, force=force)
        return
    if min(tokens, d_model, d_mlp, n_heads, batch_size) <= 0 or lr <= 0 or d_model % n_heads:
        raise MonoscopeError("--tokens, --d-model, --d-mlp, --n-heads, --batch-size, --lr must be positive, "
                             "and --d-model a multiple of --n-heads")
    lm_cfg = LMConfig(d_model=d_model, d_mlp=d_mlp, n_heads=n_heads, d_head=d_model // n_heads,
                      act_fn=act_fn, seed=seed)
    train(run, lm_cfg, TrainLMConfig(tokens=tokens, batch_size=batch_size, lr=lr), device=device, force=force)


@cli.command("train-sae")
def train_sae(
    run: Annotated[Optional[Path], typer.Option("--run", help="Run folder: train on its LM's MLP activations.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="SAE name: written to runs/<run>/saes/<name>.")] = None,
    activations: Annotated[Optional[Path], typer.Option("--activations", help="Instead of --run: a [N, d_in] float .npy array.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder with --activations.")] = None,
    architecture: Annotated[str, typer.Option("--architecture", help="relu (paper: L1 + resampling), topk or batchtopk (AuxK).")] = "relu",
    d_sae: Annotated[int, typer.Option("--d-sae", help="Dictionary size.")] = 4096,
    l1: Annotated[Optional[float], typer.Option("--l1", help="L1 coefficient λ (relu; activations scaled to mean norm sqrt(d_in)).")] = None,
    k: Annotated[Optional[int], typer.Option("--k", help="Active latents per token (topk, batchtopk).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Adam learning rate.")] = None,
    tokens: Annotated[Optional[int], typer.Option("--tokens", help="Training activations (tokens).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Activations per step.")] = 4096,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    precision: Annotated[str, typer.Option("--precision", help="auto, fp32 or bf16 (bf16 matmuls, fp32 weights).")] = "auto",
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Train a sparse autoencoder (the paper's recipe by default) into runs/<run>/saes/<name>, resumable."""
    import torch

    from sae.activations import ArrayActivations
    from sae.device import resolve_device
    from sae.rundir import file_digest
    from sae.train import SAETrainConfig, train_sae as train, train_sae_on_run

    if (run is None) == (activations is None):
        raise MonoscopeError("give either --run DIR --name NAME or --activations FILE.npy --out DIR")
    if run is not None and (not name or out is not None):
        raise MonoscopeError("--run needs --name (and takes no --out)")
    if activations is not None and (out is None or name is not None):
        raise MonoscopeError("--activations needs --out (and takes no --name)")
    defaults = SAETrainConfig()
    if architecture != "relu" and k is None:
        k = 32
    given = dict(l1_coefficient=l1, lr=lr, tokens=tokens)
    cfg = SAETrainConfig(architecture=architecture, d_sae=d_sae, k=k, batch_size=batch_size, seed=seed,
                         precision=precision, **{key: (getattr(defaults, key) if value is None else value)
                                                  for key, value in given.items()})
    if resolve_device(device).type == "cpu":
        torch.set_num_threads(min(torch.get_num_threads(), 8))
    if run is not None:
        result = train_sae_on_run(run, name, cfg, device=device, force=force)
    else:
        source = ArrayActivations(activations, seed=seed, name=activations.name)
        result = train(cfg, source, out, inputs={"activations": file_digest(activations)}, device=device, force=force)
    print("train-sae: " + ", ".join(f"{key} {round(v, 4) if isinstance(v, float) else v}" for key, v in result.items()
                                    if key in ("l0", "fvu", "mse", "dead", "dense", "resampled_total",
                                               "loss_recovered", "tokens_per_s")))


@cli.command()
def demo(
    run: Annotated[Path, typer.Option("--run", help="Run folder for every stage.")] = Path("runs/demo"),
    source: Annotated[str, typer.Option("--source", help="Corpus source (see `monoscope corpus`).")] = "stdlib",
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="Cap on corpus training tokens.")] = None,
    tokens: Annotated[int, typer.Option("--tokens", help="LM training tokens.")] = 2_500_000,
    d_sae: Annotated[int, typer.Option("--d-sae", help="SAE features (the paper's A/1: 4,096 on 512 neurons).")] = 4096,
    sae_tokens: Annotated[Optional[int], typer.Option("--sae-tokens", help="SAE training tokens (default: train-sae's).")] = None,
    sae_batch_size: Annotated[int, typer.Option("--sae-batch-size", help="SAE activations per step.")] = 4096,
    analysis_tokens: Annotated[int, typer.Option("--analysis-tokens", help="Held-out tokens to analyse.")] = 1 << 20,
    db: Annotated[Optional[str], typer.Option("--db", help="Database URL (default: sqlite:///monoscope.db).")] = None,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="Start the web app at the end.")] = True,
    port: Annotated[int, typer.Option("--port", help="Port of the web app.")] = 8000,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Run every stage on the defaults (skipping those up to date), print what was made, then serve it."""
    import json
    import time

    from app.settings import Settings
    from sae.train_config import demo_config

    url = db or Settings().database_url
    # The demo SAE is the sweep's pick (BENCHMARKS.md, "SAE training sweep"): TopK k=32 with AuxK.
    sae_cfg = demo_config(d_sae=d_sae, **({"tokens": sae_tokens} if sae_tokens else {}))
    # One entry per stage, in order: each is the same function as its own command.
    stages = [
        ("corpus", lambda: corpus(run, source=source, max_tokens=max_tokens, force=force)),
        ("lm", lambda: train_lm(run, tokens=tokens, device=device, force=force)),
        ("sae", lambda: train_sae(run=run, name=f"{sae_cfg.architecture}-{d_sae}", architecture=sae_cfg.architecture,
                                  k=sae_cfg.k, d_sae=d_sae, lr=sae_cfg.lr, tokens=sae_cfg.tokens,
                                  batch_size=sae_batch_size, device=device, force=force)),
        ("analysis", lambda: analyze(run, tokens=analysis_tokens, device=device, force=force)),
        ("database", lambda: ingest(run, db=url)),
    ]
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


@cli.command()
def toy(
    samples: Annotated[int, typer.Option("--samples", help="Training samples drawn from the generator.")] = 50_000,
    l1: Annotated[str, typer.Option("--l1", help="Comma-separated λ (inputs scaled to mean norm √d, as train-sae).")
                  ] = "1,3,10",
    d_sae: Annotated[str, typer.Option("--d-sae", help="Comma-separated dictionary sizes.")] = "512,1024",
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the samples per SAE.")] = 2,
    group_size: Annotated[int, typer.Option("--group-size", help="> 1: correlated feature groups of this size.")] = 1,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Train SAEs on synthetic data with known features (Sharkey et al.) and print how well they recover them."""
    import torch
    from tqdm import tqdm

    from sae.toy import ToyConfig, ToyData, format_table, mmcs, random_dictionary, sweep

    if samples < 1000 or epochs < 1 or group_size < 1:
        raise MonoscopeError("--samples must be >= 1000, --epochs and --group-size >= 1")
    l1s, sizes = _number_list(l1, float, "--l1"), _number_list(d_sae, int, "--d-sae")
    torch.set_num_threads(min(torch.get_num_threads(), 8))
    cfg = ToyConfig(group_size=group_size)
    print(f"toy data: d {cfg.d}, {cfg.n_features} true features, ~{cfg.mean_active:g} active per sample, "
          f"group size {cfg.group_size}; {samples} samples x {epochs} epochs")
    with tqdm(total=len(l1s) * len(sizes), desc="toy SAEs") as bar:
        results = sweep(cfg, samples=samples, l1s=l1s, d_saes=sizes, seed=seed, epochs=epochs,
                        progress=lambda r: bar.update(1))
    baseline = mmcs(random_dictionary(max(sizes), cfg.d, seed=seed + 1), ToyData(cfg, seed=seed).directions)
    print(format_table(results, random_mmcs=baseline))


@cli.command()
def analyze(
    run: RunOpt,
    sae: Annotated[Optional[list[str]], typer.Option("--sae", help="SAE name under saes/ (repeatable; default: all).")] = None,
    tokens: Annotated[int, typer.Option("--tokens", help="Held-out tokens to analyse (all of them when fewer).")] = 1 << 20,
    batch: Annotated[int, typer.Option("--batch", help="Sequences per LM forward.")] = 64,
    loss_tokens: Annotated[int, typer.Option("--loss-tokens", help="Tokens for the LM-loss metrics (0: all).")] = 1 << 15,
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Analyse every unit of the neuron basis and of each SAE over held-out tokens into runs/<run>/analysis/.

    Default: 1,048,576 held-out tokens (all of them when the corpus holds fewer); loss metrics on the first 32,768.
    """
    import torch

    from sae.analysis import AnalysisConfig
    from sae.analysis_run import run_analysis

    if tokens <= 0 or batch <= 0 or loss_tokens < 0:
        raise MonoscopeError("--tokens and --batch must be positive, --loss-tokens >= 0")
    if not run.is_dir():
        raise MonoscopeError(f"no run folder at {run}: run `monoscope corpus` first")
    torch.set_num_threads(min(torch.get_num_threads(), 8))
    cfg = AnalysisConfig(n_tokens=tokens, batch_sequences=batch, loss_tokens=loss_tokens or None)
    metrics = run_analysis(run, sae_names=sae, cfg=cfg, force=force, device=device)
    for name, m in metrics.items():
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items() if v is not None}
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in shown.items()))


@cli.command()
def ingest(
    run: RunOpt,
    db: Annotated[Optional[str], typer.Option("--db", help="Database URL (default: MONOSCOPE_DATABASE_URL, else sqlite:///monoscope.db).")] = None,
) -> None:
    """Load every analysed basis of a run into the database, one transaction per basis."""
    from app.db import upgrade
    from app.ingest import ingest_run
    from app.settings import Settings

    url = db or Settings().database_url
    upgrade(url)
    ingest_run(run, url=url)
    print(f"database: {url}")


@cli.command()
def serve(
    db: Annotated[Optional[str], typer.Option("--db", help="Database URL (default: MONOSCOPE_DATABASE_URL, else sqlite:///monoscope.db).")] = None,
    host: Annotated[str, typer.Option("--host", help="Interface to bind (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", help="Server processes (each with its own caches and live model).")] = 1,
) -> None:
    """Serve the feature browser and its JSON API (/api/v1, docs at /docs); prints the URL."""
    import os
    import socket

    import uvicorn

    from app.db import upgrade
    from app.settings import Settings
    from app.web import create_app

    if not 0 < port < 65536 or workers < 1:
        raise MonoscopeError(f"--port must be 1..65535 and --workers at least 1, got {port} and {workers}")
    with socket.socket() as probe:  # say so in one line rather than a uvicorn traceback
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise MonoscopeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    settings = Settings(database_url=db) if db else Settings()
    upgrade(settings.database_url)  # an empty or older database gets the current schema; ingest fills it
    shown = f"[{host}]" if ":" in host else host
    print(f"monoscope: serving http://{shown}:{port}/  (API docs: http://{shown}:{port}/docs; Ctrl-C stops)",
          flush=True)
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", access_log=False)
    else:  # each worker process builds its app from the environment
        os.environ["MONOSCOPE_DATABASE_URL"] = settings.database_url
        uvicorn.run("app.web:create_app", factory=True, workers=workers, host=host, port=port,
                    log_level="warning", access_log=False)


def main() -> None:
    """Console entry point: click reports usage errors (exit 2); user errors become one line and exit 2."""
    try:
        cli()  # standalone mode: click prints usage errors itself and lets our exceptions through
    except MonoscopeError as e:
        print(f"monoscope: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
