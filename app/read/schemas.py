"""Pydantic models shared by the HTML pages and their JSON twins under /api/v1.

A page and its twin are built from the same query function returning one of these models, so what a browser shows
and what a script reads cannot drift apart (datasette's rule). Field names follow the analysis contract.
"""

from __future__ import annotations

from datetime import datetime

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sae.conventions import DENSE_DENSITY, ULTRALOW_DENSITY


class Schema(BaseModel):
    model_config = ConfigDict(frozen=True)


class Histogram(Schema):
    """Bin edges (len = len(counts) + 1) and counts."""

    edges: list[float]
    counts: list[int]


class DensityHistogram(Histogram):
    """log10-density histogram of a basis's live units; dead units are counted apart (log10 0 is -inf)."""

    dead: int = 0
    ultralow_threshold: float = ULTRALOW_DENSITY
    dense_threshold: float = DENSE_DENSITY


class BasisMetrics(Schema):
    """Per-basis metrics on held-out tokens; None where they do not apply (the neuron basis is exact)."""

    l0: float | None = None
    mse: float | None = None
    fvu: float | None = None
    # SAELens's names: 1 − fvu; mean ‖x‖, ‖x̂‖ and ‖x̂‖/‖x‖; mean ‖x̂‖² / mean x·x̂ (< 1: shrinkage); mean cos(x, x̂)
    explained_variance: float | None = None
    l2_norm_in: float | None = None
    l2_norm_out: float | None = None
    l2_ratio: float | None = None
    relative_reconstruction_bias: float | None = None
    cossim: float | None = None
    loss_clean: float | None = None
    loss_zero_ablation: float | None = None
    loss_reconstructed: float | None = None
    loss_recovered: float | None = None
    loss_mean_ablation: float | None = None
    loss_recovered_mean_ablation: float | None = None
    # SAELens's run_evals names: KL(clean || replaced) of the next-token distribution, its score, and its ce_loss_*
    # names for the four losses above (ce_loss_score = loss_recovered against zero ablation)
    kl_div_with_sae: float | None = None
    kl_div_with_ablation: float | None = None
    kl_div_with_mean_ablation: float | None = None
    kl_div_score: float | None = None
    ce_loss_without_sae: float | None = None
    ce_loss_with_ablation: float | None = None
    ce_loss_with_sae: float | None = None
    ce_loss_score: float | None = None
    dead: int | None = None
    ultralow: int | None = None
    dense: int | None = None
    n_units: int | None = None
    n_tokens: int | None = None


class BasisSummary(Schema):
    model: str
    name: str
    kind: Literal["neuron", "sae"]
    hook_name: str
    n_units: int
    d_in: int
    architecture: str | None
    metrics: BasisMetrics
    density_histogram: DensityHistogram
    url: str = Field(description="Page of the basis's unit list; its JSON twin is the same path under /api/v1.")


class Overview(Schema):
    bases: list[BasisSummary]


class Example(Schema):
    """A token window around one activating token, as parallel lists (one entry per token; compact in JSON):
    token ids, raw texts, texts with whitespace made visible, activations, ablation effects. The max token is at
    `max_position`."""

    value: float
    max_position: int
    token_ids: list[int]
    texts: list[str]
    shown: list[str]
    acts: list[float]
    effects: list[float | None] | None = Field(
        None, description="Per token: the change in log-probability of the actual next token when this unit is "
        "ablated at that token (0 where it does not fire; null where there is no next token or at BOS). Null for "
        "the whole window when the analysis has no ablation effects.")


class Interval(Schema):
    """One of the unit's activation intervals (equal widths from 0 to its max), empty or not: its bounds, how many
    firing tokens lie in it (`count`) and their share of all the unit's firing tokens (`contains_pct`, percent), and
    a few of them drawn at random (`samples`)."""

    index: int
    low: float
    high: float
    count: int
    contains_pct: float
    samples: list[Example]


class LogitToken(Schema):
    id: int
    text: str
    shown: str
    value: float


class UnitLink(Schema):
    """A related unit: a neuron a feature loads on, a nearby feature, a feature loading on a neuron, or the most
    correlated unit of another basis (`monoscope match`: another dictionary, or the same basis in another LM)."""

    kind: Literal["feature_neuron", "feature_feature", "neuron_feature", "best_match"]
    basis: str
    model: str | None = Field(None, description="The linked unit's model when it is another one than this unit's.")
    index: int
    weight: float = Field(description="Decoder loading or cosine; for best_match, the activation correlation.")
    label: str | None
    explanation: str | None = Field(None, description="Its current explanation by a language model, if any.")
    url: str


