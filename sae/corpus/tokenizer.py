"""Tokenizer artifacts: train a byte-level BPE, or take an existing HF tokenizer from disk / the local cache.

`tokenizer.json` (the `tokenizers` library's own format) is canonical. The `hf/` folder beside it is derived
from it with a hand-written `tokenizer_config.json` naming `PreTrainedTokenizerFast`, so transformers 4.x and
5.x both load it (a folder saved by transformers 5 says `TokenizersBackend`, which 4.x cannot load), and
transformer_lens accepts it via `PreTrainedTokenizerFast.from_pretrained(dir)` without calling the Hub.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from sae.errors import MonoscopeError

EOT = "<|endoftext|>"  # end-of-text; also BOS, as in GPT-2


@dataclass(frozen=True)
class CorpusTokenizer:
    """A tokenizer and the token every row starts with (BOS; also the end-of-text separator of documents)."""

    tokenizer: Tokenizer
    bos_token: str

    @property
    def bos_id(self) -> int:
        return self.tokenizer.token_to_id(self.bos_token)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Return a byte-level BPE (GPT-2 pre-tokenizer, no prefix space) with EOT as id 0; round-trips any text."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is ever unknown
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def _special(value) -> str | None:
    """Return a special token's text from a tokenizer_config entry (a string or an AddedToken dict)."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def load_existing_tokenizer(name_or_dir: str) -> CorpusTokenizer:
    """Return a tokenizer and its BOS token from a local folder or the local HF cache (never the network)."""
    folder = Path(name_or_dir)
    if folder.is_dir():
        tok_file, cfg_file = folder / "tokenizer.json", folder / "tokenizer_config.json"
        if not tok_file.is_file():
            raise MonoscopeError(f"tokenizer folder {folder} has no tokenizer.json")
    else:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name_or_dir, "tokenizer.json")
        if not isinstance(found, str):
            raise MonoscopeError(
                f"tokenizer {name_or_dir!r} is not in the local Hugging Face cache: fetch it once with "
                f"`hf download {name_or_dir} tokenizer.json tokenizer_config.json`, or give a local folder"
            )
        tok_file = Path(found)
        cfg_found = try_to_load_from_cache(name_or_dir, "tokenizer_config.json")
        cfg_file = Path(cfg_found) if isinstance(cfg_found, str) else tok_file.with_name("missing")
    tokenizer = Tokenizer.from_file(str(tok_file))
    config = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    candidates = [_special(config.get("bos_token")), _special(config.get("eos_token")), EOT, "<|BOS|>", "<s>"]
    for token in candidates:
        if token and tokenizer.token_to_id(token) is not None:
            return CorpusTokenizer(tokenizer, token)
    raise MonoscopeError(f"tokenizer {name_or_dir!r} has no BOS/end-of-text token to start rows with")


def write_hf_folder(tokenizer_json: Path, hf_dir: Path, *, bos_token: str, n_ctx: int) -> None:
    """Write a transformers folder derived from the canonical tokenizer.json (loadable by 4.x and 5.x)."""
    hf_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tokenizer_json, hf_dir / "tokenizer.json")
    specials = {"bos_token": bos_token, "eos_token": bos_token, "unk_token": bos_token, "pad_token": bos_token}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **specials,
        "add_bos_token": False,  # rows carry BOS already; transformer_lens prepends it itself for text
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,  # otherwise 4.x decodes "a ." as "a." and breaks round-trips
        "model_max_length": n_ctx,
    }
    (hf_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    (hf_dir / "special_tokens_map.json").write_text(json.dumps(specials, indent=1))


@contextmanager
def hub_offline() -> Iterator[None]:
    """Switch the Hugging Face Hub off for a call (env vars + huggingface_hub's already-read constant)."""
    import huggingface_hub.constants as hub_constants

    old_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    old_const = hub_constants.HF_HUB_OFFLINE
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = old_const
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def load_hf_tokenizer(hf_dir: Path):
    """Return a PreTrainedTokenizerFast from a local folder, with the Hub switched off for the call."""
    from transformers import PreTrainedTokenizerFast

    with hub_offline():
        return PreTrainedTokenizerFast.from_pretrained(str(hf_dir))


def token_strings(tokenizer: Tokenizer) -> list[str]:
    """Return a readable string per token id (`token_string`)."""
    return [token_string(tokenizer, i) for i in range(tokenizer.get_vocab_size(True))]


def token_string(tokenizer: Tokenizer, i: int) -> str:
    """Return token i as text: its bytes decoded, and where they are not whole UTF-8 characters (a character split
    across tokens) those bytes in hex, as `<e2 80>`, instead of the decoder's U+FFFD."""
    text = tokenizer.decode([i], skip_special_tokens=False)
    if "\ufffd" not in text:
        return text
    piece, table = tokenizer.id_to_token(i), _byte_of_char()
    if piece is None or any(c not in table for c in piece):  # not a byte-level vocabulary: keep the decoder's text
        return text
    return readable_bytes(bytes(table[c] for c in piece))


def readable_bytes(raw: bytes) -> str:
    """Return bytes as text, each run of bytes that is not valid UTF-8 written in hex: b"a\\xe2\\x80" -> "a<e2 80>"."""
    return re.sub("[\udc80-\udcff]+", lambda m: "<" + " ".join(f"{ord(c) - 0xDC00:02x}" for c in m.group()) + ">",
                  raw.decode("utf-8", "surrogateescape"))


@lru_cache(maxsize=1)
def _byte_of_char() -> dict[str, int]:
    """GPT-2's byte-level alphabet reversed: the byte each character of a byte-level BPE vocabulary spells."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    code = {b: b for b in printable}
    for b in range(256):
        if b not in code:
            code[b] = 256 + len(code) - len(printable)
    return {chr(c): b for b, c in code.items()}


def token_bytes(tokenizer: Tokenizer) -> list[bytes]:
    """Return the bytes each token id spells (special tokens: b""); a vocabulary that is not byte-level gets each
    token's decoded text as UTF-8."""
    table = _byte_of_char()
    special = {t.content for t in tokenizer.get_added_tokens_decoder().values()}
    out = []
    for i in range(tokenizer.get_vocab_size(True)):
        piece = tokenizer.id_to_token(i)
        if piece is None or piece in special:
            out.append(b"")
        elif all(c in table for c in piece):
            out.append(bytes(table[c] for c in piece))
        else:
            out.append(tokenizer.decode([i]).encode("utf-8"))
    return out
