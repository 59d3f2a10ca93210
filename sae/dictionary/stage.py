"""The SAE stage: train (or resume), evaluate on held-out activations, write runs/<run>/saes/<name>/ atomically.

`train_sae(cfg, source, out_dir)` works on any activation source; `train_sae_on_run` on a run's LM activations.
The folder is SAELens-format (cfg.json + sae_weights.safetensors) plus log.jsonl and metrics.json.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch

from sae.conventions import DENSE_DENSITY, HOOK_POST, NEURON_BASIS
from sae.device import resolve_device
from sae.dictionary import metrics
from sae.dictionary.config import SAETrainConfig, resolve_precision
from sae.dictionary.model import SparseAutoencoder
from sae.dictionary.train import CHECKPOINT, LIVE_LOG, fit_sae
from sae.errors import MonoscopeError


def evaluate(sae: SparseAutoencoder, source, n_tokens: int, device: torch.device,
             loss_tokens: int = 16_384) -> tuple[dict, torch.Tensor]:
    """Return (metrics on held-out activations, density [d_sae]); plus loss recovered for an LM source."""
    sae = sae.to(device)
    heldout = source.eval_activations(n_tokens)  # [n, d_in]
    result = metrics.reconstruction_metrics(sae, heldout)
    density = result.pop("density")
    result["dense"] = int((density > DENSE_DENSITY).sum())
    result["dead_heldout"] = int((density == 0).sum())
    result["heldout_tokens"] = len(heldout)
    if hasattr(source, "heldout_tokens"):
        tokens = source.heldout_tokens(loss_tokens)
        with torch.no_grad():
            result |= metrics.loss_recovered(source.model, tokens, sae)
        result["loss_tokens"] = int(tokens.numel())
    sae.cpu()
    return result, density


def train_sae(
    cfg: SAETrainConfig, source, out_dir: Path, *, meta: dict | None = None, inputs: dict[str, str] | None = None,
    device: str = "auto", force: bool = False, progress: bool = True, log: Callable[[str], None] = print,
    on_step: Callable[[int, SparseAutoencoder], None] | None = None,
) -> dict[str, Any]:
    """Train (or resume) an SAE on `source` and write it to out_dir (SAELens format + log.jsonl + metrics.json).

    Skipped when out_dir is up to date with this config and these inputs (upstream stage fingerprints) unless
    `force`. Returns the metrics written to metrics.json.
    """
    from sae import rundir
    from sae.dictionary.saelens_format import save_sae

    out_dir = Path(out_dir)
    config = {"train": asdict(cfg), "source": source.name, "d_in": source.d_in}
    inputs = dict(inputs or {})
    if not force and rundir.is_current(out_dir, config=config, inputs=inputs):
        log(f"train-sae: up to date at {out_dir} (use --force to retrain)")
        return json.loads((out_dir / "metrics.json").read_text())
    work = rundir.work_dir(out_dir)
    checkpoint = work / CHECKPOINT
    if force and checkpoint.exists():
        checkpoint.unlink()
    dev = resolve_device(device)
    log(f"train-sae: {cfg.architecture} SAE {source.d_in} -> {cfg.d_sae}, {cfg.steps} steps of {cfg.batch_size} "
        f"activations on {dev} ({resolve_precision(cfg.precision, dev)})")
    sae, summary, records = fit_sae(cfg, source, device=dev, checkpoint=checkpoint, live_log=work / LIVE_LOG,
                                    progress=progress, log=log, on_step=on_step)
    result, density = evaluate(sae, source, cfg.eval_tokens, dev, cfg.loss_tokens)
    result = {"architecture": cfg.architecture, "d_in": source.d_in, "d_sae": cfg.d_sae, "k": cfg.k,
              "l1_coefficient": cfg.l1_coefficient, "lr": cfg.lr, **result, **summary}
    with rundir.write_stage(out_dir, stage="sae", config=config, inputs=inputs) as tmp:
        save_sae(sae, tmp, meta={**(meta or {}), "training": asdict(cfg), "metrics": _short(result)},
                 density=density)
        (tmp / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        (tmp / "metrics.json").write_text(json.dumps(result, indent=1))
    shown = ", ".join(f"{k} {_fmt(result[k])}" for k in ("l0", "fvu", "mse", "dead", "dense", "loss_recovered")
                      if result.get(k) is not None)
    log(f"train-sae: {shown} at {out_dir}")
    return result


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _short(result: dict) -> dict:
    """Return the headline metrics to keep in cfg.json (SAELens ignores the `monoscope` key)."""
    return {k: result.get(k) for k in ("l0", "fvu", "mse", "dead", "dense", "loss_recovered", "tokens")}


def train_sae_on_run(run_dir: Path, name: str, cfg: SAETrainConfig, *, device: str = "auto", force: bool = False,
                     progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train runs/<run>/saes/<name> on the run's LM activations (training split; metrics on held-out tokens)."""
    from sae import rundir
    from sae.activations import LM_SOURCE_NAME, LMActivations

    run_dir = Path(run_dir)
    _check_name(name)
    inputs = {stage: rundir.fingerprint(run_dir / stage, stage) for stage in ("corpus", "lm")}
    out_dir = run_dir / "saes" / name
    if not force and rundir.is_current(out_dir, config={"train": asdict(cfg), "source": LM_SOURCE_NAME,
                                                        "d_in": _d_mlp(run_dir)}, inputs=inputs):
        log(f"train-sae: up to date at {out_dir} (use --force to retrain)")
        return json.loads((out_dir / "metrics.json").read_text())
    source = LMActivations(run_dir, seed=cfg.seed, device=resolve_device(device))
    meta = {"model_name": run_dir.name, "hook_name": HOOK_POST, "context_size": source.n_ctx,
            "dataset_path": str(run_dir / "corpus"), "prepend_bos": True}
    return train_sae(cfg, source, out_dir, meta=meta, inputs=inputs, device=device, force=force,
                     progress=progress, log=log)