class FamilyNode(Schema):
    """A related feature in another dictionary size: where it sits and what it fires on."""

    basis: str
    n_units: int
    index: int
    score: float = Field(description="Masked cosine of the two features' activations (over the tokens where one "
                         "fires, then the other: the larger), the edge that joins them.")
    top_tokens: list[str]
    label: str | None
    explanation: str | None = Field(None, description="Its current explanation by a language model, if any.")
    url: str


class Family(Schema):
    """Feature splitting around one feature (the paper's graph): the features of the next smaller dictionary joined
    to it (parents) and of the next larger one (children) by a masked cosine of at least `threshold`, strongest
    first; ultralow features have no edges. Empty lists: nothing passes."""

    parents: list[FamilyNode]
    children: list[FamilyNode]
    n_parents: int = Field(description="Parents at the threshold; `parents` lists the strongest few.")
    n_children: int = Field(description="Children at the threshold; `children` lists the strongest few.")
    threshold: float


class ProxyStat(Schema):
    """One unit against one specificity proxy (sae/analysis/proxies.py): Pearson correlations of its activation with
    the token score and with the score thresholded at 0 (the paper's headline), the share of its firing tokens (by
    count and by activation) that are proxy-positive, and the share of proxy-positive tokens it fires on; null where
    undefined. The stacked histograms: firing tokens [interval][bucket] of the unit's activation intervals by
    proxy-score bucket (PROXY_BUCKETS), counted and activation-summed (the paper's "expected value" plot)."""

    name: str
    corr: float | None
    corr_pos: float | None
    fire_share: float | None
    act_share: float | None
    recall: float | None
    hist_counts: list[list[int]]
    hist_acts: list[list[float]]


class UnitData(Schema):
    """What the analysis says of one unit: it changes only when its basis is ingested again, so ingest builds it once
    (app.read.unit_data) and stores it with the page sections rendered from it (app.present.unit_sections)."""

    firing_count: int
    density: float
    max_activation: float
    mean_activation: float
    top_token_entropy: float | None
    act_hist: Histogram
    logit_hist: Histogram
    top_logits: list[LogitToken]
    bottom_logits: list[LogitToken]
    top_examples: list[Example]
    intervals: list[Interval]
    max_abs_effect: float | None = Field(None, description="The largest |ablation effect| over the unit's windows "
                                         "(the colour scale of the effect view); null without effects.")
    proxies: list[ProxyStat] = Field(default_factory=list, description="Specificity proxies (empty: the basis was "
                                     "analysed without them).")


class ExplainedExample(Schema):
    """One example the explainer saw: its source (top, interval, random, top_token), token texts and levels 0-9."""

    kind: str
    bucket: int | None = None
    texts: list[str]
    levels: list[int]


class ExplanationScoreView(Schema):
    scorer: str
    score: float | None = Field(description="Null when undefined (e.g. no silent window for detection).")


class ExplanationView(Schema):
    """One explanation of a unit, by a language model (`model`) under a prompt version, with its scores."""

    model: str
    prompt_version: str
    text: str
    created: datetime
    prompt_tokens: int
    completion_tokens: int
    small_model: bool = Field(description="Written by a small local model: a smoke test, not evidence.")
    scores: list[ExplanationScoreView]
    examples: list[ExplainedExample] = Field(description="What the explainer saw (the scorers' examples are others).")


class UnitAround(Schema):
    """What a unit's page shows besides its UnitData: where it sits, its label, and its links to other units, which
    labelling or another basis's ingest change at any time."""

    basis: BasisSummary
    index: int
    url: str
    labels_url: str = Field(description="The label panel: history and the form to label this unit.")
    label: str | None
    links: list[UnitLink]
    prev_url: str | None
    next_url: str | None
    compare_url: str | None = Field(None, description="For a neuron with feature links: /compare with it.")
    family: Family | None = Field(None, description="Feature splitting across dictionary sizes (`monoscope match`).")
    explanations: list[ExplanationView] = Field([], description="Explanations by language models (`monoscope "
                                                "autointerp`), newest first, with their scores.")


class UnitDetail(UnitAround, UnitData):
    """One unit, neuron or feature alike: the unit page's view model and its JSON twin."""


class BasisDistribution(Schema):
    """Per-unit log10 density and top-token entropy of one basis (dead units left out: their log10 is -inf)."""

    model: str
    name: str
    kind: Literal["neuron", "sae"]
    log10_density: list[float]
    top_token_entropy: list[float]


class Comparison(Schema):
    """A neuron beside the features that load on it most, and every basis's distributions on one plot."""

    model: str | None
    basis: str | None = Field(description="The SAE basis whose features are shown beside the neuron.")
    sae_bases: list[str]
    neuron: UnitDetail | None
    features: list[UnitDetail]
    weights: list[float]
    distributions: list[BasisDistribution]


class ErrorBody(Schema):
    """Every error of the JSON API (4xx and 503): one line saying what is wrong."""

    detail: str = Field(min_length=1)
