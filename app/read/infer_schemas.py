"""The view model of live inference (/infer and its twin): a typed text's tokens and the units active on them."""

from __future__ import annotations

from app.read.schemas import Schema
from app.read.text_rules import BLANK

MAX_INFER_CHARS = 2000
STRIP_PATTERN = rf"^(?:{BLANK}|[\s\S]*:[0-9]+)$"  # `basis:index`, or blank for the most active unit


class InferToken(Schema):
    position: int
    id: int
    text: str
    shown: str


class ActiveUnit(Schema):
    basis: str
    index: int
    activation: float
    label: str | None
    explanation: str | None = None  # its current explanation by a language model, shown when it has no label
    top_tokens: list[str] = []  # its distinct max tokens, shown when it has neither
    url: str


class InferResult(Schema):
    """Tokens of a typed text, the units most active on the selected token, and one unit's activation per token."""

    model: str
    text: str
    tokens: list[InferToken]
    position: int | None
    active_units: list[ActiveUnit]
    strip_basis: str | None
    strip_index: int | None
    strip: list[float]
    strip_max: float
