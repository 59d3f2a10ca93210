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
from sae.conventions import HELDOUT_ORDER_SEED
from sae.corpus.config import CorpusConfig
from sae.corpus.sources import Document, SourceStats, read_source
from sae.corpus.tokenizer import (
    EOT,
    CorpusTokenizer,
    load_existing_tokenizer,
    token_string,
    token_strings,
    train_bpe,
    write_hf_folder,
)
from sae.errors import MonoscopeError, load_json, load_npy, load_token_rows

HELDOUT_FILENAME = "heldout.npy"
HELDOUT_ORDER_FILENAME = "heldout_order.npy"
ENCODE_CHUNK = 64  # documents per encode_batch call: big enough for the Rust thread pool, small for the bar


@dataclass(frozen=True)
class FileSplit:
    """The names of the files (documents) on each side of the held-out split."""

    train: set[str]
    heldout: set[str]


def split_by_file(names: list[str], heldout_fraction: float) -> FileSplit:
    """Return the train / held-out name sets: deterministic by hash of the name, at least one name on each side."""
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
    return FileSplit(train=set(names) - heldout, heldout=heldout)


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


@dataclass(frozen=True)
class TokenRows:
    """The corpus's token rows [n_seq, n_ctx] of each split, BOS first in every row."""

    train: np.ndarray
    heldout: np.ndarray


def build_corpus(
    run_dir: Path, cfg: CorpusConfig, *, force: bool = False, progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Return runs/<run>/corpus, building it unless it is up to date with `cfg` (or `force`)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        rundir.check_run_dir(run_dir)  # raises the one-line "is a file" error
    out_dir = run_dir / "corpus"
    config = asdict(cfg)
    if not force and rundir.is_current(out_dir, config=config, inputs={}):
        log(f"corpus: up to date at {out_dir} (use --force to rebuild)")
        return out_dir

    source = read_source(cfg.source, progress=progress)
    rundir.check_run_dir(run_dir)  # created only once the source is known to be good
    split = split_by_file([d.name for d in source.documents], cfg.heldout_fraction)
    train_docs = [d for d in source.documents if d.name in split.train]
    heldout_docs = [d for d in source.documents if d.name in split.heldout]
    tok = _tokenizer(cfg, train_docs, log)
    rows = _token_rows(cfg, tok, train_docs, heldout_docs, progress)
    meta = _meta(cfg, source.stats, tok, rows, split)
    with rundir.write_stage(out_dir, stage="corpus", config=config, inputs={}) as tmp:
        _write_files(tmp, tok, rows, meta, cfg.n_ctx)
    stats = source.stats
    log(
        f"corpus: {stats.files} files, {stats.bytes / 1e6:.1f} MB ({stats.replaced_bytes} bytes replaced) "
        f"-> {meta['train_tokens']:,} train + {meta['heldout_tokens']:,} held-out tokens, vocab {tok.vocab_size} "
        f"at {out_dir}"
    )
    return out_dir


def _tokenizer(cfg: CorpusConfig, train_docs: list[Document], log: Callable[[str], None]) -> CorpusTokenizer:
    """Return the configured existing tokenizer, or a BPE trained on the training files only."""
    if cfg.tokenizer is not None:
        return load_existing_tokenizer(cfg.tokenizer)
    log(f"corpus: training a {cfg.vocab_size}-token byte-level BPE on {len(train_docs)} files")
    return CorpusTokenizer(train_bpe((d.text for d in train_docs), cfg.vocab_size), bos_token=EOT)


def _token_rows(cfg: CorpusConfig, tok: CorpusTokenizer, train_docs: list[Document], heldout_docs: list[Document],
                progress: bool) -> TokenRows:
    """Return the packed rows of both splits (held-out capped at its share of --max-tokens)."""
    dtype = np.dtype(np.uint16) if tok.vocab_size <= 2**16 else np.dtype(np.int32)
    heldout_cap = None if cfg.max_tokens is None else max(cfg.n_ctx, int(cfg.max_tokens * cfg.heldout_fraction))
    train = encode_stream(tok.tokenizer, train_docs, tok.bos_id, cfg.max_tokens, "tokenize train", progress)
    heldout = encode_stream(tok.tokenizer, heldout_docs, tok.bos_id, heldout_cap, "tokenize held-out", progress)
    rows = TokenRows(train=pack_rows(train, cfg.n_ctx, tok.bos_id, dtype),
                     heldout=pack_rows(heldout, cfg.n_ctx, tok.bos_id, dtype))
    if len(rows.train) == 0:
        raise MonoscopeError(f"source {cfg.source} gives fewer than {cfg.n_ctx} training tokens")
    return rows


def _meta(cfg: CorpusConfig, stats: SourceStats, tok: CorpusTokenizer, rows: TokenRows, split: FileSplit) -> dict:
    """Return corpus/meta.json: what was read, the tokenizer's facts and the size of each split."""
    return {
        **asdict(stats),
        "source": cfg.source,
        "vocab_size": tok.vocab_size,
        "n_ctx": cfg.n_ctx,
        "bos_id": tok.bos_id,
        "bos_token": tok.bos_token,
        "dtype": rows.train.dtype.name,
        "train_tokens": int(rows.train.size),
        "heldout_tokens": int(rows.heldout.size),
        "train_sequences": len(rows.train),
        "heldout_sequences": len(rows.heldout),
        "train_files": sorted(split.train),
        "heldout_files": sorted(split.heldout),
    }


def _write_files(folder: Path, tok: CorpusTokenizer, rows: TokenRows, meta: dict, n_ctx: int) -> None:
    """Write the stage's files: tokenizer (canonical and HF folder), token rows, token strings, meta."""
    tok.tokenizer.save(str(folder / "tokenizer.json"))
    write_hf_folder(folder / "tokenizer.json", folder / "hf", bos_token=tok.bos_token, n_ctx=n_ctx)
    np.save(folder / "tokens.npy", rows.train)
    np.save(folder / HELDOUT_FILENAME, rows.heldout)
    np.save(folder / HELDOUT_ORDER_FILENAME, heldout_permutation(len(rows.heldout)))
    (folder / "token_strings.json").write_text(json.dumps(token_strings(tok.tokenizer), ensure_ascii=False))
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))


