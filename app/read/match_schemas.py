"""Schemas of the pages across bases and runs: best matches (universality, splitting) and the feature map."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.read.schemas import Schema


class DensityBand(Schema):
    """The source units whose density lies in [low, high) and their median best correlation."""

    low: float
    high: float
    n: int
    median: float | None


class ControlRef(Schema):
    """The same-LM seed control of a universality pair: how far two bases of one LM that differ only in their seed
    agree, the ceiling a cross-LM figure is read against."""

    model: str = Field(description="The LM whose two dictionaries (or neurons) the control compares.")
    basis: str
    other_basis: str
    median_population: float | None
    n_population: int | None
    by_definition: bool = Field(description="True for neurons: one LM's neurons are the same whatever the seed of "
                                "a dictionary, so their control is 1.")


class MatchDistribution(Schema):
    """One basis against another (`monoscope match`): each unit's best activation correlation in the other basis."""

    model: str
    basis: str
    kind: Literal["neuron", "sae"]
    other_model: str
    other_basis: str
    relation: Literal["universality", "seed control", "splitting", "other"] = Field(
        description="What the pair measures: the same basis in two LMs, two dictionaries of one LM that differ only "
                    "in their seed, two sizes of one LM, or anything else.")
    n_units: int = Field(description="Units of `basis` with a best match (units that never varied have none).")
    median: float | None = Field(description="Median best correlation over all `n_units`.")
    n_population: int = Field(description="The paper's population: units neither dead nor ultralow (density below "
                              "1e-5).")
    median_population: float | None
    bands: list[DensityBand] = Field(description="Median best correlation by the source unit's density.")
    mutual_share: float | None = Field(description="Share of the population whose best match has it as its own best "
                                       "match.")
    control: ControlRef | None = Field(None, description="A universality pair's same-LM seed control.")
    edges: list[float] = Field(description="Histogram bin edges over the correlation, -1 to 1.")
    counts: list[int]
    split_counts: list[int] | None = Field(None, description="A larger dictionary against a smaller one of the same "
                                           "LM: how many of the smaller one's features (neither dead nor ultralow) "
                                           "have 0, 1, 2, ... (last: that many or more) children in the larger one "
                                           "in the family graph (masked cosine at least the family threshold).")
    url: str
    other_url: str


class Matches(Schema):
    """Every pair of bases joined by best-match links: universality (one basis in two LMs), its seed control (two
    dictionaries of one LM from different seeds) and splitting (two dictionaries of one LM)."""

    pairs: list[MatchDistribution]
    findings: list[str] = Field(description="What the universality figures say, in words made from them.")
    family_threshold: float


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
