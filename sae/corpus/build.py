"""Corpus stage: text source -> byte-level BPE tokenizer -> fixed-length token rows (train / held-out by file).

Every row starts with BOS (= the end-of-text token) and documents are separated by end-of-text in the stream,
so the LM always sees a document boundary marker. The split is by file (hash of the relative name), so held-out
text was never trained on, not even a neighbouring chunk of the same file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from sae import rundir
from sae.corpus.sources import Document, read_source
from sae.corpus.tokenizer import (
    EOT,
    load_existing_tokenizer,
    token_strings,
    train_bpe,
    write_hf_folder,
)
from sae.errors import MonoscopeError

ENCODE_CHUNK = 64  # documents per encode_batch call: big enough for the Rust thread pool, small for the bar


@dataclass(frozen=True)
class CorpusConfig:
    """What the corpus stage builds; every field is part of the manifest, so changing one rebuilds."""

    source: str = "stdlib"  # "stdlib", a folder of text files, or a .jsonl with a `text` field
    vocab_size: int = 4096
    n_ctx: int = 128
    max_tokens: int | None = None  # cap on training tokens (held-out gets heldout_fraction of it)
    heldout_fraction: float = 0.2  # stdlib: about 1.3M held-out tokens, enough for a 1M-token analysis
    tokenizer: str | None = None  # existing HF tokenizer (local dir or cached name) instead of training one


def split_by_file(names: list[str], heldout_fraction: float) -> tuple[set[str], set[str]]:
    """Return (train, heldout) name sets: deterministic by hash of the name, at least one name on each side."""
    if len(names) < 2:
        raise MonoscopeError(f"need at least 2 files/documents for a held-out split, found {len(names)}")

    def score(name: str) -> float:
        return int(hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest(), 16) / 2**64

    ranked = sorted(names, key=lambda n: (score(n), n))
    heldout = {n for n in names if score(n) < heldout_fraction}
    if not heldout:
        heldout = {ranked[0]}
    if len(heldout) == len(names):
        heldout.discard(ranked[-1])
    return set(names) - heldout, heldout


def encode_stream(
    tokenizer: Tokenizer, docs: list[Document], eot_id: int, cap: int | None, desc: str, progress: bool
) -> np.ndarray:
    """Return one int64 token stream [N]: each document's tokens followed by end-of-text, stopped at `cap`."""
    parts: list[np.ndarray] = []
    total = 0
    bar = tqdm(total=len(docs), desc=desc, unit="file", disable=not progress, leave=False)
    for start in range(0, len(docs), ENCODE_CHUNK):
        chunk = docs[start : start + ENCODE_CHUNK]
        for enc in tokenizer.encode_batch([d.text for d in chunk], add_special_tokens=False):
            ids = np.asarray(enc.ids + [eot_id], dtype=np.int64)
            parts.append(ids)
            total += len(ids)
        bar.update(len(chunk))
        if cap is not None and total >= cap:
            break
    bar.close()
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return stream[:cap] if cap is not None else stream


def pack_rows(stream: np.ndarray, n_ctx: int, bos_id: int, dtype: np.dtype) -> np.ndarray:
    """Return rows [n_seq, n_ctx]: BOS then n_ctx-1 stream tokens; a short tail is dropped unless it is all."""
    body = n_ctx - 1
    n_rows = len(stream) // body
    if n_rows == 0 and len(stream) > 0:  # a tiny held-out split still gets one (BOS-padded) row
        stream = np.concatenate([stream, np.full(body - len(stream), bos_id, dtype=stream.dtype)])
        n_rows = 1
    rows = np.empty((n_rows, n_ctx), dtype=dtype)
    rows[:, 0] = bos_id
    rows[:, 1:] = stream[: n_rows * body].reshape(n_rows, body)
    return rows


