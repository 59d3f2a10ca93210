"""The corpus stage's config, validated; torch- and numpy-free, so the command line reads its defaults cheaply."""

from __future__ import annotations

from dataclasses import dataclass

from sae.errors import MonoscopeError

BYTE_TOKENS = 257  # a byte-level BPE's 256 byte tokens plus end-of-text


@dataclass(frozen=True)
class CorpusConfig:
    """What the corpus stage builds; every field is part of the manifest, so changing one rebuilds."""

    source: str = "stdlib"  # "stdlib", a folder of text files, or a .jsonl with a `text` field
    vocab_size: int = 4096
    n_ctx: int = 128
    max_tokens: int | None = None  # cap on training tokens (held-out gets heldout_fraction of it)
    heldout_fraction: float = 0.2  # stdlib: about 1.3M held-out tokens, enough for a 1M-token analysis
    tokenizer: str | None = None  # existing HF tokenizer (local dir or cached name) instead of training one

    def __post_init__(self) -> None:
        """Refuse a config that cannot give a corpus, in one line, before any work."""
        if self.n_ctx < 2:
            raise MonoscopeError(f"--n-ctx must be at least 2, got {self.n_ctx}")
        if self.tokenizer is None and self.vocab_size < BYTE_TOKENS + 1:
            raise MonoscopeError(f"--vocab-size must exceed {BYTE_TOKENS} (256 bytes + end-of-text), "
                                 f"got {self.vocab_size}")
        if self.max_tokens is not None and self.max_tokens < self.n_ctx:
            raise MonoscopeError(f"--max-tokens must be at least --n-ctx ({self.n_ctx}), got {self.max_tokens}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise MonoscopeError(f"--heldout-fraction must be between 0 and 1, got {self.heldout_fraction}")
