"""View models of a basis's unit list (/bases/{basis} and its twin): the list view's state, every field a query
parameter, and its rows."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from app.read.schemas import BasisSummary, Schema


class UnitRow(Schema):
    index: int
    firing_count: int
    density: float
    log10_density: float | None
    max_activation: float
    mean_activation: float
    top_token_entropy: float | None
    top_tokens: list[str]
    label: str | None
    explanation: str | None = Field(None, description="Its current explanation by a language model, if any.")
    url: str


SortKey = Literal["index", "density", "max_activation", "label"]
Labelled = Literal["any", "yes", "no"]
Dead = Literal["any", "only", "exclude"]


class UnitListParams(Schema):
    """The state of a unit list view; every field is a query parameter, so a URL reproduces the view."""

    sort: SortKey = "index"
    desc: bool = False
    min_density: float | None = Field(None, ge=0, le=1)
    max_density: float | None = Field(None, ge=0, le=1)
    labelled: Labelled = "any"
    dead: Dead = "any"
    q: str = Field("", max_length=200,
                   description="Text in the unit's label, its explanation or one of its top tokens.")
    page: int = Field(1, ge=1, le=1_000_000)
    per_page: int = Field(50, ge=1, le=500)

    @field_validator("q")
    @classmethod
    def _no_nul(cls, value: str) -> str:  # PostgreSQL text cannot hold NUL
        return value.replace("\x00", "")


class UnitListForm(UnitListParams):
    """The unit list page's filter form: an empty number box submits "" (and only that), meaning no bound. The
    API's parameters keep to their schema (a number), so there "" is a 422."""

    @field_validator("min_density", "max_density", mode="before")
    @classmethod
    def _blank_is_none(cls, value):
        return None if value == "" else value


class UnitList(Schema):
    basis: BasisSummary
    params: UnitListParams
    total: int
    pages: int
    units: list[UnitRow]