def load_corpus_meta(run_dir: Path) -> dict:
    """Return corpus/meta.json of a run; a clear error when the corpus stage has not run."""
    out_dir = Path(run_dir) / "corpus"
    rundir.fingerprint(out_dir, "corpus")
    return json.loads((out_dir / "meta.json").read_text())


def load_tokens(run_dir: Path, split: str = "train") -> np.ndarray:
    """Return the memory-mapped token rows [n_seq, n_ctx] of `split` ("train" or "heldout")."""
    name = {"train": "tokens.npy", "heldout": HELDOUT_FILENAME}[split]
    out_dir = Path(run_dir) / "corpus"
    rundir.fingerprint(out_dir, "corpus")
    return load_token_rows(out_dir / name, "token rows")


def heldout_permutation(n_rows: int) -> np.ndarray:
    """Return the held-out row order [n_rows]: the permutation seeded by HELDOUT_ORDER_SEED."""
    return np.random.default_rng(HELDOUT_ORDER_SEED).permutation(n_rows).astype(np.int64)


def heldout_order(run_dir: Path, n_rows: int) -> np.ndarray:
    """Return the corpus's held-out row order [n_rows]: corpus/heldout_order.npy, written with the corpus (a corpus
    built before it existed gets the same permutation, computed)."""
    path = Path(run_dir) / "corpus" / HELDOUT_ORDER_FILENAME
    if path.is_file():
        order = load_npy(path, "held-out row order")
        if order.shape != (n_rows,) or not np.array_equal(np.sort(order), np.arange(n_rows)):
            raise MonoscopeError(f"{path} is not a permutation of the {n_rows:,} held-out rows: run "
                                 "`monoscope corpus --force`")
        return np.asarray(order, dtype=np.int64)
    return heldout_permutation(n_rows)


def load_heldout(run_dir: Path, n_tokens: int | None = None) -> np.ndarray:
    """Return the held-out rows [n_seq, T] that hold the first n_tokens in the corpus's seeded row order (all rows,
    in that order, when fewer or None): the one reader of the held-out split for every consumer (LM loss, SAE
    metrics, analysis, matches), so every sample spreads over the whole split. Rows taken are copied into memory."""
    path = Path(run_dir) / "corpus" / HELDOUT_FILENAME
    if not path.exists():
        raise MonoscopeError(f"no held-out tokens at {path}: run `monoscope corpus` first")
    if n_tokens is not None and n_tokens <= 0:
        raise MonoscopeError(f"--tokens must be positive, got {n_tokens}")
    heldout = load_token_rows(path, "held-out tokens")
    order = heldout_order(run_dir, len(heldout))
    if n_tokens is not None:
        order = order[:len(first_rows(heldout, n_tokens))]
    return heldout[order]


def read_token_strings(run_dir: Path) -> list[str]:
    """Return the display string of every token id of a run's corpus (corpus/token_strings.json, written by
    `build_corpus`): the one reader for ingest, live inference and the export. A corpus written before partial UTF-8
    tokens were spelled as bytes (`<e2 80>`) has them as U+FFFD: those are spelled again from its tokenizer."""
    strings = load_json(Path(run_dir) / "corpus" / "token_strings.json", "run `monoscope corpus` first")
    path = Path(run_dir) / "corpus" / "tokenizer.json"
    if any("\ufffd" in s for s in strings) and path.is_file():
        tok = Tokenizer.from_file(str(path))
        n = tok.get_vocab_size(True)
        strings = [token_string(tok, i) if "\ufffd" in s and i < n else s for i, s in enumerate(strings)]
    return strings


def first_rows(rows: np.ndarray, n_tokens: int) -> np.ndarray:
    """Return the first ceil(n_tokens / T) rows of rows [n_seq, T] (all of them when fewer)."""
    return rows[: min(-(-n_tokens // rows.shape[1]), len(rows))]
