"""The one-layer language model: every use of transformer_lens lives in this file.

Keeping it in one module makes a move to transformer_lens 4's `TransformerBridge` a one-file change, and
gives one place to silence its 3.x deprecation warning. A trained model is saved as `config.json`
(HookedTransformerConfig fields as JSON) + `weights.safetensors`; a pretrained one as `config.json` with
`"pretrained": NAME`, reloaded from the local Hugging Face cache.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from sae.corpus.tokenizer import hub_offline, load_hf_tokenizer
from sae.errors import MonoscopeError
from sae.lm.config import CONFIG_FILENAME, LMConfig, lm_dir, read_lm_config

warnings.filterwarnings("ignore", message=r".*HookedTransformer.* deprecated", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=r".*TransformerBridge", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformer_lens.*")

from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: E402

from sae.conventions import HOOK_POST  # noqa: E402


def _tokenizer_folder(tokenizer_dir: Path | None) -> Path | None:
    """Return the transformers folder for a corpus dir (its `hf/`) or an hf folder itself."""
    if tokenizer_dir is None:
        return None
    tokenizer_dir = Path(tokenizer_dir)
    return tokenizer_dir / "hf" if (tokenizer_dir / "hf").is_dir() else tokenizer_dir


def _hooked_config(cfg: LMConfig, device: str) -> HookedTransformerConfig:
    return HookedTransformerConfig(
        n_layers=1, d_model=cfg.d_model, d_head=cfg.d_head, n_heads=cfg.n_heads, d_mlp=cfg.d_mlp,
        d_vocab=cfg.d_vocab, n_ctx=cfg.n_ctx, act_fn=cfg.act_fn, normalization_type="LN",
        positional_embedding_type="standard", seed=cfg.seed, device=device, default_prepend_bos=True,
        original_architecture="monoscope",
    )


def build_model(cfg: LMConfig, tokenizer_dir: Path | None = None, device: str | torch.device = "cpu"):
    """Return a freshly initialised HookedTransformer (seeded), with the corpus tokenizer when given."""
    folder = _tokenizer_folder(tokenizer_dir)
    tokenizer = load_hf_tokenizer(folder) if folder is not None else None
    if tokenizer is not None and len(tokenizer) != cfg.d_vocab:
        raise MonoscopeError(f"tokenizer at {folder} has {len(tokenizer)} tokens but the model d_vocab is {cfg.d_vocab}")
    with hub_offline():  # transformer_lens reloads the tokenizer by its (local) path
        return HookedTransformer(_hooked_config(cfg, str(device)), tokenizer=tokenizer)


def _config_json(model) -> dict:
    """Return the model's HookedTransformerConfig as JSON-able fields (dtype/device as strings)."""
    out = {}
    for key, value in vars(model.cfg).items():
        if isinstance(value, torch.dtype):
            value = str(value).removeprefix("torch.")
        elif isinstance(value, torch.device):
            value = str(value)
        try:
            json.dumps(value)
        except TypeError:
            value = str(value)
        out[key] = value
    return out


def save_lm(model, out_dir: Path, *, pretrained: str | None = None) -> None:
    """Write config.json (+ weights.safetensors unless `pretrained` names a cached model) into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {**_config_json(model), "pretrained": pretrained}
    (out_dir / CONFIG_FILENAME).write_text(json.dumps(config, indent=1))
    if pretrained is None:
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(out_dir / "weights.safetensors"))


def load_lm(run_dir_or_lm_dir: Path, device: str | torch.device = "cpu"):
    """Return the saved model in eval mode, with the run's tokenizer (corpus/hf) attached when present."""
    folder = lm_dir(run_dir_or_lm_dir)
    saved = read_lm_config(folder)
    if saved.get("pretrained"):
        return load_pretrained(saved["pretrained"], device)
    names = {f.name for f in fields(HookedTransformerConfig) if f.init}
    kwargs = {k: v for k, v in saved.items() if k in names and k not in ("n_params", "device")}
    kwargs["dtype"] = getattr(torch, kwargs.get("dtype", "float32"))
    cfg = HookedTransformerConfig(**kwargs, device=str(device))
    tokenizer_dir = folder.parent / "corpus" / "hf"
    tokenizer = load_hf_tokenizer(tokenizer_dir) if tokenizer_dir.is_dir() else None
    with hub_offline():
        model = HookedTransformer(cfg, tokenizer=tokenizer)
    model.load_state_dict(load_file(str(folder / "weights.safetensors"), device=str(device)))
    return model.eval()


