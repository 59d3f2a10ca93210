"""The database schema (SQLAlchemy 2 ORM). It is created and changed only by the Alembic migrations in migrations/.

A basis is a set of directions in one activation space (the MLP neurons, or one SAE); a unit is (basis, index).
Neurons and features share every table, which makes "compare neurons with features" one query.
Labels and review items refer to (basis_id, unit_index), not to unit rows: re-ingesting a basis replaces its
units but keeps the basis row, so nothing a person wrote is ever lost.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Joins a unit's distinct max-token strings in `unit.top_tokens`: the ASCII unit separator, as newline tokens are
# common in code.
TOP_TOKENS_SEPARATOR = "\x1f"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Model(Base):
    """One language model with its run directory (one per run)."""

    __tablename__ = "model"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    run_dir: Mapped[str] = mapped_column(Text)
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Token(Base):
    """The model's vocabulary as display strings (decoded bytes; U+FFFD for partial UTF-8)."""

    __tablename__ = "token"
    model_id: Mapped[int] = mapped_column(ForeignKey("model.id", ondelete="CASCADE"), primary_key=True)
    token_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text)


class Basis(Base):
    """A neuron basis or an SAE dictionary; `status` is 'ready' only once all its units are in."""

    __tablename__ = "basis"
    __table_args__ = (UniqueConstraint("model_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("model.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # neuron | sae
    hook_name: Mapped[str] = mapped_column(String(200))
    n_units: Mapped[int] = mapped_column(Integer)
    d_in: Mapped[int] = mapped_column(Integer)
    architecture: Mapped[str | None] = mapped_column(String(32))
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    density_histogram: Mapped[dict] = mapped_column(JSON, default=dict)
    config: Mapped[dict] = mapped_column(JSON, default=dict)  # basis.json less metrics and histogram
    status: Mapped[str] = mapped_column(String(16), default="building")  # building | ready
    version: Mapped[int] = mapped_column(Integer, default=1)
    fingerprint: Mapped[str | None] = mapped_column(String(64))  # of the analysis it was ingested from
    ingested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Unit(Base):
    """Per-unit statistics; histograms and logit lists are small JSON documents read whole by the unit page."""

    __tablename__ = "unit"
    __table_args__ = (
        UniqueConstraint("basis_id", "index"),
        Index("ix_unit_basis_density", "basis_id", "density"),
        Index("ix_unit_basis_max", "basis_id", "max_activation"),
        Index("ix_unit_basis_id", "basis_id", "id"),  # a basis's id range in O(log n) (app.read.queries.family)
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    basis_id: Mapped[int] = mapped_column(ForeignKey("basis.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    firing_count: Mapped[int] = mapped_column(BigInteger)
    density: Mapped[float] = mapped_column(Float)
    log10_density: Mapped[float | None] = mapped_column(Float)  # null for a dead unit
    max_activation: Mapped[float] = mapped_column(Float)
    mean_activation: Mapped[float] = mapped_column(Float)
    top_token_entropy: Mapped[float | None] = mapped_column(Float)
    top_tokens: Mapped[str] = mapped_column(Text, default="")  # distinct max tokens, TOP_TOKENS_SEPARATOR-joined
    act_hist: Mapped[dict] = mapped_column(JSON)  # {"edges": [...], "counts": [...]}
    logit_hist: Mapped[dict] = mapped_column(JSON)
    top_logits: Mapped[list] = mapped_column(JSON)  # [[token_id, weight], ...] largest first
    bottom_logits: Mapped[list] = mapped_column(JSON)  # smallest first
    interval_edges: Mapped[list] = mapped_column(JSON)
    interval_counts: Mapped[list] = mapped_column(JSON)
    map_x: Mapped[float | None] = mapped_column(Float)  # feature map (`monoscope map`); None: not on the map
    map_y: Mapped[float | None] = mapped_column(Float)
    # its UnitData and the page sections rendered from it (app.present.unit_sections.pack); None: ingested before
    # revision 0006. Deferred: only the unit page and its twin read it.
    sections: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    # its statistics against the specificity proxies (app.store.proxy_columns; None: an analysis without proxies)
    proxy_stats: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    proxy_hists: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)


OPEN_KINDS = ("top", "interval")  # windows the unit's page, its twin and the export show
REVIEW_KINDS = ("review_top", "review_interval")  # the review sample: only blind review items show these


class Example(Base):
    """A unit's context windows of one kind, packed: its top activations or its interval samples, of the open page
    or of the review sample (kept apart from the page's: sae/analysis/review_sample.py; no effects). One row per
    (unit, kind) holds its n windows in page order (top: by rank; interval samples: by interval, then rank), each
    `width` tokens: int32 ids (-1 outside the sequence), float32 activations and per-token ablation effects (NaN
    where a token has none), all little-endian, the three arrays zstd-compressed where `codec` is 1 (~4.6x on
    features, 1.9x on neurons); app.store.example_rows reads them back. One row per window made ingest write 150 rows
    a unit (2.5M for 16,384 features)."""

    __tablename__ = "example"
    __table_args__ = (Index("ix_example_unit", "unit_id", "kind"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("unit.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # OPEN_KINDS or REVIEW_KINDS
    n: Mapped[int] = mapped_column(Integer)  # windows
    width: Mapped[int] = mapped_column(Integer)  # tokens a window
    buckets: Mapped[bytes | None] = mapped_column(LargeBinary)  # int32 [n] interval of each sample; None: top
    values: Mapped[bytes] = mapped_column(LargeBinary)  # float32 [n] activation at each window's max token
    token_ids: Mapped[bytes] = mapped_column(LargeBinary)  # int32 [n, width]
    activations: Mapped[bytes] = mapped_column(LargeBinary)  # float32 [n, width]
    effects: Mapped[bytes | None] = mapped_column(LargeBinary)  # float32 [n, width]; None: not analysed
    codec: Mapped[int] = mapped_column(Integer, server_default="0")  # 0: arrays as they are; 1: zstd


MATCH_LINKS = ("best_match", "family")  # links `monoscope match` writes: they belong to the match, not to a basis


class UnitLink(Base):
    """A related unit: the neurons a feature's decoder loads on, its nearest features, a neuron's features."""

    __tablename__ = "unit_link"
    __table_args__ = (Index("ix_unit_link_unit", "unit_id", "kind", "rank"),
                      Index("ix_unit_link_target", "target_basis_id", "target_index"),
                      Index("ix_unit_link_kind_target", "kind", "target_basis_id", "unit_id"))
    id: Mapped[int] = mapped_column(primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("unit.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))  # feature_neuron | feature_feature | neuron_feature | MATCH_LINKS
    rank: Mapped[int] = mapped_column(Integer)
    target_basis_id: Mapped[int] = mapped_column(ForeignKey("basis.id", ondelete="CASCADE"))
    target_index: Mapped[int] = mapped_column(Integer)
    weight: Mapped[float] = mapped_column(Float)


class User(Base):
    """Someone who may write (labels, reviews). The API token is stored only as its SHA-256 (a 32-byte random
    secret needs no slow hash); a revoked user keeps their rows, so what they wrote keeps its author."""

    __tablename__ = "user"
    __table_args__ = (Index("uq_user_token_hash", "token_hash", unique=True),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(128))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class BrowserSession(Base):
    """A signed-in browser: its cookie holds a random key, this row its SHA-256. Signing out deletes the row, so a
    copy of the cookie stops working too; "sign out everywhere" deletes every row of the user."""

    __tablename__ = "browser_session"
    __table_args__ = (Index("ix_browser_session_user", "user_id"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now, server_default=func.now())
    expires: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AppSecret(Base):
    """Secrets the server generates on first run when the settings give none (the session-signing key)."""

    __tablename__ = "app_secret"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Label(Base):
    """Append-only label history of a unit; the newest row is its current label."""

    __tablename__ = "label"
    __table_args__ = (Index("ix_label_unit", "basis_id", "unit_index", "id"),
                      Index("uq_label_request_key", "author_id", "request_key", unique=True))
    id: Mapped[int] = mapped_column(primary_key=True)
    basis_id: Mapped[int] = mapped_column(ForeignKey("basis.id", ondelete="CASCADE"))
    unit_index: Mapped[int] = mapped_column(Integer)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    text: Mapped[str] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    # Set here, to the microsecond (SQLite's CURRENT_TIMESTAMP has whole seconds): histories order by time.
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now, server_default=func.now())
    # The writer's `Idempotency-Key`, if any: a retry with the same key finds this row instead of adding another.
    request_key: Mapped[str | None] = mapped_column(String(100))


class Review(Base):
    """A blind monosemanticity review: units drawn from some bases, shown to raters without saying which is which."""

    __tablename__ = "review"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    config: Mapped[dict] = mapped_column(JSON, default=dict)  # {"model": name, "bases": [names]}
    per_basis: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), default="open")  # open | closed
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ReviewUnit(Base):
    """One item of a review, fixed at creation: item `position` (1-based) is unit (basis, unit index)."""

    __tablename__ = "review_unit"
    __table_args__ = (UniqueConstraint("review_id", "position"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    review_id: Mapped[int] = mapped_column(ForeignKey("review.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    basis_id: Mapped[int] = mapped_column(ForeignKey("basis.id", ondelete="CASCADE"))
    unit_index: Mapped[int] = mapped_column(Integer)


class ReviewScore(Base):
    """One rater's answer for one item: the paper's rubric (total out of 14), or a skip to come back to."""

    __tablename__ = "review_score"
    __table_args__ = (UniqueConstraint("review_unit_id", "rater_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    review_unit_id: Mapped[int] = mapped_column(ForeignKey("review_unit.id", ondelete="CASCADE"))
    rater_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    skipped: Mapped[bool] = mapped_column(Boolean, default=False)
    hypothesis: Mapped[str | None] = mapped_column(Text)
    confidence: Mapped[int | None] = mapped_column(Integer)  # 0-3
    token_consistency: Mapped[int | None] = mapped_column(Integer)  # 0-5
    logit_consistency: Mapped[int | None] = mapped_column(Integer)  # 0-3
    effect_gap: Mapped[int | None] = mapped_column(Integer)  # 0/1; null: not applicable (logit consistency 3)
    specificity: Mapped[int | None] = mapped_column(Integer)  # 0-3
    total: Mapped[int | None] = mapped_column(Integer)  # 0-14
    interval_scores: Mapped[list | None] = mapped_column(JSON)  # one 0-3 per interval, or null
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now, onupdate=utc_now,
                                              server_default=func.now())


class Explanation(Base):
    """A language model's explanation of a unit (automated interpretability, `monoscope autointerp`), or a person's
    hypothesis from a blind review scored the same way (`model` "review:<rater>"). Keyed by (basis, unit index),
    like labels, so a re-ingest loses nothing; one row per (unit, model, prompt version), replaced when the examples
    it was written from change (`examples_hash`)."""

    __tablename__ = "explanation"
    __table_args__ = (UniqueConstraint("basis_id", "unit_index", "model", "prompt_version"),
                      Index("ix_explanation_unit", "basis_id", "unit_index"))
    id: Mapped[int] = mapped_column(primary_key=True)
    basis_id: Mapped[int] = mapped_column(ForeignKey("basis.id", ondelete="CASCADE"))
    unit_index: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(300))  # the LLM's spec name (local:FILE, openai:MODEL@URL)
    prompt_version: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    examples: Mapped[list] = mapped_column(JSON)  # what the explainer saw: [{kind, bucket, texts, levels}]
    examples_hash: Mapped[str] = mapped_column(String(64))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now, server_default=func.now())


class ExplanationScore(Base):
    """One scorer's score of one explanation (simulation: Spearman; detection, fuzzing, logits: balanced accuracy;
    null when undefined), with its details and the hash of the examples it was scored on."""

    __tablename__ = "explanation_score"
    __table_args__ = (UniqueConstraint("explanation_id", "scorer"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    explanation_id: Mapped[int] = mapped_column(ForeignKey("explanation.id", ondelete="CASCADE"))
    scorer: Mapped[str] = mapped_column(String(32))
    score: Mapped[float | None] = mapped_column(Float)
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    examples_hash: Mapped[str] = mapped_column(String(64))  # of the scoring examples and the scorer's version
    model: Mapped[str] = mapped_column(String(300))  # the LLM that scored (the simulator)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now, server_default=func.now())
