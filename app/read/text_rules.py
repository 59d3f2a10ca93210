"""Text fields of the API as the server takes them, stated in its OpenAPI schema too, so a client generated from
/openapi.json sends nothing the server refuses (the schemathesis contract test checks this).

`Text(n)` is 1..n characters, not blank (something besides whitespace: the server trims) and without NUL
(PostgreSQL text cannot hold one). The schema states it with a pattern, the server checks it in Python with a
message naming the rule. Regex dialects disagree on `\\s` (ECMA's includes U+FEFF, Python's U+001C-U+001F, Rust's
neither), so the patterns spell out the characters `str.strip()` removes, which every dialect reads alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, StringConstraints


def _class_of(codes: list[int]) -> str:
    """The characters `codes` (ascending) as the inside of a regex class, in runs: `\\u0009-\\u000d...`."""
    runs: list[list[int]] = []
    for c in codes:
        if runs and runs[-1][1] == c - 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in runs)


# What str.strip() removes; Unicode has no whitespace beyond the Basic Multilingual Plane.
WHITESPACE = _class_of([c for c in range(0x10000) if chr(c).isspace()])
NOT_BLANK_NO_NUL = rf"^[^\x00]*[^\x00{WHITESPACE}][^\x00]*$"
NO_NUL = r"^[^\x00]*$"
BLANK = rf"[{WHITESPACE}]*"


@dataclass(frozen=True)
class SchemaPattern:
    """Put `pattern` in a field's JSON Schema without pydantic checking it (a validator here does, in Python)."""

    pattern: str

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict:
        schema = handler(core_schema)
        schema["pattern"] = self.pattern
        return schema


def _checked(blank_ok: bool):
    def check(value: str) -> str:
        if "\x00" in value:
            raise ValueError("cannot contain NUL characters")
        if not blank_ok and not value.strip():
            raise ValueError("cannot be blank (only whitespace)")
        return value

    return check


def Text(max_length: int, *, blank_ok: bool = False):  # noqa: N802 (used as a type)
    """A text of at most `max_length` characters without NUL; unless `blank_ok`, not blank. Usable in a model
    field (add `Field(...)` for a default or description) and in a query parameter (add `Query(...)`)."""
    return Annotated[str, StringConstraints(min_length=0 if blank_ok else 1, max_length=max_length),
                     SchemaPattern(NO_NUL if blank_ok else NOT_BLANK_NO_NUL), AfterValidator(_checked(blank_ok))]


def Matching(pattern: str, meaning: str):  # noqa: N802 (used as a type)
    """A text matching `pattern` as a whole (JSON Schema's `$` is the end of the text: fullmatch here), else a 422
    saying `meaning`."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if compiled.fullmatch(value) is None:
            raise ValueError(meaning)
        return value

    return Annotated[str, SchemaPattern(pattern), AfterValidator(check)]