class _StopForward(Exception):
    """Raised from the hook to end the forward pass once the wanted activation is stored."""


def activation_at(model, tokens: torch.Tensor, hook_name: str) -> torch.Tensor:
    """Return the activation at `hook_name` as float32 for tokens [B, T]; the forward stops there."""
    return activations_at(model, tokens, [hook_name])[0]


FORWARD_SEQUENCES = 16  # sequences a CPU forward runs at a time: its attention's and MLP's temporaries at 64 were
# ~0.1 GiB of the analysis's peak, and it is faster in cache (BENCHMARKS.md); each sequence's activations are the same
# to the bit either way. An accelerator runs the batch whole.


def activations_at(model, tokens: torch.Tensor, hook_names: list[str]) -> list[torch.Tensor]:
    """Return the activations at hook_names (in the order the forward reaches them) as float32 for tokens [B, T];
    the forward stops at the last one, and on CPU runs FORWARD_SEQUENCES sequences at a time."""
    if len(tokens) <= FORWARD_SEQUENCES or torch.device(model.cfg.device).type != "cpu":
        return _activations_at(model, tokens, hook_names)
    pieces = [_activations_at(model, tokens[s: s + FORWARD_SEQUENCES], hook_names)
              for s in range(0, len(tokens), FORWARD_SEQUENCES)]
    return [torch.cat(acts) for acts in zip(*pieces)]


def _activations_at(model, tokens: torch.Tensor, hook_names: list[str]) -> list[torch.Tensor]:
    stored: list[torch.Tensor] = []

    def grab(act, hook):
        stored.append(act.float())
        if len(stored) == len(hook_names):
            raise _StopForward

    with torch.no_grad(), model.hooks(fwd_hooks=[(name, grab) for name in hook_names]):
        try:
            model(tokens.to(model.cfg.device), return_type=None)
        except _StopForward:
            pass
    return stored


def mlp_activations(model, tokens: torch.Tensor) -> torch.Tensor:
    """Return MLP post-activations [B, T, d_mlp] float32 for tokens [B, T]; the forward stops at HOOK_POST."""
    return activation_at(model, tokens, HOOK_POST)


def final_hook(model) -> str:
    """Return the hook of the residual stream after the last block (what ln_final reads)."""
    return f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"


def final_residual(model, tokens: torch.Tensor) -> torch.Tensor:
    """Return the residual stream after the last block [B, T, d_model] float32 (what ln_final reads)."""
    return activation_at(model, tokens, final_hook(model))


RESID_MID = "blocks.0.hook_resid_mid"


