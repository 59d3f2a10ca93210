"""SAELens-compatible SAE folders, both ways: cfg.json + sae_weights.safetensors (+ sparsity.safetensors).

We write SAELens's flat v5 cfg.json (no `sae_lens_version` key), which SAELens 5 reads as is and SAELens 6
converts on load (`handle_pre_6_0_config`). The names written are each architecture's record's
(sae/dictionary/architectures.py): our relu is SAELens's standard; topk is written as architecture topk with
`activation_fn_str` topk, `activation_fn_kwargs: {"k": k}` and a top-level `k`, the form both versions map to
their TopK SAE. Keys SAELens does not know (run provenance, training config) go under
`"monoscope"`; both versions drop unknown keys.

Reading accepts our files and SAELens's own (v5 flat cfg or v6 nested `metadata` cfg; standard, topk, jumprelu)
and folds SAELens options our module lacks into the weights, so encode/decode stay identical:
`apply_b_dec_to_input: false`, v5 `finetuning_scaling_factor`, v6 topk `rescale_acts_by_decoder_norm`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sae.conventions import HOOK_POST
from sae.dictionary.architectures import MODULES, Architecture, architecture, from_saelens
from sae.dictionary.model import SAEConfig, SparseAutoencoder
from sae.errors import MonoscopeError

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
SPARSITY_FILENAME = "sparsity.safetensors"
SPARSITY_EPS = 1e-10  # SAELens stores log10(density + 1e-10), so never-firing features read -10, not -inf

# SAELens's descriptive (v5 flat) keys and the values we write when the caller's meta does not say.
DEFAULT_META: dict[str, Any] = {
    "model_name": "monoscope",
    "hook_name": HOOK_POST,
    "hook_head_index": None,
    "prepend_bos": True,
    "dataset_path": "",
    "dataset_trust_remote_code": False,
    "context_size": 128,
    "neuronpedia_id": None,
    "model_from_pretrained_kwargs": {},
    "seqpos_slice": [None],
    "sae_lens_training_version": None,
}
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
           "bfloat16": torch.bfloat16}


def _hook_layer(hook_name: str) -> int:
    """Return the block index in a transformer_lens hook name (blocks.3.… -> 3); 0 for hooks outside blocks."""
    found = re.match(r"blocks\.(\d+)\.", hook_name)
    return int(found.group(1)) if found else 0


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def save_sae(sae: SparseAutoencoder, out_dir: str | Path, *, meta: dict[str, Any] | None = None,
             density: torch.Tensor | np.ndarray | None = None) -> Path:
    """Write `sae` into out_dir as a SAELens folder and return out_dir.

    meta: SAELens descriptive keys (model_name, hook_name, context_size, dataset_path, ...; defaults above)
    plus any JSON-serialisable extras, which are kept under cfg["monoscope"] and come back from load_sae.
    density: fraction of tokens on which each feature fired, [d_sae]; written as log10 to sparsity.safetensors.
    Weights are written as they are: any activation scaling must already be folded in (DESIGN §2).
    """
    cfg, arch = sae.cfg, sae.cfg.arch
    meta = dict(meta or {})
    known = {k: meta.pop(k) for k in list(meta) if k in DEFAULT_META}
    described = {**DEFAULT_META, **known}
    try:
        json.dumps(meta)
    except TypeError as e:
        raise MonoscopeError(f"SAE meta must be JSON-serialisable: {e}") from None
    activation_kwargs = {"k": cfg.k} if arch.uses_k else {}
    out = {
        "architecture": arch.saelens,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": _dtype_name(sae.W_enc.dtype),
        "device": "cpu",
        "model_name": str(described["model_name"]),
        "hook_name": str(described["hook_name"]),
        "hook_layer": _hook_layer(str(described["hook_name"])),
        "hook_head_index": described["hook_head_index"],
        "activation_fn_str": arch.saelens_activation,
        "activation_fn_kwargs": activation_kwargs,
        "apply_b_dec_to_input": True,
        "finetuning_scaling_factor": False,
        "sae_lens_training_version": described["sae_lens_training_version"],
        "prepend_bos": bool(described["prepend_bos"]),
        "dataset_path": str(described["dataset_path"]),
        "dataset_trust_remote_code": bool(described["dataset_trust_remote_code"]),
        "context_size": int(described["context_size"]),
        "normalize_activations": "none",
        "neuronpedia_id": described["neuronpedia_id"],
        "model_from_pretrained_kwargs": dict(described["model_from_pretrained_kwargs"]),
        "seqpos_slice": list(described["seqpos_slice"]),
        **({"k": cfg.k} if arch.uses_k else {}),
        "monoscope": meta,
    }
    tensors = {name: p.detach().cpu().contiguous() for name, p in sae.named_parameters()}
    if arch.has_threshold:
        # Ours and SAELens's JumpReLUSAE both compute ReLU(pre) · [pre > θ], where a negative θ acts as 0; the
        # paper's JumpReLU (SAELens's training SAE, Gemma Scope) computes pre · [pre > θ], which lets negative
        # pre-activations through when θ < 0. Both agree for θ >= 0, so store max(θ, 0): every reader gets our forward.
        tensors["threshold"] = tensors["threshold"].clamp_min(0)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out_dir / WEIGHTS_FILENAME)
    if density is not None:
        density = torch.as_tensor(np.asarray(density), dtype=torch.float32).reshape(-1)  # [d_sae]
        if density.numel() != cfg.d_sae:
            raise MonoscopeError(f"density has {density.numel()} entries, the SAE has {cfg.d_sae} features")
        save_file({"sparsity": torch.log10(density + SPARSITY_EPS)}, out_dir / SPARSITY_FILENAME)
    (out_dir / CFG_FILENAME).write_text(json.dumps(out, indent=2) + "\n")
    return out_dir


def _read_cfg(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise MonoscopeError(f"{path}: no such SAE folder")
    try:
        cfg = json.loads((path / CFG_FILENAME).read_text())
    except FileNotFoundError:
        raise MonoscopeError(f"{path}: no {CFG_FILENAME}; not an SAE folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MonoscopeError(f"{path / CFG_FILENAME}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise MonoscopeError(f"{path / CFG_FILENAME}: expected a JSON object")
    return cfg


def _flatten(cfg: dict[str, Any]) -> dict[str, Any]:
    """Return a v5-style flat cfg: SAELens 6 nests the descriptive keys under `metadata` and renames a few."""
    flat = dict(cfg)
    if isinstance(cfg.get("metadata"), dict):
        flat = {**cfg["metadata"], **{k: v for k, v in cfg.items() if k != "metadata"}}
    renames = {"hook_point": "hook_name", "hook_point_head_index": "hook_head_index",
               "hook_point_layer": "hook_layer", "activation_fn": "activation_fn_str"}
    for old, new in renames.items():
        if old in flat and new not in flat:
            flat[new] = flat.pop(old)
    return flat


def _architecture(flat: dict[str, Any], where: Path) -> tuple[Architecture, int | None]:
    """Return (our module architecture's record, k) for a flat cfg, or refuse what our module cannot express."""
    name = flat.get("architecture", "standard")
    act = flat.get("activation_fn_str", "relu") or "relu"
    kwargs = flat.get("activation_fn_kwargs") or {}
    if name == "standard" and act == "topk":  # SAELens 5 wrote TopK SAEs as a standard SAE with a topk activation
        name = "topk"
    arch = from_saelens(name)
    if arch is None:
        known = ", ".join(ours.saelens for ours in map(architecture, MODULES))
        raise MonoscopeError(f"{where}: SAE architecture {name!r} is not supported ({known})")
    if not arch.uses_k and act != arch.saelens_activation:
        raise MonoscopeError(f"{where}: activation function {act!r} is not supported ({arch.saelens_activation})")
    k = flat.get("k", kwargs.get("k")) if arch.uses_k else None
    if arch.uses_k and not isinstance(k, int):
        raise MonoscopeError(f"{where}: {arch.name} SAE without an integer k in its cfg")
    norm = flat.get("normalize_activations", "none")
    # expected_average_only_in is a training-time scale that SAELens folds in before saving: inference ignores it.
    if norm not in (None, False, "none", "expected_average_only_in"):
        raise MonoscopeError(f"{where}: normalize_activations {norm!r} depends on each input; cannot load it")
    return arch, k


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path / WEIGHTS_FILENAME, device="cpu")
    except FileNotFoundError:
        raise MonoscopeError(f"{path}: no {WEIGHTS_FILENAME}") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise MonoscopeError(f"{path / WEIGHTS_FILENAME}: unreadable ({e})") from None


