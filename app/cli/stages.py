"""Pipeline stages of the `monoscope` command: corpus, train-lm, train-sae, analyze (each a thin wrapper of sae/).

Option defaults are the stage configs' field defaults (read through `default`), and the configs validate what the
options give; the configs are torch-free modules, so reading them here keeps `monoscope --help` fast.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from app.cli.common import DeviceOpt, ForceOpt, RunOpt, cli, default, limit_cpu_threads, number_list
from sae.analysis.config import AnalysisConfig
from sae.corpus.config import CorpusConfig
from sae.dictionary import architectures
from sae.dictionary.config import SAETrainConfig
from sae.errors import MonoscopeError
from sae.lm.config import ACT_FNS, LMConfig, TrainLMConfig


@cli.command()
def corpus(
    run: RunOpt,
    source: Annotated[str, typer.Option("--source", help="stdlib, a folder of text files, or a .jsonl with `text`.")] = default(CorpusConfig, "source"),
    vocab_size: Annotated[int, typer.Option("--vocab-size", help="BPE vocabulary size (with end-of-text).")] = default(CorpusConfig, "vocab_size"),
    n_ctx: Annotated[int, typer.Option("--n-ctx", help="Tokens per row (the first is BOS).")] = default(CorpusConfig, "n_ctx"),
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="Cap on training tokens.")] = default(CorpusConfig, "max_tokens"),
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Existing HF tokenizer (local folder or cached name) instead of training a BPE.")] = default(CorpusConfig, "tokenizer"),
    heldout_fraction: Annotated[float, typer.Option("--heldout-fraction", help="Share of files held out for evaluation (and analysis).")] = default(CorpusConfig, "heldout_fraction"),
    force: ForceOpt = False,
) -> None:
    """Tokenize a text source into runs/<run>/corpus (tokenizer, train / held-out token rows split by file)."""
    from sae.corpus.build import build_corpus

    cfg = CorpusConfig(source=source, vocab_size=vocab_size, n_ctx=n_ctx, max_tokens=max_tokens,
                       heldout_fraction=heldout_fraction, tokenizer=tokenizer)
    if tokenizer is not None and not Path(tokenizer).is_dir():
        from sae.lm.model import pretrained_tokenizer_name

        cfg = replace(cfg, tokenizer=pretrained_tokenizer_name(tokenizer))  # a transformer_lens name: its tokenizer
    build_corpus(run, cfg, force=force)


@cli.command("train-lm")
def train_lm(
    run: RunOpt,
    tokens: Annotated[int, typer.Option("--tokens", help="Training tokens.")] = default(TrainLMConfig, "tokens"),
    d_model: Annotated[int, typer.Option("--d-model")] = default(LMConfig, "d_model"),
    d_mlp: Annotated[int, typer.Option("--d-mlp", help="MLP width (512 as in the paper).")] = default(LMConfig, "d_mlp"),
    n_heads: Annotated[int, typer.Option("--n-heads", help="Attention heads (d_head = d_model / n_heads).")] = default(LMConfig, "n_heads"),
    act_fn: Annotated[str, typer.Option("--act-fn", help=f"{' or '.join(ACT_FNS)} (the paper: relu).")] = default(LMConfig, "act_fn"),
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per step.")] = default(TrainLMConfig, "batch_size"),
    lr: Annotated[float, typer.Option("--lr", help="Peak AdamW learning rate.")] = default(TrainLMConfig, "lr"),
    seed: Annotated[int, typer.Option("--seed")] = default(LMConfig, "seed"),
    pretrained: Annotated[Optional[str], typer.Option("--pretrained", help="transformer_lens model name from the local HF cache (e.g. gelu-1l) instead of training.")] = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Train the one-layer transformer on the corpus into runs/<run>/lm (or point it at a cached pretrained one)."""
    from sae.device import resolve_device
    from sae.lm.train import train_lm as train
    from sae.lm.train import use_pretrained

    resolve_device(device)  # a bad --device is reported before any work
    if pretrained is not None:
        use_pretrained(run, pretrained, device=device, force=force)
        return
    if n_heads <= 0 or d_model % n_heads:  # how this command derives d_head; the configs check the rest
        raise MonoscopeError(f"--n-heads must be positive and --d-model a multiple of --n-heads, got {d_model} "
                             f"and {n_heads}")
    lm_cfg = LMConfig(d_model=d_model, d_mlp=d_mlp, n_heads=n_heads, d_head=d_model // n_heads,
                      act_fn=act_fn, seed=seed)
    train(run, lm_cfg, TrainLMConfig(tokens=tokens, batch_size=batch_size, lr=lr), device=device, force=force)


