"""Example windows as the JSON of their UnitData's `Example`s and as page HTML: the bytes
`UnitData.model_dump_json()` and `window_html` give one window at a time, made with numpy for all the windows of a
unit (a page's first render: ~75 windows, ~2,500 tokens) or of many. What depends on the token string alone (its
JSON, its visible whitespace, its escaped spans) is made once per vocabulary entry, and the numbers a coloured span
shows are table entries or one format call each (app/present/window_pieces.py); every piece is then gathered by one
index array and joined.
tests/app/test_window_batch.py holds it to the one-window definitions, byte for byte.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import numpy as np
from pydantic_core import to_json

from app.present.window_pieces import (
    ACTS,
    DIV_END,
    EFFECTS,
    EFFECT_MINUS,
    EFFECT_PLUS,
    EMPTY,
    END,
    KEEPS_STATE,
    NO_EFFECTS,
    NULL,
    NULL_FIRST,
    OPEN,
    OPEN_MAX,
    SETS_FALSE,
    SETS_TRUE,
    SHOWN,
    TEXTS,
    TITLE,
    TITLE_MINUS,
    Vocabulary,
    ZERO,
    ZERO_DIGIT,
    ZERO_FIRST,
    objects,
)
from app.present.windows import scale_inverses, token_span, window_head
from app.read.windows import Batch

def _floats(values: np.ndarray) -> list[bytes]:
    """pydantic-core's JSON of each value (as a Python float; NaN as null)."""
    if not values.size:
        return []
    return to_json(values.tolist(), inf_nan_mode="null")[1:-1].split(b",")


class _Table:
    """The vocabulary's pieces and a call's own (numbers, heads, spans), addressed by one index."""

    def __init__(self, vocab: Vocabulary):
        self.static, self.extra = vocab.pieces, []

    def add(self, pieces: list[bytes]) -> int:
        """Append pieces; return the index of the first."""
        at = len(self.static) + len(self.extra)
        self.extra += pieces
        return at

    def listed_floats(self, values: np.ndarray, keep: np.ndarray, first: np.ndarray) -> np.ndarray:
        """[m, W] indexes of the JSON list items of float32 values (+0.0 from the constants; padding empty)."""
        plus_zero = (values == 0) & ~np.signbit(values)
        index = np.where(keep, np.where(first, ZERO_FIRST, ZERO), EMPTY)
        other = keep & ~plus_zero
        bare = _floats(values[other])
        at = self.add(bare + [b"," + v for v in bare])
        index[other] = at + np.arange(len(bare)) + np.where(first[other], 0, len(bare))
        return index

    def join(self, index: np.ndarray, starts: list[int]) -> list[bytes]:
        """Join the pieces of rows index[starts[i]:starts[i + 1]] for each i."""
        n = len(self.static)
        pieces = self.static.take(index, mode="clip")
        own = index >= n
        pieces[own] = objects(self.extra)[index[own] - n]
        return [b"".join(pieces[s:e].ravel().tolist()) for s, e in zip(starts, starts[1:])]


class _Layout(NamedTuple):
    """What both renderings need: kept tokens, each one's vocabulary entry and line-start state, the max token."""

    keep: np.ndarray
    first: np.ndarray  # [m, W] the first kept token of its window
    index: np.ndarray  # [m, W] the token's entry (V: outside the vocabulary or padding)
    state: np.ndarray  # [m, W] bool: starts at a line start
    position: np.ndarray  # [m] the max token's position among the kept tokens
    is_max: np.ndarray  # [m, W]
    starts: list[int]  # where each (unit, group) begins, and m
    keys: list[tuple[int, int]]  # each one's (unit, group)


def _layout(b: Batch, vocab: Vocabulary, before: int) -> _Layout:
    keep = b.ids >= 0
    first = keep & (np.cumsum(keep, axis=1) == 1)
    index = np.where(keep, np.minimum(b.ids, vocab.size), vocab.size)
    state = _state_before(np.where(keep, vocab.code[index], KEEPS_STATE))
    position, is_max = _max_slots(keep, b.acts, before)
    new_group = np.ones(len(b.ids), bool)
    new_group[1:] = (b.units[1:] != b.units[:-1]) | (b.groups[1:] != b.groups[:-1])
    starts = np.flatnonzero(new_group).tolist()
    keys = list(zip(b.units[starts].tolist(), b.groups[starts].tolist()))
    return _Layout(keep, first, index, state, position, is_max, starts + [len(b.ids)], keys)


def _state_before(code: np.ndarray) -> np.ndarray:
    """[m, W] whether each token starts at a line start: the last token before it that sets the state, else False."""
    m, w = code.shape
    where = np.where(code != KEEPS_STATE, np.arange(w), -1)
    last = np.maximum.accumulate(where, axis=1)
    after = np.where(last >= 0, np.take_along_axis(code, np.maximum(last, 0), axis=1), SETS_FALSE) == SETS_TRUE
    return np.concatenate([np.zeros((m, 1), bool), after[:, :-1]], axis=1)


