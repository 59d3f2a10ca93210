"""The proxies of one analysis: which apply to the corpus, and every analysed token's score (once for all bases).

The held-out split is scored in its own file order, where documents are whole (rows are consecutive slices of one
token stream, each after a BOS that is not part of the text), then its rows are taken in the analysis's order
(sae.corpus.build.load_heldout), so scores line up with the analysed token array. The split's scores are kept in
the run's .cache/proxy-scores/ and reused while the corpus and the proxies stay the same. The ratios come from the
first `TRAIN_SAMPLE_TOKENS` tokens of the training split.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from sae.analysis.proxies import Proxy, resolve
from sae.analysis.proxy_scores import OUTSIDE, Vocabulary, token_ratios, token_scores
from sae.corpus.build import heldout_order
from sae.errors import load_token_rows
from sae.corpus.tokenizer import token_bytes

TRAIN_SAMPLE_TOKENS = 1 << 18
CACHE = Path(".cache") / "proxy-scores"  # under the run: the held-out split's scores, per corpus and proxies
SCORES_VERSION = 1  # of the token scoring (sae/analysis/proxy_scores.py): a change makes the cache miss


def corpus_is_python(run_dir: Path) -> bool:
    """True when most of the corpus's files are Python source (the code-aware proxies apply)."""
    meta = json.loads((Path(run_dir) / "corpus" / "meta.json").read_text())
    files = list(meta.get("train_files", [])) + list(meta.get("heldout_files", []))
    if meta.get("source") == "stdlib":
        return True
    return bool(files) and sum(f.endswith((".py", ".pyi")) for f in files) * 2 >= len(files)


def analysis_proxies(run_dir: Path, names: tuple[str, ...], extra: tuple[str, ...]) -> list[Proxy]:
    """Return the proxies an analysis computes: `names` (built in) and `extra` (`regex:...`), without the code-aware
    ones when the corpus is not Python."""
    proxies = resolve(names, extra)
    return proxies if corpus_is_python(run_dir) else [p for p in proxies if not p.code_aware]


def heldout_scores(run_dir: Path, proxies: list[Proxy], n_rows: int) -> np.ndarray:
    """Return the scores [n_rows, T, K] float32 of the first n_rows held-out rows in the analysis's order (BOS
    columns: OUTSIDE)."""
    run_dir = Path(run_dir)
    heldout = load_token_rows(run_dir / "corpus" / "heldout.npy", "held-out tokens")
    rows = heldout_order(run_dir, len(heldout))[:n_rows]
    scores = _split_scores(run_dir, proxies, heldout)  # [n_heldout_rows, T - 1, K] in file order
    out = np.full((n_rows, heldout.shape[1], len(proxies)), OUTSIDE, dtype=np.float32)
    out[:, 1:] = scores[rows]
    return out


def _split_scores(run_dir: Path, proxies: list[Proxy], heldout: np.ndarray) -> np.ndarray:
    """Return the token scores of the whole held-out split after each row's BOS [n_rows, T - 1, K], in file order,
    from the run's .cache/proxy-scores/ when this corpus and these proxies were scored before (a function of both alone:
    Python's tokenize over every document is most of the cost, and analyses are redone more often than corpora)."""
    from sae import rundir

    key = hashlib.sha256(json.dumps([rundir.fingerprint(run_dir / "corpus", "corpus"), SCORES_VERSION,
                                     TRAIN_SAMPLE_TOKENS, [repr(p) for p in proxies]]).encode()).hexdigest()[:20]
    cache = run_dir / CACHE  # not under analysis/, whose folders are stages
    path = cache / f"{key}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    scores = _score_split(run_dir, proxies, heldout)
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.glob("*.npy"):  # one proxy set per run is kept
        old.unlink()
    tmp = cache / f".{key}.npy"
    np.save(tmp, scores)
    tmp.replace(path)
    return scores


def _score_split(run_dir: Path, proxies: list[Proxy], heldout: np.ndarray) -> np.ndarray:
    """Return the token scores of the whole held-out split after each row's BOS [n_rows, T - 1, K] float32."""
    from tokenizers import Tokenizer

    corpus = run_dir / "corpus"
    meta = json.loads((corpus / "meta.json").read_text())
    separator = int(meta["bos_id"])
    vocab = Vocabulary.of(token_bytes(Tokenizer.from_file(str(corpus / "tokenizer.json"))))
    train = load_token_rows(corpus / "tokens.npy", "token rows")
    sample_rows = train[: max(1, -(-TRAIN_SAMPLE_TOKENS // train.shape[1]))]
    ratios = token_ratios(proxies, vocab, np.asarray(sample_rows[:, 1:], dtype=np.int64).reshape(-1),
                          np.asarray(train[:, 1:], dtype=np.int64).reshape(-1), separator)
    stream = np.asarray(heldout[:, 1:], dtype=np.int64).reshape(-1)
    return token_scores(proxies, ratios, vocab, stream, separator).reshape(len(heldout), -1, len(proxies))
