"""The open example windows of many units at once, as the JSON of their UnitData's `Example`s and as page HTML: the
bytes `UnitData.model_dump_json()` and `window_html` give, one window at a time, made in one numpy pass over a chunk
of units (ingest: ~2,500 tokens a unit, ~42M for 16,384 features). What depends on the token string alone (its JSON,
its visible whitespace, its escaped silent span) is made once per vocabulary entry; only the tokens where a unit
fires go through app.present.windows.token_span one by one. Numbers are written by pydantic-core itself, as the
schema's serializer writes them. tests/app/test_window_batch.py holds it to the one-window definitions, byte for byte.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np
from pydantic_core import to_json

from app.present.windows import escape_token, scale_inverses, silent_span, token_span, window_head
from app.read.windows import visible_text

_FALSE, _TRUE, _KEEP = 0, 1, 2  # what a token does to "at line start" (app.read.windows.visible_text)


def _objects(items: list) -> np.ndarray:
    """A 1-D object array of the items (np.array would make a 2-D one of equal-length sequences)."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _listed(items: list[bytes]) -> list[bytes]:
    """Each item comma-led (at 2 i: a list's later item), then bare (at 2 i + 1: its first)."""
    return [piece for item in items for piece in (b"," + item, item)]


_CONSTANTS = (b"", b",0.0", b"0.0", b",null", b"null", b'],"texts":[', b'],"shown":[', b'],"acts":[',
              b'],"effects":[', b"]}", b'],"effects":null}', b"</div>")
(_EMPTY, _ZERO, _ZERO_FIRST, _NULL, _NULL_FIRST, _TEXTS, _SHOWN, _ACTS, _EFFECTS, _END, _NO_EFFECTS,
 _DIV_END) = range(len(_CONSTANTS))


class Vocabulary:
    """A table of the byte strings windows are made of: constants, then per token id (and one more entry, V: an id
    outside the vocabulary, shown as "") its JSON (comma-led and bare), and per "at line start" state its visible
    form as JSON and as a silent span, and its id; what each token does to that state."""

    def __init__(self, strings: Sequence[str]):
        texts = [*strings, ""]
        self.size = n = len(strings)
        forms = [[visible_text(t, state) for t in texts] for state in (False, True)]
        after = np.array([[f[1] for f in forms[state]] for state in (0, 1)])  # [2, V + 1]
        self.code = np.where(after[0] == after[1], after[0].astype(np.int8), _KEEP).astype(np.int8)
        self.escaped = [[escape_token(f[0]) for f in forms[s]] for s in (0, 1)]
        tables = {"text": _listed([to_json(t) for t in texts]),
                  "shown": _listed([to_json(f[0]) for f in forms[0]]) + _listed([to_json(f[0]) for f in forms[1]]),
                  "silent": [silent_span(f[0]).encode() for s in (0, 1) for f in forms[s]],
                  "id": _listed([str(i).encode() for i in range(n + 1)])}
        self.offset, pieces = {}, list(_CONSTANTS)
        for name, table in tables.items():
            self.offset[name] = len(pieces)
            pieces += table
        self.ids = n + 1  # ids the "id" table reaches
        self.pieces = pieces

    def reaching(self, largest: int) -> Vocabulary:
        """This vocabulary, its id table reaching at least `largest` (a window holding ids outside the vocabulary)."""
        if largest >= self.ids:
            self.offset["id"] = len(self.pieces)
            self.pieces = self.pieces + _listed([str(i).encode() for i in range(largest + 1)])
            self.ids = largest + 1
        return self


@lru_cache(maxsize=2)
def vocabulary(strings: tuple[str, ...]) -> Vocabulary:
    return Vocabulary(strings)


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

    def listed_floats(self, values: np.ndarray, keep: np.ndarray, first: np.ndarray, zero: int,
                      zero_first: int) -> np.ndarray:
        """[m, W] indexes of the JSON list items of float32 values (+0.0 from the constants; padding empty)."""
        plus_zero = (values == 0) & ~np.signbit(values)
        index = np.where(keep, np.where(first, zero_first, zero), _EMPTY)
        other = keep & ~plus_zero
        bare = _floats(values[other])
        at = self.add(bare + [b"," + v for v in bare])
        index[other] = at + np.arange(len(bare)) + np.where(first[other], 0, len(bare))
        return index

    def take(self, index: np.ndarray) -> np.ndarray:
        return _objects(self.static + self.extra)[index]


def _state_before(code: np.ndarray) -> np.ndarray:
    """[m, W] whether each token starts at a line start: the last token before it that sets the state, else False."""
    m, w = code.shape
    where = np.where(code != _KEEP, np.arange(w), -1)
    last = np.maximum.accumulate(where, axis=1)
    after = np.where(last >= 0, np.take_along_axis(code, np.maximum(last, 0), axis=1), _FALSE) == _TRUE
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