@torch.no_grad()
def load_sae(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Return (SAE, meta) from a folder written by save_sae or by SAELens 5/6 (standard, topk, jumprelu).

    meta holds the SAELens descriptive keys (model_name, hook_name, context_size, ...) plus our extras.
    """
    path = Path(path)
    raw = _read_cfg(path)
    flat = _flatten(raw)
    arch, k = _architecture(flat, path)
    try:
        d_in, d_sae = int(flat["d_in"]), int(flat["d_sae"])
    except (KeyError, TypeError, ValueError):
        raise MonoscopeError(f"{path / CFG_FILENAME}: needs integer d_in and d_sae") from None
    weights = {name: t.float() for name, t in _read_weights(path).items()}
    shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if arch.has_threshold:
        shapes["threshold"] = (d_sae,)
    for name, shape in shapes.items():
        if name not in weights:
            raise MonoscopeError(f"{path / WEIGHTS_FILENAME}: tensor {name} is missing")
        if tuple(weights[name].shape) != shape:
            raise MonoscopeError(f"{path / WEIGHTS_FILENAME}: {name} has shape {tuple(weights[name].shape)}, "
                                 f"cfg says {shape}")
    W_enc, b_enc, W_dec, b_dec = (weights[n] for n in ("W_enc", "b_enc", "W_dec", "b_dec"))
    if flat.get("apply_b_dec_to_input") is False:
        b_enc = b_enc + b_dec @ W_enc  # ours always subtracts b_dec first: add it back through the encoder
    if flat.get("finetuning_scaling_factor") and "finetuning_scaling_factor" in weights:
        W_dec = W_dec * weights["finetuning_scaling_factor"][:, None]  # v5 scales activations before decoding
    if arch.uses_k and flat.get("rescale_acts_by_decoder_norm"):
        norms = W_dec.norm(dim=1).clamp_min(1e-8)  # [d_sae]; what SAELens's own inference export folds
        W_enc, b_enc, W_dec = W_enc * norms, b_enc * norms, W_dec / norms[:, None]
    sae = SparseAutoencoder(SAEConfig(d_in=d_in, d_sae=d_sae, architecture=arch.name, k=k))
    sae.W_enc.copy_(W_enc)
    sae.b_enc.copy_(b_enc)
    sae.W_dec.copy_(W_dec)
    sae.b_dec.copy_(b_dec)
    if arch.has_threshold:
        sae.threshold.copy_(weights["threshold"].clamp_min(0))  # SAELens applies ReLU first: t < 0 acts as 0
    dtype = _DTYPES.get(str(flat.get("dtype", "float32")).removeprefix("torch."), torch.float32)
    extras = flat.get("monoscope") if isinstance(flat.get("monoscope"), dict) else {}
    meta = {key: flat.get(key, default) for key, default in DEFAULT_META.items()}
    meta["hook_layer"] = flat.get("hook_layer", _hook_layer(str(meta["hook_name"])))
    return sae.to(device=device, dtype=dtype), {**meta, **extras}


def load_density(path: str | Path) -> np.ndarray | None:
    """Return per-feature firing density [d_sae] from sparsity.safetensors, or None when the folder has none."""
    file = Path(path) / SPARSITY_FILENAME
    if not file.exists():
        return None
    try:
        log10 = load_file(file)["sparsity"]
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise MonoscopeError(f"{file}: unreadable ({e})") from None
    return np.clip(np.power(10.0, log10.double().numpy()) - SPARSITY_EPS, 0.0, 1.0)  # [d_sae]
