"""The byte strings example windows are made of (app/present/window_batch.py assembles them): constants, the colours
and numbers a coloured span shows, and per vocabulary entry its JSON, visible forms and escaped spans, made once per
vocabulary (`Vocabulary`) so that rendering a window is gathering table entries.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
from pydantic_core import to_json

from app.present.windows import escape_token, silent_span
from app.read.windows import visible_text

SETS_FALSE, SETS_TRUE, KEEPS_STATE = 0, 1, 2  # what a token does to "at line start" (app.read.windows.visible_text)


def objects(items: list) -> np.ndarray:
    """A 1-D object array of the items (np.array would make a 2-D one of equal-length sequences)."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def listed(items: list[bytes]) -> list[bytes]:
    """Each item comma-led (at 2 i: a list's later item), then bare (at 2 i + 1: its first)."""
    return [piece for item in items for piece in (b"," + item, item)]


def _hundredths(template: str) -> list[bytes]:
    """template formatted with each of 0.00, 0.01, ..., 1.00 (`.2f` of a colour in [0, 1])."""
    return [template.format(r / 100).encode() for r in range(101)]


CONSTANTS = (b"", b",0.0", b"0.0", b",null", b"null", b'],"texts":[', b'],"shown":[', b'],"acts":[',
              b'],"effects":[', b"]}", b'],"effects":null}', b"</div>", b'<span class="tok"',
              b'<span class="tok max"', b' title="', b' title="-', " · Δ log p(next) +".encode(),
              " · Δ log p(next) -".encode(), b"0")
(EMPTY, ZERO, ZERO_FIRST, NULL, NULL_FIRST, TEXTS, SHOWN, ACTS, EFFECTS, END, NO_EFFECTS,
 DIV_END, OPEN, OPEN_MAX, TITLE, TITLE_MINUS, EFFECT_PLUS, EFFECT_MINUS, ZERO_DIGIT) = range(len(CONSTANTS))


def _significant(p: int) -> list[bytes]:
    """`.{p}g` of every m * 10 ** (e - p + 1), m of p digits, e in [-4, p): the magnitudes `.{p}g` writes without an
    exponent, at (e + 4) * 9 * 10 ** (p - 1) + m - 10 ** (p - 1)."""
    out = []
    for e in range(-4, p):
        for m in range(10 ** (p - 1), 10 ** p):
            digits = str(m)
            whole, fraction = (digits[:e + 1], digits[e + 1:]) if e >= 0 else ("0", "0" * (-e - 1) + digits)
            fraction = fraction.rstrip("0")
            out.append((whole + ("." + fraction if fraction else "")).encode())
    return out


COLOURS = {"act": _hundredths(' style="--a:{:.2f}"'),  # app.present.windows.token_span's style attribute
            "act_effect": _hundredths(' style="--a:{:.2f}'),
            "effect": [piece for r in range(101) for piece in (f';--e:{r / 100:.2f}" data-e="+"'.encode(),
                                                               f';--e:{r / 100:.2f}" data-e="-"'.encode())]}


class Vocabulary:
    """A table of the byte strings windows are made of: constants, colours, then per token id (and one more entry,
    V: an id outside the vocabulary, shown as "") its JSON (comma-led and bare), and per "at line start" state its
    visible form as JSON, as a silent span and as a coloured span's text and close, the digits of every `.4g` and
    `.3g` number written without an exponent, and its id; what each token does to that state. ~130k pieces, ~50 ms
    to build, once per vocabulary and process."""

    def __init__(self, strings: Sequence[str]):
        texts = [*strings, ""]
        self.size = n = len(strings)
        forms = [[visible_text(t, state) for t in texts] for state in (False, True)]
        after = np.array([[f[1] for f in forms[state]] for state in (0, 1)])  # [2, V + 1]
        self.code = np.where(after[0] == after[1], after[0].astype(np.int8), KEEPS_STATE).astype(np.int8)
        tables = {**COLOURS, "text": listed([to_json(t) for t in texts]),
                  "shown": listed([to_json(f[0]) for f in forms[0]]) + listed([to_json(f[0]) for f in forms[1]]),
                  "silent": [silent_span(f[0]).encode() for s in (0, 1) for f in forms[s]],
                  "closed": [('">' + escape_token(f[0]) + "</span>").encode() for s in (0, 1) for f in forms[s]],
                  "g4": _significant(4), "g3": _significant(3),
                  "id": listed([str(i).encode() for i in range(n + 1)])}
        self.escaped = [escape_token(f[0]) for s in (0, 1) for f in forms[s]]  # [2 (V + 1)], as "closed"
        self.offset, pieces = {}, list(CONSTANTS)
        for name, table in tables.items():
            self.offset[name] = len(pieces)
            pieces += table
        self.ids = n + 1  # ids the "id" table reaches
        self.pieces = objects(pieces)

    def reaching(self, largest: int) -> Vocabulary:
        """This vocabulary, or a copy whose id table reaches `largest` (a window holding ids outside the vocabulary;
        a copy, as pages render in threads)."""
        if largest < self.ids:
            return self
        wider = copy.copy(self)
        wider.offset = {**self.offset, "id": len(self.pieces)}
        wider.pieces = np.concatenate([self.pieces, objects(listed([str(i).encode() for i in range(largest + 1)]))])
        wider.ids = largest + 1
        return wider