def build_corpus(
    run_dir: Path, cfg: CorpusConfig, *, force: bool = False, progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Return runs/<run>/corpus, building it unless it is up to date with `cfg` (or `force`)."""
    if cfg.n_ctx < 2:
        raise MonoscopeError(f"--n-ctx must be at least 2, got {cfg.n_ctx}")
    if cfg.tokenizer is None and cfg.vocab_size < 257 + 1:
        raise MonoscopeError(f"--vocab-size must exceed 257 (256 bytes + end-of-text), got {cfg.vocab_size}")
    if cfg.max_tokens is not None and cfg.max_tokens < cfg.n_ctx:
        raise MonoscopeError(f"--max-tokens must be at least --n-ctx ({cfg.n_ctx}), got {cfg.max_tokens}")
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        rundir.check_run_dir(run_dir)  # raises the one-line "is a file" error
    out_dir = run_dir / "corpus"
    config = asdict(cfg)
    if not force and rundir.is_current(out_dir, config=config, inputs={}):
        log(f"corpus: up to date at {out_dir} (use --force to rebuild)")
        return out_dir

    docs, stats = read_source(cfg.source, progress=progress)
    rundir.check_run_dir(run_dir)  # created only once the source is known to be good
    train_names, heldout_names = split_by_file([d.name for d in docs], cfg.heldout_fraction)
    train_docs = [d for d in docs if d.name in train_names]
    heldout_docs = [d for d in docs if d.name in heldout_names]

    if cfg.tokenizer is None:
        log(f"corpus: training a {cfg.vocab_size}-token byte-level BPE on {len(train_docs)} files")
        tokenizer = train_bpe((d.text for d in train_docs), cfg.vocab_size)
        bos_token = EOT
    else:
        tokenizer, bos_token = load_existing_tokenizer(cfg.tokenizer)
    bos_id = tokenizer.token_to_id(bos_token)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    dtype = np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.int32)

    heldout_cap = None if cfg.max_tokens is None else max(cfg.n_ctx, int(cfg.max_tokens * cfg.heldout_fraction))
    train_stream = encode_stream(tokenizer, train_docs, bos_id, cfg.max_tokens, "tokenize train", progress)
    heldout_stream = encode_stream(tokenizer, heldout_docs, bos_id, heldout_cap, "tokenize held-out", progress)
    train_rows = pack_rows(train_stream, cfg.n_ctx, bos_id, dtype)
    heldout_rows = pack_rows(heldout_stream, cfg.n_ctx, bos_id, dtype)
    if len(train_rows) == 0:
        raise MonoscopeError(f"source {cfg.source} gives fewer than {cfg.n_ctx} training tokens")

    meta = {
        **stats,
        "source": cfg.source,
        "vocab_size": vocab_size,
        "n_ctx": cfg.n_ctx,
        "bos_id": bos_id,
        "bos_token": bos_token,
        "dtype": dtype.name,
        "train_tokens": int(train_rows.size),
        "heldout_tokens": int(heldout_rows.size),
        "train_sequences": len(train_rows),
        "heldout_sequences": len(heldout_rows),
        "train_files": sorted(train_names),
        "heldout_files": sorted(heldout_names),
    }
    with rundir.write_stage(out_dir, stage="corpus", config=config, inputs={}) as tmp:
        tokenizer.save(str(tmp / "tokenizer.json"))
        write_hf_folder(tmp / "tokenizer.json", tmp / "hf", bos_token=bos_token, n_ctx=cfg.n_ctx)
        np.save(tmp / "tokens.npy", train_rows)
        np.save(tmp / "heldout.npy", heldout_rows)
        (tmp / "token_strings.json").write_text(json.dumps(token_strings(tokenizer), ensure_ascii=False))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))
    log(
        f"corpus: {stats['files']} files, {stats['bytes'] / 1e6:.1f} MB ({stats['replaced_bytes']} bytes replaced) "
        f"-> {meta['train_tokens']:,} train + {meta['heldout_tokens']:,} held-out tokens, vocab {vocab_size} "
        f"at {out_dir}"
    )
    return out_dir


def load_corpus_meta(run_dir: Path) -> dict:
    """Return corpus/meta.json of a run; a clear error when the corpus stage has not run."""
    out_dir = Path(run_dir) / "corpus"
    rundir.fingerprint(out_dir, "corpus")
    return json.loads((out_dir / "meta.json").read_text())


def load_tokens(run_dir: Path, split: str = "train") -> np.ndarray:
    """Return the memory-mapped token rows [n_seq, n_ctx] of `split` ("train" or "heldout")."""
    name = {"train": "tokens.npy", "heldout": "heldout.npy"}[split]
    out_dir = Path(run_dir) / "corpus"
    rundir.fingerprint(out_dir, "corpus")
    return np.load(out_dir / name, mmap_mode="r")