@cli.command("train-sae")
def train_sae(
    run: Annotated[Optional[Path], typer.Option("--run", help="Run folder: train on its LM's MLP activations.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="SAE name: written to runs/<run>/saes/<name>.")] = None,
    activations: Annotated[Optional[Path], typer.Option("--activations", help="Instead of --run: a [N, d_in] float .npy array.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder with --activations.")] = None,
    architecture: Annotated[str, typer.Option("--architecture", help=f"{', '.join(architectures.TRAINABLE)} (the paper: relu, L1 + resampling; topk and batchtopk: AuxK).")] = default(SAETrainConfig, "architecture"),
    d_sae: Annotated[int, typer.Option("--d-sae", help="Dictionary size.")] = default(SAETrainConfig, "d_sae"),
    l1: Annotated[float, typer.Option("--l1", help="L1 coefficient λ (relu; activations scaled to mean norm sqrt(d_in)).")] = default(SAETrainConfig, "l1_coefficient"),
    # None, unlike the config's meaning (no k): an architecture that needs k gets the demo's (the sweep's pick).
    k: Annotated[Optional[int], typer.Option("--k", help="Active latents per token (topk, batchtopk; default: the demo's).")] = None,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate.")] = default(SAETrainConfig, "lr"),
    tokens: Annotated[int, typer.Option("--tokens", help="Training activations (tokens).")] = default(SAETrainConfig, "tokens"),
    batch_size: Annotated[int, typer.Option("--batch-size", help="Activations per step.")] = default(SAETrainConfig, "batch_size"),
    seed: Annotated[int, typer.Option("--seed")] = default(SAETrainConfig, "seed"),
    precision: Annotated[str, typer.Option("--precision", help="auto, fp32 or bf16 (bf16 matmuls, fp32 weights).")] = default(SAETrainConfig, "precision"),
    resample_at: Annotated[str, typer.Option("--resample-at", help="Fractions of training after which dead latents are resampled (the paper's recipe), comma-separated, or none (the demo's TopK: AuxK alone revives them).")] = ",".join(map(str, default(SAETrainConfig, "resample_at"))),
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Train a sparse autoencoder (the paper's recipe by default) into runs/<run>/saes/<name>, resumable."""
    from sae.dictionary.config import demo_config

    if (run is None) == (activations is None):
        raise MonoscopeError("give either --run DIR --name NAME or --activations FILE.npy --out DIR")
    if run is not None and (not name or out is not None):
        raise MonoscopeError("--run needs --name (and takes no --out)")
    if activations is not None and (out is None or name is not None):
        raise MonoscopeError("--activations needs --out (and takes no --name)")
    if k is None and architectures.architecture(architecture, trainable=True).uses_k:
        k = demo_config().k  # the sweep's pick for TopK-style SAEs
    resample = () if resample_at.strip().lower() == "none" else tuple(number_list(resample_at, float, "--resample-at"))
    cfg = SAETrainConfig(architecture=architecture, d_sae=d_sae, l1_coefficient=l1, k=k, lr=lr, tokens=tokens,
                         batch_size=batch_size, seed=seed, precision=precision, resample_at=resample)
    fit_sae(cfg, run=run, name=name, activations=activations, out=out, device=device, force=force)


def fit_sae(cfg, *, run: Path | None, name: str | None, activations: Path | None = None, out: Path | None = None,
            device: str, force: bool) -> None:
    """Train the SAE of `cfg` on a run's activations (or an .npy array) and print its metrics; `train-sae` and
    `demo` both end here, each with the config it built."""
    from sae.activations import ArrayActivations
    from sae.device import resolve_device
    from sae.dictionary.stage import train_sae as train
    from sae.dictionary.stage import train_sae_on_run
    from sae.rundir import file_digest

    if resolve_device(device).type == "cpu":
        limit_cpu_threads()
    if run is not None:
        result = train_sae_on_run(run, name, cfg, device=device, force=force)
    else:
        source = ArrayActivations(activations, seed=cfg.seed, name=activations.name)
        result = train(cfg, source, out, inputs={"activations": file_digest(activations)}, device=device, force=force)
    print("train-sae: " + ", ".join(f"{key} {round(v, 4) if isinstance(v, float) else v}" for key, v in result.items()
                                    if key in ("l0", "fvu", "mse", "dead", "dense", "resampled_total",
                                               "loss_recovered", "tokens_per_s")))


@cli.command("add-sae")
def add_sae(
    path: Annotated[Path, typer.Argument(help="A SAELens SAE folder (cfg.json + sae_weights.safetensors).")],
    run: RunOpt,
    name: Annotated[Optional[str], typer.Option("--name", help="Name under saes/ (default: the folder's name).")] = None,
    force: ForceOpt = False,
) -> None:
    """Bring an SAE trained elsewhere (SAELens: standard, topk, jumprelu, batchtopk) into a run, checked against
    its LM; then `analyze` and `ingest` treat it like one trained here."""
    from sae.dictionary.stage import add_sae as add

    add(run, path, name=name, force=force)


@cli.command()
def analyze(
    run: RunOpt,
    sae: Annotated[Optional[list[str]], typer.Option("--sae", help="SAE name under saes/ (repeatable; default: all).")] = None,
    tokens: Annotated[int, typer.Option("--tokens", help="Held-out tokens to analyse (all of them when fewer).")] = default(AnalysisConfig, "n_tokens"),
    batch: Annotated[int, typer.Option("--batch", help="Sequences per LM forward.")] = default(AnalysisConfig, "batch_sequences"),
    loss_tokens: Annotated[int, typer.Option("--loss-tokens", help="Tokens for the LM-loss metrics (0: all).")] = default(AnalysisConfig, "loss_tokens"),
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
    executor: Annotated[str, typer.Option("--executor", help="Where pass 1 runs: local (this process) or ray (needs pip install 'monoscope\\[ray]').")] = "local",
    address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster address (default: start a local Ray).")] = None,
    shards: Annotated[Optional[int], typer.Option("--shards", help="Shards of sequences (default: 1 locally, one per Ray CPU or GPU); the result does not depend on it.")] = None,
    proxy: Annotated[Optional[list[str]], typer.Option("--proxy", help="Add a specificity proxy: `regex:PATTERN` (characters the pattern matches have the property) or a built-in name (repeatable).")] = None,
    no_proxies: Annotated[bool, typer.Option("--no-proxies", help="Leave out the built-in proxies.")] = False,
) -> None:
    """Analyse every unit of the neuron basis and of each SAE over held-out tokens into runs/<run>/analysis/.

    Default: 1,048,576 held-out tokens (all of them when the corpus holds fewer); loss metrics on the first 262,144.
    With --executor ray, Ray workers on other machines need the run folder on a shared filesystem at the same path.
    """

    from sae.analysis.executor import make_executor
    from sae.analysis.run import run_analysis

    builtin = () if no_proxies else default(AnalysisConfig, "proxies")
    named = [p for p in proxy or [] if not p.startswith("regex:")]
    cfg = AnalysisConfig(n_tokens=tokens, batch_sequences=batch, loss_tokens=loss_tokens or None,  # 0 means all
                         proxies=tuple(dict.fromkeys([*builtin, *named])),
                         extra_proxies=tuple(p for p in proxy or [] if p.startswith("regex:")))
    if not run.is_dir():
        raise MonoscopeError(f"no run folder at {run}: run `monoscope corpus` first")
    ex = make_executor(executor, address, shards, device)  # bad options and a missing Ray fail before any work
    limit_cpu_threads()
    with ex:
        metrics = run_analysis(run, sae_names=sae, cfg=cfg, force=force, device=device, executor=ex)
    for name, m in metrics.items():
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items() if v is not None}
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in shown.items()))


@cli.command("map")
def feature_map(
    run: RunOpt,
    sae: Annotated[Optional[list[str]], typer.Option("--sae", help="SAE name under saes/ (repeatable; default: all).")] = None,
    force: ForceOpt = False,
) -> None:
    """The feature map: a 2-D UMAP of the decoder directions of the run's dictionaries, all in one embedding (needs
    the `map` extra: pip install 'monoscope\\[map]'); `monoscope ingest` brings it to the /map page."""
    from sae.analysis.feature_map import build_feature_map

    limit_cpu_threads()
    summary = build_feature_map(run, sae, force=force)
    print(f"map: {summary['n_points']:,} features of {', '.join(summary['saes'])}")


@cli.command()
def match(
    run: RunOpt,
    basis: Annotated[str, typer.Option("--basis", help="Basis of --run: `neurons` or an SAE name.")],
    other_basis: Annotated[str, typer.Option("--other-basis", help="Basis to match against (of --other-run).")],
    other_run: Annotated[Optional[Path], typer.Option("--other-run", help="Second run (same corpus, e.g. another LM seed); default: --run.")] = None,
    tokens: Annotated[int, typer.Option("--tokens", help="Held-out tokens to correlate over.")] = default(AnalysisConfig, "n_tokens"),
    batch: Annotated[int, typer.Option("--batch", help="Sequences per LM forward.")] = default(AnalysisConfig, "batch_sequences"),
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Each unit's most correlated unit in another basis, both ways, over the same held-out tokens (streamed):
    two dictionaries of one LM of two sizes (feature splitting: also their family graph by masked cosine), of one
    size from two seeds (the seed control), or the same basis in two LMs (universality)."""
    from sae.analysis.matching import match_bases

    if tokens <= 0 or batch <= 0:
        raise MonoscopeError("--tokens and --batch must be positive")
    limit_cpu_threads()
    summary = match_bases(run, basis, other_run or run, other_basis, n_tokens=tokens, batch_sequences=batch,
                          device=device, force=force)
    medians = [("n/a" if m is None else f"{m:.3f}") for m in (summary["median_a"], summary["median_b"])]
    print(f"match: {basis} -> {other_basis}: median best correlation {medians[0]}; {other_basis} -> {basis}: "
          f"{medians[1]} ({summary['tokens_correlated']:,} tokens; measures {summary['relation']})")
    for side, name in (("a", basis), ("b", other_basis)):
        median, mutual = summary.get(f"median_population_{side}"), summary.get(f"mutual_share_{side}")
        if median is not None:  # (absent from a match made before they were recorded)
            print(f"match: {name}, neither dead nor ultralow (n = {summary[f'n_population_{side}']:,}): median "
                  f"{median:.3f}, mutual best matches {mutual:.0%}")
    if "family_edges" in summary:
        print(f"match: {summary['family_edges']:,} family edges at masked cosine >= {summary['family_floor']} "
              f"(features neither dead nor ultralow: {summary['family_units'][0]:,} and {summary['family_units'][1]:,})")