def _max_slots(keep: np.ndarray, acts: np.ndarray, before: int) -> tuple[np.ndarray, np.ndarray]:
    """Return each window's max token (position among its kept tokens; one-hot [m, W] over slots), as
    app.read.windows.decode_window places it: at `before` less the padding before it, else at the largest
    activation."""
    m, w = keep.shape
    kept = keep.sum(1)
    position = before - (~keep[:, :before]).sum(1)
    rank = np.cumsum(keep, axis=1) - 1  # [m, W] a kept slot's position among the kept ones
    fallback = rank[np.arange(m), np.where(keep, acts, -np.inf).argmax(1)] if w else np.zeros(m, int)
    position = np.where(position < kept, position, np.where(kept > 0, fallback, 0))
    one_hot = keep & (rank == position[:, None]) & (kept > 0)[:, None]
    return position, one_hot


def windows_json(b: Batch, vocab: Vocabulary, before: int) -> dict[tuple[int, int], bytes]:
    """Return {(unit, group): its windows' `Example` objects as JSON, comma-joined}."""
    m, w = b.ids.shape
    vocab = vocab.reaching(int(b.ids.max(initial=0)))
    lay, table = _layout(b, vocab, before), _Table(vocab)
    keep, n = lay.keep, vocab.size + 1
    bare = lay.first.astype(np.int64)
    listed = lambda name, i: np.where(keep, vocab.offset[name] + 2 * i + bare, EMPTY)  # noqa: E731
    opens = np.zeros(m, bool)
    opens[lay.starts[:-1]] = True
    heads = table.add([(b"{" if g else b",{") + b'"value":' + v + b',"max_position":' + str(p).encode()
                       + b',"token_ids":['
                       for g, v, p in zip(opens.tolist(), _floats(b.values), lay.position.tolist())])
    column = lambda i: np.full((m, 1), i)  # noqa: E731
    if b.effects is None:
        effect_columns = [column(NO_EFFECTS)]
    else:
        nan = np.isnan(b.effects)
        effect_index = table.listed_floats(np.where(nan, 0, b.effects), keep, lay.first)
        effect_index[keep & nan] = np.where(lay.first[keep & nan], NULL_FIRST, NULL)
        effect_columns = [column(EFFECTS), effect_index, column(END)]
    index = np.concatenate([
        (heads + np.arange(m))[:, None], listed("id", np.maximum(b.ids, 0)), column(TEXTS), listed("text", lay.index),
        column(SHOWN), listed("shown", lay.index + n * lay.state), column(ACTS),
        table.listed_floats(b.acts, keep, lay.first), *effect_columns], axis=1)
    return dict(zip(lay.keys, table.join(index, lay.starts)))


def windows_html(b: Batch, scales: Mapping[int, tuple[float, float | None]], vocab: Vocabulary,
                 before: int) -> dict[tuple[int, int], bytes]:
    """Return {(unit, group): its windows' window_html, joined (UTF-8)}; `scales[unit]` = (max activation, max |effect|
    or None)."""
    m, w = b.ids.shape
    vocab = vocab.reaching(int(b.ids.max(initial=0)))
    lay, table = _layout(b, vocab, before), _Table(vocab)
    acts, keep, n = b.acts, lay.keep, vocab.size + 1
    inverses = np.array([scale_inverses(*scales[u]) for u in b.units.tolist()], dtype=np.float64).reshape(m, 2)
    shows = inverses[:, 1] > 0 if b.effects is not None else np.zeros(m, bool)
    effect = np.where(shows[:, None] & ~np.isnan(b.effects), b.effects, 0) if b.effects is not None else None
    silent = (acts == 0) & ~np.signbit(acts) & ~lay.is_max
    if effect is not None:
        silent &= effect == 0
    entry = lay.index + n * lay.state
    rows, cols = np.nonzero(keep & ~silent)
    spans = _coloured(table, vocab, acts[rows, cols], effect[rows, cols] if effect is not None else None,
                      lay.is_max[rows, cols], entry[rows, cols], inverses[rows])
    heads = table.add([window_head(v).encode() for v in b.values.tolist()])
    # One piece per window head, silent token (or padding) and window end; a coloured token's SPAN_PIECES after it.
    cells = np.concatenate([(heads + np.arange(m))[:, None], np.where(keep, vocab.offset["silent"] + entry, EMPTY),
                            np.full((m, 1), DIV_END)], axis=1).ravel()
    coloured = rows * (w + 2) + cols + 1
    counts = np.ones(len(cells), np.int64)
    counts[coloured] = SPAN_PIECES
    starts = np.cumsum(counts) - counts
    index = np.empty(int(counts.sum()), np.int64)
    index[starts] = cells
    index[starts[coloured][:, None] + np.arange(SPAN_PIECES)] = spans
    return dict(zip(lay.keys, table.join(index, starts[np.array(lay.starts[:-1], np.int64) * (w + 2)].tolist()
                                         + [len(index)])))


