"""Schemas of the pages across bases and runs: best matches (universality, splitting) and the feature map."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.read.schemas import Schema


class MatchDistribution(Schema):
    """One basis against another (`monoscope match`): each unit's best activation correlation in the other basis."""

    model: str
    basis: str
    kind: Literal["neuron", "sae"]
    other_model: str
    other_basis: str
    n_units: int = Field(description="Units of `basis` with a best match (units that never varied have none).")
    median: float
    edges: list[float] = Field(description="Histogram bin edges over the correlation, -1 to 1.")
    counts: list[int]
    split_counts: list[int] | None = Field(None, description="A larger dictionary against a smaller one of the same "
                                           "LM: how many of the smaller one's features split into 0, 1, 2, ... "
                                           "(last: that many or more) of the larger one's, at correlation >= 0.4.")
    url: str
    other_url: str


class Matches(Schema):
    """Every pair of bases joined by best-match links: universality (one basis in two LMs) and splitting (two
    dictionaries of one LM)."""

    pairs: list[MatchDistribution]


class MapPoint(Schema):
    """One feature on the map: where it sits, its dictionary, density, label and top tokens."""

    basis: str
    index: int
    x: float
    y: float
    log10_density: float | None
    label: str | None
    top_tokens: list[str]
    url: str


class FeatureMap(Schema):
    """The feature map of one model: a 2-D UMAP of its dictionaries' decoder directions (`monoscope map`)."""

    model: str | None
    bases: list[str]
    points: list[MapPoint]
