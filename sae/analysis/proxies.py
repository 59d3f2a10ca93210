"""The paper's specificity proxies ("Feature Proxies" appendix): what property each one marks in the text.

A proxy is computed from the text alone, never from the model. Each one says which characters of a document have
the property, in one of three ways (`kind`):
  class   a character class with a uniform model of the property's text: base64 `[A-Za-z0-9+/]` at 1/64 per
          character, digits at 1/10 (the paper's base64 proxy);
  script  a Unicode script by code-point blocks (Arabic U+0600-06FF and U+0750-077F, Hebrew, Cyrillic, CJK, ...),
          scored by Bayes' rule per token as the paper does for Arabic, so a token that is a partial UTF-8 character
          gets the share of its training occurrences that fall inside the script;
  span    spans of the document: a regular expression over the decoded text (`regex:...`), or Python's own
          `tokenize` for the code-aware ones (inside a string literal, a comment, a docstring, a decorator line, a
          number literal), with the property's text modelled by the byte distribution inside such spans in the
          training split.
`sae/analysis/proxy_scores.py` turns the marks into each token's log-likelihood ratio.
"""

from __future__ import annotations

import io
import re
import tokenize
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # numpy loads where masks are made: the analysis config imports this module, and the CLI
    import numpy as np  # reads its defaults without numpy (tests/sae/test_architectures.py)

from sae.errors import MonoscopeError

Kind = Literal["class", "script", "span"]


@dataclass(frozen=True)
class Proxy:
    """One property: its name, how it marks characters, and what it says (for the pages)."""

    name: str
    kind: Kind
    description: str
    pattern: str = ""  # class: a regex character class; span: a regex (empty for a python marker)
    class_size: int = 0  # class: how many characters the uniform model spreads over
    blocks: tuple[tuple[int, int], ...] = ()  # script: inclusive code-point ranges
    python: str = ""  # span: the tokenize marker (PYTHON_MARKERS)
    compiled: re.Pattern | None = field(default=None, compare=False, repr=False)

    @property
    def code_aware(self) -> bool:
        return bool(self.python)


def _script(name: str, description: str, *blocks: tuple[int, int]) -> Proxy:
    return Proxy(name, "script", description, blocks=blocks)


BUILTIN: tuple[Proxy, ...] = (
    Proxy("string_literal", "span", "inside a Python string literal (quotes included; tokenize)", python="string"),
    Proxy("comment", "span", "inside a Python comment (tokenize)", python="comment"),
    Proxy("docstring", "span", "inside a docstring: a string that is a statement of its own (tokenize)",
          python="docstring"),
    Proxy("decorator", "span", "on a decorator line, from `@` to the end of the line (tokenize)", python="decorator"),
    Proxy("number_literal", "span", "inside a Python number literal, hex included (tokenize)", python="number"),
    Proxy("digits", "class", "decimal digits, uniform at 1/10", pattern="[0-9]", class_size=10),
    Proxy("hex_literal", "span", "a hex literal such as 0xFF, in any text", pattern=r"\b0[xX][0-9a-fA-F_]+\b"),
    Proxy("base64", "class", "base64 characters [A-Za-z0-9+/], uniform at 1/64 (the paper's)",
          pattern="[A-Za-z0-9+/]", class_size=64),
    _script("non_ascii", "any character outside ASCII", (0x80, 0x10FFFF)),
    _script("arabic", "Arabic script (U+0600-06FF, U+0750-077F; the paper's)", (0x0600, 0x06FF), (0x0750, 0x077F)),
    _script("hebrew", "Hebrew script (U+0590-05FF)", (0x0590, 0x05FF)),
    _script("cyrillic", "Cyrillic script (U+0400-052F)", (0x0400, 0x052F)),
    _script("greek", "Greek script (U+0370-03FF)", (0x0370, 0x03FF)),
    _script("cjk", "CJK ideographs and kana (U+3040-30FF, U+3400-4DBF, U+4E00-9FFF)", (0x3040, 0x30FF),
            (0x3400, 0x4DBF), (0x4E00, 0x9FFF)),
)
BUILTIN_NAMES = tuple(p.name for p in BUILTIN)