SPAN_PIECES = 8  # a coloured span: open, --a, --e, title, its digits, the effect's sign, its digits, text and close


def _coloured(table: _Table, vocab: Vocabulary, act: np.ndarray, effect: np.ndarray | None, is_max: np.ndarray,
              entry: np.ndarray, inverses: np.ndarray) -> np.ndarray:
    """Return [L, SPAN_PIECES] indexes of the pieces of app.present.windows.token_span for L tokens that are not
    silent: colours and numbers from the vocabulary's tables where they are exact (`.2f` of a colour farther than
    1e-9 from a rounding tie; `.4g` and `+.3g` of float32 numbers from 1e-4 to below 1e4, exact in float64); any other
    token's whole span from token_span itself, in its first piece."""
    act64 = act.astype(np.float64)
    e = effect.astype(np.float64) if effect is not None else np.zeros_like(act64)
    has_effect = e != 0
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        a = np.minimum(np.where(has_effect, np.maximum(act64, 0.0), act64) * inverses[:, 0], 1.0)
        e_colour = np.minimum(np.abs(e) * inverses[:, 1], 1.0)
        negative_zero = (act64 == 0) & np.signbit(act64)  # max(-0.0, 0.0) is -0.0 in Python: "-0.00"
        exact = np.where(has_effect, _unambiguous(a) & _unambiguous(e_colour) & ~negative_zero,
                         ~(act64 > 0) | _unambiguous(a))  # no --a where act <= 0: the title alone
        act_digits, act_fixed = _digits(act64, 4, vocab.offset["g4"])
        effect_digits, effect_fixed = _digits(e, 3, vocab.offset["g3"])
    exact &= (act_fixed | (act64 == 0)) & (effect_fixed | ~has_effect)
    r_a = np.rint(np.where(exact, a, 0) * 100).astype(np.int64)
    r_e = np.rint(np.where(exact, e_colour, 0) * 100).astype(np.int64)
    spans = np.stack([
        np.where(is_max, OPEN_MAX, OPEN),
        np.where(has_effect, vocab.offset["act_effect"] + r_a, np.where(act64 > 0, vocab.offset["act"] + r_a, EMPTY)),
        np.where(has_effect, vocab.offset["effect"] + 2 * r_e + (e < 0), EMPTY),
        np.where(np.signbit(act64), TITLE_MINUS, TITLE),
        np.where(act64 == 0, ZERO_DIGIT, act_digits),
        np.where(has_effect, np.where(e < 0, EFFECT_MINUS, EFFECT_PLUS), EMPTY),
        np.where(has_effect, effect_digits, EMPTY),
        vocab.offset["closed"] + entry], axis=1)
    hard = np.flatnonzero(~exact)
    if hard.size:  # the definition itself
        effects = e.tolist() if effect is not None else None
        whole = [token_span(vocab.escaped[entry[i]], float(act[i]), effects[i] if effects else None, bool(is_max[i]),
                            *inverses[i].tolist()).encode() for i in hard.tolist()]
        spans[hard] = EMPTY
        spans[hard, 0] = table.add(whole) + np.arange(len(whole))
    return spans


_POWERS = 10.0 ** np.arange(8)  # 10 ** (p - 1 - e) for p <= 4, e >= -4: exact in float64


def _digits(x: np.ndarray, p: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the index of `.{p}g` of |x| in its table (`_significant`) and whether it is there: x a float32 value
    (in float64) of magnitude [1e-4, 10 ** p) after rounding, where x * 10 ** (p - 1 - e) is exact in float64."""
    magnitude = np.abs(x)
    e = np.floor(np.log10(np.where(magnitude > 0, magnitude, 1.0))).astype(np.int64)
    for _ in range(2):  # log10 can be one off next to a power of ten
        m = np.rint(magnitude * _POWERS[p - 1 - np.clip(e, -4, p - 1)])
        e = np.where(m >= 10 ** p, e + 1, np.where(m < 10 ** (p - 1), e - 1, e))
    m = np.rint(magnitude * _POWERS[p - 1 - np.clip(e, -4, p - 1)]).astype(np.int64)
    fixed = (e >= -4) & (e < p) & (m >= 10 ** (p - 1)) & (m < 10 ** p) & np.isfinite(x)
    return np.where(fixed, offset + (e + 4) * 9 * 10 ** (p - 1) + m - 10 ** (p - 1), EMPTY), fixed


def _unambiguous(x: np.ndarray) -> np.ndarray:
    """Whether x in [0, 1] rounds to hundredths the same whether by x * 100 in floats or exactly: x * 100 (within
    ~1e-14 of its exact value) is farther than 1e-9 from a half; positive, finite."""
    scaled = x * 100
    return (np.abs(scaled - np.floor(scaled) - 0.5) > 1e-9) & (x >= 0) & ~((x == 0) & np.signbit(x)) & np.isfinite(x)