def render(ids: np.ndarray, acts: np.ndarray, effects: np.ndarray | None, values: np.ndarray, units: np.ndarray,
           groups: np.ndarray, scales: Mapping[int, tuple[float, float | None]], vocab: Vocabulary,
           before: int) -> dict[tuple[int, int], tuple[bytes, bytes]]:
    """Return {(unit, group): (JSON, HTML)} of windows ids/acts/effects [m, W] with values [m], in page order, each
    window's unit and group (0: top, 1 + interval bucket) [m]; `scales[unit]` = (max activation, max |effect| or
    None). JSON: the windows' `Example` objects, comma-joined; HTML: their window_html, joined (UTF-8)."""
    m, w = ids.shape
    vocab = vocab.reaching(int(ids.max(initial=0)))
    table = _Table(vocab)
    keep = ids >= 0
    first = keep & (np.cumsum(keep, axis=1) == 1)
    index = np.where(keep, np.minimum(ids, vocab.size), vocab.size)  # [m, W] the token's entry
    state = _state_before(np.where(keep, vocab.code[index], _KEEP))
    position, is_max = _max_slots(keep, acts, before)
    bare, n = first.astype(np.int64), vocab.size + 1
    listed = lambda name, i: np.where(keep, vocab.offset[name] + 2 * i + bare, _EMPTY)  # noqa: E731
    new_group = np.ones(m, bool)
    new_group[1:] = (units[1:] != units[:-1]) | (groups[1:] != groups[:-1])
    heads = table.add([(b"{" if g else b",{") + b'"value":' + v + b',"max_position":' + str(p).encode()
                       + b',"token_ids":[' for g, v, p in zip(new_group.tolist(), _floats(values), position.tolist())])
    column = lambda i: np.full((m, 1), i)  # noqa: E731
    if effects is None:
        effect_columns = [column(_NO_EFFECTS)]
    else:
        nan = np.isnan(effects)
        effect_index = table.listed_floats(np.where(nan, 0, effects), keep, first, _ZERO, _ZERO_FIRST)
        effect_index[keep & nan] = np.where(first[keep & nan], _NULL_FIRST, _NULL)
        effect_columns = [column(_EFFECTS), effect_index, column(_END)]
    json_index = np.concatenate([
        (heads + np.arange(m))[:, None], listed("id", np.maximum(ids, 0)), column(_TEXTS), listed("text", index),
        column(_SHOWN), listed("shown", index + n * state), column(_ACTS),
        table.listed_floats(acts, keep, first, _ZERO, _ZERO_FIRST), *effect_columns], axis=1)
    html_index = _html(table, acts, effects, values, units, keep, index, state, is_max, scales, vocab)
    pieces = table.take(np.concatenate([json_index, html_index], axis=1))
    cut = json_index.shape[1]
    starts = np.flatnonzero(new_group).tolist() + [m]
    return {(int(units[s]), int(groups[s])): (b"".join(pieces[s:e, :cut].ravel().tolist()),
                                              b"".join(pieces[s:e, cut:].ravel().tolist()))
            for s, e in zip(starts, starts[1:])}


def _html(table: _Table, acts, effects, values, units, keep, index, state, is_max, scales,
          vocab: Vocabulary) -> np.ndarray:
    """[m, W + 2] indexes of the windows' HTML pieces (app.present.windows.window_html's)."""
    m, w = acts.shape
    per_unit = [scales[u] for u in units.tolist()]
    shows_effects = np.array([bool(e) for _, e in per_unit]) if effects is not None else np.zeros(m, bool)
    effect = np.where(shows_effects[:, None] & ~np.isnan(effects), effects, 0) if effects is not None else None
    silent = (acts == 0) & ~np.signbit(acts) & ~is_max
    if effect is not None:
        silent &= effect == 0
    spans = np.where(keep, vocab.offset["silent"] + (vocab.size + 1) * state + index, _EMPTY)
    rows, cols = np.nonzero(keep & ~silent)
    by_unit = {u: scale_inverses(*scale) for u, scale in scales.items()}
    inverses = [by_unit[u] for u in units.tolist()]
    escaped = _objects(vocab.escaped[0] + vocab.escaped[1])[index[rows, cols] + (vocab.size + 1) * state[rows, cols]]
    loud_effects = effect[rows, cols].tolist() if effect is not None else [0.0] * len(rows)
    loud = [token_span(text, act, e or None, top, *inverses[r]).encode()
            for text, act, e, top, r in zip(escaped.tolist(), acts[rows, cols].tolist(), loud_effects,
                                            is_max[rows, cols].tolist(), rows.tolist())]
    spans[rows, cols] = table.add(loud) + np.arange(len(loud))
    heads = table.add([window_head(v).encode() for v in values.tolist()])
    return np.concatenate([(heads + np.arange(m))[:, None], spans, np.full((m, 1), _DIV_END)], axis=1)