def resolve(names: tuple[str, ...], extra: tuple[str, ...] = ()) -> list[Proxy]:
    """Return the proxies named (built-in names) plus each user proxy `regex:PATTERN`, or refuse in one line."""
    by_name = {p.name: p for p in BUILTIN}
    out = []
    for name in names:
        if name not in by_name:
            raise MonoscopeError(f"unknown proxy {name!r}: built in are {', '.join(BUILTIN_NAMES)}, or `regex:...`")
        out.append(by_name[name])
    for spec in extra:
        if not spec.startswith("regex:") or not spec[6:]:
            raise MonoscopeError(f"a user proxy is a built-in name or `regex:PATTERN`, got {spec!r}")
        try:
            re.compile(spec[6:])
        except re.error as e:
            raise MonoscopeError(f"proxy {spec!r}: not a regular expression ({e})") from None
        out.append(Proxy(spec, "span", f"characters matched by the regular expression {spec[6:]}", pattern=spec[6:],
                         compiled=re.compile(spec[6:])))
    if len({p.name for p in out}) != len(out):
        raise MonoscopeError("a proxy is named twice")
    return out


def char_masks(proxies: list[Proxy], text: str) -> list[np.ndarray]:
    """Return, per class or span proxy, which characters of `text` have the property [len(text)] bool; Python's
    tokenize runs once for all the code-aware ones."""
    import numpy as np

    python = python_spans(text) if any(p.python for p in proxies) else {}
    out = []
    for proxy in proxies:
        if proxy.python:
            spans = python[proxy.python]
        else:
            pattern = proxy.compiled or re.compile(proxy.pattern if proxy.kind == "span" else proxy.pattern + "+")
            spans = [m.span() for m in pattern.finditer(text) if m.end() > m.start()]
        mask = np.zeros(len(text) + 1, dtype=np.int32)  # a difference array: +1 at each start, -1 at each end
        for start, end in spans:
            mask[start] += 1
            mask[end] -= 1
        out.append(np.cumsum(mask[:-1]) > 0)
    return out


PYTHON_MARKERS = ("string", "comment", "docstring", "decorator", "number")
_SKIP = {tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING}
_STATEMENT_START = (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)


def python_spans(text: str) -> dict[str, list[tuple[int, int]]]:
    """Return the character spans [start, end) of every marker (PYTHON_MARKERS) in Python source, from one
    `tokenize` pass. A document that stops tokenizing (a syntax error, a file cut short) keeps the spans found
    before the error."""
    from itertools import accumulate

    lines = text.splitlines(keepends=True)
    starts = [0, *accumulate(len(line) for line in lines)]
    offset = lambda pos: starts[pos[0] - 1] + pos[1] if pos[0] - 1 < len(starts) else len(text)  # noqa: E731
    spans: dict[str, list[tuple[int, int]]] = {m: [] for m in PYTHON_MARKERS}
    kinds = {tokenize.STRING: "string", tokenize.COMMENT: "comment", tokenize.NUMBER: "number"}
    previous = tokenize.NEWLINE  # the type of the last significant token
    pending: tuple[int, int] | None = None  # a string that began a statement: a docstring if the statement ends here
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type in kinds:
                spans[kinds[tok.type]].append((offset(tok.start), offset(tok.end)))
            if tok.type == tokenize.OP and tok.string == "@" and previous in _STATEMENT_START:
                line_end = starts[tok.start[0]] if tok.start[0] < len(starts) else len(text)
                spans["decorator"].append((offset(tok.start), line_end))
            if tok.type == tokenize.STRING and previous in _STATEMENT_START:
                pending = (offset(tok.start), offset(tok.end))
            elif tok.type == tokenize.NEWLINE and pending is not None:
                spans["docstring"].append(pending)
                pending = None
            elif tok.type not in _SKIP:
                pending = None
            if tok.type not in _SKIP:
                previous = tok.type
    except (tokenize.TokenError, SyntaxError, ValueError):
        pass
    return spans
