"""Token-level proxy scores: the paper's log-likelihood ratio log P(s | property) / P(s), maximised over the token
spans s that end at the token, computed once per analysis for every proxy (sae/analysis/proxies.py).

Each token id has a ratio per proxy (`TokenRatios`), estimated on a sample of the training split:
  class   log P(s | class) - log P(s) = sum over its bytes of (-log |class| - log P(b)): the uniform model against
          the unigram byte model P(b) of the training split (the classes are ASCII: a byte is a character);
  span    sum over its bytes of (log P(b | span) - log P(b)), P(b | span) the byte distribution inside the marked
          spans of the training sample;
  script  log P(script | s) - log P(script) (Bayes' rule, as the paper does for Arabic): P(script | s) the share of
          the token's training occurrences whose bytes all lie in characters of the script, which for a token holding
          part of a UTF-8 character is the paper's "fraction of its occurrences in the script".
A token occurrence has the property when all of its bytes do (class, span: marked in its own document; script: the
token's P(script | s) > 0, context-free as in the paper). The score of an occurrence with the property is the
largest sum of ratios over the runs of consecutive such occurrences ending at it (the spans s); one without it
scores OUTSIDE. Byte counts use add-one smoothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sae.analysis.proxies import Proxy, char_masks

OUTSIDE = -10.0  # the score of a token without the property, below every proxy-positive one
BUCKET_EDGES = (0.0, 4.0)  # stacked plots: outside the property, <= 0, (0, 4], > 4 nats
BUCKETS = ("outside", "≤ 0", "0–4", "> 4")


@dataclass(frozen=True)
class Vocabulary:
    """Every token id's bytes, packed: token i is blob[offsets[i]: offsets[i] + lengths[i]]."""

    blob: np.ndarray  # [total] uint8
    offsets: np.ndarray  # [V] int64
    lengths: np.ndarray  # [V] int64

    @classmethod
    def of(cls, token_bytes: list[bytes]) -> "Vocabulary":
        lengths = np.array([len(b) for b in token_bytes], dtype=np.int64)
        offsets = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        return cls(np.frombuffer(b"".join(token_bytes), dtype=np.uint8), offsets, lengths)

    def stream(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (the bytes of token stream ids [N] [B] uint8, each token's first byte [N + 1] int64)."""
        lengths = self.lengths[ids]
        starts = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        gather = np.repeat(self.offsets[ids] - starts[:-1], lengths) + np.arange(starts[-1])
        return self.blob[gather], starts


def code_points(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (the code point of the character each byte of UTF-8 data [B] belongs to [B] int64, whether each byte
    starts a character [B] bool); a malformed sequence gives some code point, never an error."""
    lead = (data & 0xC0) != 0x80
    if len(data) == 0:
        return np.zeros(0, dtype=np.int64), lead
    lead[0] = True
    char = np.cumsum(lead) - 1  # [B] the character of each byte
    first = np.flatnonzero(lead)
    size = np.diff(np.append(first, len(data)))[char]
    position = np.arange(len(data)) - first[char]
    lead_bits = np.where(data < 0x80, 0x7F, np.where(data < 0xE0, 0x1F, np.where(data < 0xF0, 0x0F, 0x07)))
    bits = np.where(lead, data & lead_bits, data & 0x3F).astype(np.int64) << (6 * (size - 1 - position))
    return np.add.reduceat(bits, first)[char], lead


def byte_masks(proxies: list[Proxy], data: np.ndarray, doc_starts: np.ndarray) -> list[np.ndarray]:
    """Return per proxy which bytes [B] bool of data have the property; doc_starts: each document's first byte
    [D + 1] (class and span proxies mark each document's decoded text; script proxies mark by code point)."""
    cp, lead = code_points(data)
    out = [np.zeros(len(data), dtype=bool) for _ in proxies]
    textual = [i for i, p in enumerate(proxies) if p.kind != "script"]
    for i, p in enumerate(proxies):
        if p.kind == "script":
            for lo, hi in p.blocks:
                out[i] |= (cp >= lo) & (cp <= hi)
    if not textual:
        return out
    for a, b in zip(doc_starts[:-1].tolist(), doc_starts[1:].tolist()):
        try:
            text = data[a:b].tobytes().decode("utf-8")
        except UnicodeDecodeError:  # a document cut inside a character: left unmarked
            continue
        char_of_byte = np.cumsum(lead[a:b]) - 1
        for i, mask in zip(textual, char_masks([proxies[i] for i in textual], text)):
            out[i][a:b] = mask[char_of_byte]
    return out


def token_marks(mask: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Return whether every byte of each token has the property [N] bool (a token without bytes: False)."""
    n = len(starts) - 1
    empty = starts[1:] == starts[:-1]
    if len(mask) == 0:
        return np.zeros(n, dtype=bool)
    at = np.minimum(starts[:-1], len(mask) - 1)
    return np.minimum.reduceat(mask.astype(np.uint8), at).astype(bool) & ~empty


def documents(ids: np.ndarray, starts: np.ndarray, separator: int) -> np.ndarray:
    """Return the first byte of each document of a token stream [D + 1] (documents end at the separator token)."""
    cuts = np.flatnonzero(ids == separator) + 1
    return np.unique(np.concatenate([[0], starts[cuts], [starts[-1]]]))


def token_ratios(proxies: list[Proxy], vocab: Vocabulary, sample: np.ndarray, train: np.ndarray,
                 separator: int) -> np.ndarray:
    """Return each token id's log-likelihood ratio per proxy [K, V] float64 (see the module docstring): byte models
    from the training sample's token stream sample [n], script shares from the whole training stream train [N]; a
    script's tokens never seen in it, or never in the script, get -inf."""
    data, starts = vocab.stream(sample)
    textual = [p for p in proxies if p.kind != "script"]
    masks = dict(zip([p.name for p in textual], byte_masks(textual, data, documents(sample, starts, separator))))
    log_p = np.log((np.bincount(data, minlength=256) + 1.0) / (len(data) + 256.0))  # [256] unigram bytes
    token_log_p = _per_token(log_p, vocab)  # [V] log P(s)
    scripts = [p for p in proxies if p.kind == "script"]
    shares = dict(zip([p.name for p in scripts], script_shares(scripts, vocab, train)))
    out = np.full((len(proxies), len(vocab.lengths)), -np.inf)
    for k, proxy in enumerate(proxies):
        if proxy.kind == "class":
            out[k] = -vocab.lengths * np.log(proxy.class_size) - token_log_p
        elif proxy.kind == "span":
            mask = masks[proxy.name]
            out[k] = _per_token(np.log((np.bincount(data[mask], minlength=256) + 1.0) / (int(mask.sum()) + 256.0)),
                                vocab) - token_log_p
        else:
            share, prior = shares[proxy.name]
            with np.errstate(divide="ignore"):
                out[k] = np.log(share) - np.log(prior)
    return out


def _per_token(byte_values: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """Return the sum of byte_values [256] over each token's bytes [V] (0 for a token without bytes)."""
    if len(vocab.blob) == 0:
        return np.zeros(len(vocab.lengths))
    sums = np.add.reduceat(byte_values[vocab.blob], np.minimum(vocab.offsets, len(vocab.blob) - 1))
    return np.where(vocab.lengths > 0, sums, 0.0)


def script_shares(scripts: list[Proxy], vocab: Vocabulary, train: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """Return per script (each token id's share of training occurrences inside the script [V], the share of all
    training tokens inside it). Only tokens holding a non-ASCII byte can be inside a script, so only their
    occurrences are decoded, each with 3 tokens either side: enough to complete any UTF-8 character it touches."""
    if not scripts:
        return []
    v = len(vocab.lengths)
    high = np.zeros(v, dtype=bool)
    high[np.unique(np.repeat(np.arange(v), vocab.lengths)[vocab.blob >= 0x80])] = True
    centers = np.flatnonzero(high[train])
    window = np.unique(np.clip(centers[:, None] + np.arange(-3, 4)[None, :], 0, max(len(train) - 1, 0)))
    data, starts = vocab.stream(train[window])
    inside_bytes = byte_masks(scripts, data, np.array([0, len(data)]))
    at_center = np.isin(window, centers)
    seen = np.bincount(train[centers], minlength=v)
    out = []
    for mask in inside_bytes:
        inside = token_marks(mask, starts)[at_center]
        share = np.bincount(train[centers], weights=inside, minlength=v) / np.maximum(seen, 1)
        out.append((share, max(float(inside.sum()), 1.0) / max(len(train), 1)))
    return out


def token_scores(proxies: list[Proxy], ratios: np.ndarray, vocab: Vocabulary, ids: np.ndarray,
                 separator: int) -> np.ndarray:
    """Return every token's score per proxy [N, K] float32 over a token stream ids [N] (one or more documents,
    separated by the separator token), by the module docstring's rule."""
    data, starts = vocab.stream(ids)
    masks = byte_masks(proxies, data, documents(ids, starts, separator))
    out = np.full((len(ids), len(proxies)), OUTSIDE, dtype=np.float32)
    for k, (proxy, mask) in enumerate(zip(proxies, masks)):
        ratio = ratios[k][ids]  # [N]
        inside = (ratio > -np.inf) if proxy.kind == "script" else token_marks(mask, starts) & (ratio > -np.inf)
        out[:, k] = np.maximum(best_suffix_sums(np.where(inside, ratio, 0.0), inside), OUTSIDE)
        out[~inside, k] = OUTSIDE
    return out


def best_suffix_sums(values: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Return, for each position i of a run of `inside` positions, max over j <= i in the run of sum values[j..i]
    [N] float64 (-inf outside runs): the running sum minus its smallest earlier value within the run (or 0)."""
    n = len(values)
    if n == 0:
        return np.zeros(0)
    values = np.where(inside, values, 0.0)
    starts_run = inside.copy()
    starts_run[1:] &= ~inside[:-1]
    run = np.cumsum(starts_run | ~inside)  # [N] a new id at each run's start and at each position outside
    first = np.ones(n, dtype=bool)
    first[1:] = run[1:] != run[:-1]
    at = np.arange(n)
    start = np.maximum.accumulate(np.where(first, at, 0))  # [N] where each position's run starts
    total = np.cumsum(values)
    local = total - total[start] + values[start]  # [N] the run's sum up to and including i
    span = float(np.abs(local).max(initial=0.0)) * 2 + 1.0
    shifted = local - run * span  # later runs lie below every earlier one, so a running min never crosses runs
    running = np.minimum.accumulate(shifted)
    earlier = np.where(first, np.inf, np.concatenate([[np.inf], running[:-1]]) + run * span)
    best = local - np.minimum(earlier, 0.0)
    return np.where(inside, best, -np.inf)


def buckets(scores: np.ndarray) -> np.ndarray:
    """Return the stacked plots' bucket of each score (BUCKETS) as uint8, same shape."""
    out = np.where(scores <= OUTSIDE, 0, np.where(scores <= BUCKET_EDGES[0], 1, np.where(scores <= BUCKET_EDGES[1], 2,
                                                                                          3)))
    return out.astype(np.uint8)
