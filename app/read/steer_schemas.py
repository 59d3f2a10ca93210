"""The view models of pinned sampling (/steer, GET and POST /api/v1/steer): the request's bounds and the result."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field

from app.read.schemas import Schema
from app.read.text_rules import Text

MAX_STEER_PROMPT_CHARS = 2000
MAX_STEER_TOKENS = 128  # also bounded by the model's context: prompt + new tokens <= n_ctx
MAX_PINS = 8
MAX_PIN_VALUE = 1e4
MAX_TEMPERATURE = 5.0
# `basis:index` or `basis:index=value`, the value within +-MAX_PIN_VALUE
PIN_PATTERN = r"^[^\x00]+:[0-9]{1,9}(=-?[0-9]{1,4}(\.[0-9]{1,6})?)?$"


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


class PinIn(Schema):
    """One pin: a unit and the value it is forced to (default: the unit's max observed activation)."""

    basis: Annotated[Text(200), Field(description="`neurons` or an SAE basis")]
    index: Annotated[int, Field(ge=0, le=2**31 - 1)]
    value: Annotated[float | None, Field(ge=-MAX_PIN_VALUE, le=MAX_PIN_VALUE,
                                         description="Default: the unit's max observed activation"),
                     AfterValidator(_finite)] = None


class SteerRequest(Schema):
    """A prompt (empty: the neutral prefix, BOS alone), pins, and how to sample."""

    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [
        {"prompt": "def f(x):", "pins": [{"basis": "neurons", "index": 0, "value": 2.5}], "max_tokens": 8}]})

    prompt: Annotated[Text(MAX_STEER_PROMPT_CHARS, blank_ok=True), Field(description="Empty: BOS alone")] = ""
    pins: Annotated[list[PinIn], Field(min_length=1, max_length=MAX_PINS)]
    mode: Literal["pin", "add"] = "pin"
    max_tokens: Annotated[int, Field(ge=1, le=MAX_STEER_TOKENS)] = 32
    temperature: Annotated[float, Field(ge=0, le=MAX_TEMPERATURE, description="0: greedy")] = 1.0
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    model: Annotated[str | None, Field(max_length=200)] = None


class PinOut(Schema):
    basis: str
    index: int
    value: float
    max_activation: float
    label: str | None
    url: str


class SteerToken(Schema):
    """One sampled token and its probability (at temperature 1) under the steered and the unsteered model, given the
    continuation's own prefix; `changed`: the other continuation has another token at this step."""

    id: int
    text: str
    shown: str
    p_steered: float
    p_unsteered: float
    changed: bool


class SteerResult(Schema):
    model: str
    prompt: str
    prompt_tokens: int
    mode: Literal["pin", "add"]
    temperature: float
    seed: int
    pins: list[PinOut]
    steered: list[SteerToken]
    unsteered: list[SteerToken]
    steered_text: str
    unsteered_text: str
    changed: int


def parse_pin(text: str) -> PinIn:
    """Return the pin written `basis:index` or `basis:index=value` (PIN_PATTERN); a ValueError names the rule. The
    basis is looked up as written (an unknown one is a 404, not a malformed pin)."""
    head, _, value = text.rpartition("=") if "=" in text.rpartition(":")[2] else (text, "", "")
    basis, _, index = head.rpartition(":")
    if not basis or not (index.isascii() and index.isdigit() and len(index) < 10):
        raise ValueError(f"a pin is `basis:index` or `basis:index=value`, got {text!r}")
    try:
        number = float(value) if value else None
    except ValueError:
        raise ValueError(f"a pin's value is a number, got {value!r}") from None
    if "\x00" in basis or len(basis) > 300 or (number is not None and not abs(number) <= MAX_PIN_VALUE):
        raise ValueError(f"a pin is `basis:index` or `basis:index=value` with |value| <= {MAX_PIN_VALUE:g}, "
                         f"got {text[:40]!r}")
    return PinIn.model_construct(basis=basis, index=int(index), value=number)


class SteerQuery(Schema):
    """The GET form of a request (the /steer page and its twin): pins as `basis:index[=value]` strings."""

    prompt: Annotated[Text(MAX_STEER_PROMPT_CHARS, blank_ok=True), Field(description="Empty: BOS alone")] = ""
    pin: Annotated[list[Annotated[str, Field(max_length=300, pattern=PIN_PATTERN)]],
                   Field(max_length=MAX_PINS, description="`basis:index` or `basis:index=value`, repeated (the "
                                                          "page shows its form without one)")] = []
    mode: Literal["pin", "add"] = "pin"
    max_tokens: Annotated[int, Field(ge=1, le=MAX_STEER_TOKENS)] = 32
    temperature: Annotated[float, Field(ge=0, le=MAX_TEMPERATURE, description="0: greedy")] = 1.0
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    model: Annotated[str | None, Field(max_length=200)] = None

    def request(self) -> SteerRequest:
        """Return the request these parameters spell (a ValueError for a malformed pin)."""
        return SteerRequest(prompt=self.prompt, pins=[parse_pin(p) for p in self.pin], mode=self.mode,
                            max_tokens=self.max_tokens, temperature=self.temperature, seed=self.seed, model=self.model)


class SteerApiQuery(SteerQuery):
    """The twin's GET parameters: at least one pin."""

    pin: Annotated[list[Annotated[str, Field(max_length=300, pattern=PIN_PATTERN)]],
                   Field(min_length=1, max_length=MAX_PINS, examples=[["neurons:0=2.5"]],
                         description="`basis:index` or `basis:index=value`, repeated")]


STEER_LIMITS = {"prompt_chars": MAX_STEER_PROMPT_CHARS, "max_tokens": MAX_STEER_TOKENS, "pins": MAX_PINS,
                "temperature": MAX_TEMPERATURE}
