"""The language model's configs and its saved config.json: torch-free, so the command line and ingest read them
without loading torch or transformer_lens."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sae.errors import MonoscopeError

ACT_FNS = ("relu", "gelu")  # the MLP activations (transformer_lens's names) a trained LM may use
AUTOCASTS = ("auto", "bf16", "fp32")
CONFIG_FILENAME = "config.json"


@dataclass(frozen=True)
class LMConfig:
    """Shape of the one-layer model; d_mlp = 512 and a ReLU MLP as in the paper."""

    d_model: int = 128
    d_mlp: int = 512
    n_heads: int = 4
    d_head: int = 32
    act_fn: str = "relu"  # or "gelu"
    n_ctx: int = 128
    d_vocab: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.d_model, self.d_mlp, self.n_heads, self.d_head, self.n_ctx, self.d_vocab) <= 0:
            raise MonoscopeError("d_model, d_mlp, n_heads, d_head, n_ctx and d_vocab must be positive")
        if self.act_fn not in ACT_FNS:
            raise MonoscopeError(f"--act-fn must be {' or '.join(ACT_FNS)}, got {self.act_fn!r}")


@dataclass(frozen=True)
class TrainLMConfig:
    """Optimisation settings; the defaults train the demo model in about 2 minutes on 2 CPU cores."""

    tokens: int = 2_500_000  # training tokens (rows are re-used in a new order when the corpus is shorter)
    batch_size: int = 32
    lr: float = 3e-3
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.1  # cosine decays to lr * min_lr_frac
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    heldout_tokens: int = 131_072  # held-out tokens used for the reported loss
    autocast: str = "auto"  # auto | bf16 | fp32

    def __post_init__(self) -> None:
        if min(self.tokens, self.batch_size, self.heldout_tokens) <= 0 or not self.lr > 0:
            raise MonoscopeError("tokens, batch_size, lr and heldout_tokens must be positive")
        if self.autocast not in AUTOCASTS:
            raise MonoscopeError(f"autocast must be auto, bf16 or fp32, got {self.autocast!r}")


def lm_dir(run_dir_or_lm_dir: Path) -> Path:
    """Return the LM folder of a run folder (or an LM folder itself); a clear error when no LM is there."""
    path = Path(run_dir_or_lm_dir)
    if (path / "lm" / CONFIG_FILENAME).is_file() or not (path / CONFIG_FILENAME).is_file():
        path = path / "lm"
    if not (path / CONFIG_FILENAME).is_file():
        raise MonoscopeError(f"no trained LM at {path}: run `monoscope train-lm` first")
    return path


def read_lm_config(run_dir_or_lm_dir: Path) -> dict:
    """Return the saved LM's config.json: HookedTransformerConfig fields (d_mlp, d_vocab, ...) and `pretrained`."""
    path = lm_dir(run_dir_or_lm_dir) / CONFIG_FILENAME
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise MonoscopeError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise MonoscopeError(f"{path}: expected a JSON object")
    return config