def _d_mlp(run_dir: Path) -> int:
    """Return the run's MLP width, or -1 when its LM config is missing or unreadable."""
    from sae.lm.config import read_lm_config

    try:
        return int(read_lm_config(run_dir)["d_mlp"])
    except (MonoscopeError, KeyError, TypeError, ValueError):
        return -1


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith(".") or name == NEURON_BASIS:
        raise MonoscopeError(f"--name must be a plain folder name other than {NEURON_BASIS!r}, got {name!r}")


def add_sae(run_dir: Path, path: Path, *, name: str | None = None, force: bool = False,
            log: Callable[[str], None] = print) -> Path:
    """Bring an SAE trained elsewhere (a SAELens folder: standard, topk, jumprelu, batchtopk) into the run as
    runs/<run>/saes/<name>, after checking it reads this run's LM at our hook; return its folder.

    From there `analyze`, `ingest` and the pages treat it like one trained here. Skipped when the same files were
    already added against the same corpus and LM (unless `force`).
    """
    from sae import rundir
    from sae.dictionary.saelens_format import CFG_FILENAME, WEIGHTS_FILENAME, load_sae, save_sae

    run_dir, path = Path(run_dir), Path(path)
    name = name or path.name
    _check_name(name)
    inputs = {stage: rundir.fingerprint(run_dir / stage, stage) for stage in ("corpus", "lm")}
    sae, meta = load_sae(path)  # one-line errors for a missing or broken folder
    d_mlp = _d_mlp(run_dir)
    if sae.cfg.d_in != d_mlp:
        raise MonoscopeError(f"{path}: the SAE reads d_in {sae.cfg.d_in} activations; this run's MLP has "
                             f"d_mlp {d_mlp if d_mlp > 0 else '(unreadable in lm/config.json)'}")
    if meta.get("hook_name") not in (None, "", HOOK_POST):
        raise MonoscopeError(f"{path}: the SAE was trained on {meta['hook_name']!r}; this run's SAEs read "
                             f"{HOOK_POST!r}")
    config = {"imported_from": str(path.resolve()), "files": {f: rundir.file_digest(path / f)
                                                              for f in (CFG_FILENAME, WEIGHTS_FILENAME)}}
    out_dir = run_dir / "saes" / name
    if not force and rundir.is_current(out_dir, config=config, inputs=inputs):
        log(f"add-sae: up to date at {out_dir} (use --force to redo)")
        return out_dir
    with rundir.write_stage(out_dir, stage="sae", config=config, inputs=inputs) as tmp:
        save_sae(sae, tmp, meta={**meta, "hook_name": HOOK_POST, "imported_from": str(path.resolve())})
        summary = {"architecture": sae.cfg.architecture, "d_in": sae.cfg.d_in, "d_sae": sae.cfg.d_sae,
                   "k": sae.cfg.k, "imported_from": str(path.resolve())}
        (tmp / "metrics.json").write_text(json.dumps(summary, indent=1))
    log(f"add-sae: {sae.cfg.architecture} SAE {sae.cfg.d_in} -> {sae.cfg.d_sae} from {path} at {out_dir}")
    return out_dir