def mid_and_post(model, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (the residual stream before the MLP [B, T, d_model], the MLP post-activations [B, T, d_mlp]) of a
    one-layer model, float32 on its device; the forward stops at HOOK_POST."""
    mid, post = activations_at(model, tokens, [RESID_MID, HOOK_POST])
    return mid, post


def lm_loss(
    model, tokens: torch.Tensor,
    replace_mlp_post: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Return the mean next-token loss [] on tokens [B, T]; `replace_mlp_post` maps [B, T, d_mlp] -> same."""
    return _with_splice(model, tokens, replace_mlp_post, "loss")


def lm_logits(model, tokens: torch.Tensor,
              replace_mlp_post: Callable[[torch.Tensor], torch.Tensor] | None = None, kv_cache=None) -> torch.Tensor:
    """Return the logits [B, T, d_vocab] on tokens [B, T]; `replace_mlp_post` maps [B, T, d_mlp] -> same.

    kv_cache (`new_kv_cache`): tokens continue the ones the cache has seen, and are appended to it."""
    return _with_splice(model, tokens, replace_mlp_post, "logits", kv_cache)


def new_kv_cache(model, batch_size: int):
    """Return an empty key-value cache for `lm_logits` over batch_size rows (incremental decoding)."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    return TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, batch_size)


def _with_splice(model, tokens: torch.Tensor, replace_mlp_post, return_type: str, kv_cache=None) -> torch.Tensor:
    tokens = tokens.to(model.cfg.device)
    extra = {} if kv_cache is None else {"past_kv_cache": kv_cache}
    if replace_mlp_post is None:
        return model(tokens, return_type=return_type, **extra)

    def splice(act, hook):  # act: [B, T, d_mlp]
        return replace_mlp_post(act).to(act.dtype)

    with model.hooks(fwd_hooks=[(HOOK_POST, splice)]):
        return model(tokens, return_type=return_type, **extra)


def unembed_directions(model) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (W_out [d_mlp, d_model] of layer 0, W_eff [d_model, d_vocab]), detached: the direct logit effect of a
    residual direction d is d @ W_eff, what TransformerLens's fold_ln + center_unembed give.

    The final LayerNorm centres d and multiplies it by its gain ln_final.w before W_U; logits that move together
    change nothing, so W_U is centred over the vocabulary. Hence W_eff = C diag(w) (W_U - mean over vocab), C the
    centring matrix. A model loaded with its LayerNorm already folded (LNPre, no gain) has w = 1. The final
    LayerNorm's 1/scale at a given token multiplies every effect alike and is left out ("direct effect at unit
    scale"), as in the paper's logit-weight view.
    """
    W_U = model.W_U.detach().float()  # [d_model, d_vocab]
    gain = getattr(model.ln_final, "w", None)
    W = W_U - W_U.mean(dim=1, keepdim=True)
    if gain is not None:
        W = gain.detach().float()[:, None] * W
    return model.W_out[0].detach(), W - W.mean(dim=0, keepdim=True)


def _not_cached(name: str, official: str, why: str) -> MonoscopeError:
    return MonoscopeError(
        f"pretrained model {name!r} ({official}) is not in the local Hugging Face cache ({why}); download it "
        f"once on a machine with internet: python -c \"from transformer_lens import HookedTransformer; "
        f"HookedTransformer.from_pretrained('{name}')\" and copy ~/.cache/huggingface here"
    )


def _official_name(name: str) -> str:
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        return get_official_model_name(name)
    except ValueError:
        raise MonoscopeError(f"unknown pretrained model {name!r}: use a transformer_lens name such as gelu-1l") from None


def pretrained_tokenizer_name(name: str) -> str:
    """Return the HF tokenizer repo of a transformer_lens model name (gelu-1l -> its tokenizer); other names as is."""
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config

    try:
        official = _official_name(name)
    except MonoscopeError:
        return name  # not a transformer_lens name: an HF tokenizer repo
    with hub_offline():
        try:
            cfg = get_pretrained_model_config(official)
        except Exception as e:  # noqa: BLE001 - the Hub's offline/missing-file errors all mean "not cached"
            raise _not_cached(name, official, type(e).__name__) from None
    return cfg.tokenizer_name or official


def load_pretrained(name: str, device: str | torch.device = "cpu"):
    """Return a transformer_lens pretrained model from the local HF cache only; one clear line when absent."""
    official = _official_name(name)
    with hub_offline():
        try:
            model = HookedTransformer.from_pretrained(official, device=str(device))
        except Exception as e:  # noqa: BLE001 - the Hub's many offline/missing-file errors all mean "not cached"
            raise _not_cached(name, official, type(e).__name__) from None
    return model.eval()
