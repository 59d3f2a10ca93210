"""`monoscope autointerp`: explain and score units with a language model, and store what it made.

For each unit: read its windows from the database (the page's for the explainer, the review sample's for the
scorers: sae/autointerp/evidence.py says who sees what), add random held-out windows from the pool, explain, score,
and write the explanation and its scores in one short transaction. A unit whose explanation was made from the same
examples with the same prompt version and model is not explained again, and a score on the same examples is not
redone, so an interrupted run resumes where it stopped. The model's token usage is stored with each row.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker
from tqdm import tqdm

from app.read.unit_data import analysis_setting, context_before
from app.read.windows import decode_window
from app.store.db import write_transaction
from app.store.example_rows import PAGE_ORDER, WINDOW_COLUMNS, decoded, unpack_rows
from app.store.models import (
    Basis,
    Example,
    Explanation,
    ExplanationScore,
    Review,
    ReviewScore,
    ReviewUnit,
    Unit,
    User,
    utc_now,
)
from app.store.reviews import reviewable
from app.store.vocabulary import token_strings
from sae.autointerp import evidence, scorers
from sae.autointerp.config import AutointerpConfig
from sae.autointerp.llm import LLM, Usage
from sae.autointerp.pool import Pool
from sae.autointerp.prompts import PROMPT_VERSION
from sae.autointerp.windows import Window, fingerprint, records
from sae.errors import MonoscopeError

STAGES = ("explain", *scorers.SCORERS)
HUMAN = "review:"  # model of a reviewer's hypothesis scored like an explanation: review:<rater>
HUMAN_VERSION = "human"  # its prompt version: no prompt wrote it


def draw_units(session: Session, bases: list[Basis], per_basis: int, seed: int) -> dict[str, list[int]]:
    """Draw `per_basis` units of each basis the way a blind review does (live, with a full review sample: the
    scorers need it), seeded; {basis name: sorted indexes}."""
    if per_basis < 1:
        raise MonoscopeError(f"--per-basis is at least 1, got {per_basis}")
    drawn = {}
    for basis in bases:
        live = reviewable(session, basis)
        if not live:
            raise MonoscopeError(f"basis {basis.name!r} has no live unit with a review sample to explain")
        rng = evidence.unit_rng(seed, basis.name, 0, "draw")
        drawn[basis.name] = sorted(int(i) for i in rng.choice(live, size=min(per_basis, len(live)), replace=False))
    return drawn


@dataclass
class RunStats:
    """What a run did: units explained, skipped (up to date), scores made, seconds and usage by stage."""

    units: int = 0
    explained: int = 0
    scored: int = 0
    up_to_date: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    usage: dict[str, Usage] = field(default_factory=lambda: defaultdict(Usage))

    def line(self) -> str:
        total = sum(self.seconds.values())
        split = ", ".join(f"{s} {self.seconds[s]:.1f} s" for s in STAGES if s in self.seconds)
        tokens = sum(u.prompt_tokens + u.completion_tokens for u in self.usage.values())
        return (f"{self.units} units: {self.explained} explained, {self.scored} scores, {self.up_to_date} up to date; "
                f"{total:.1f} s ({split}); {tokens:,} tokens")


def _windows(session: Session, unit_id: int, strings: list[str], before: int, bos_id: int, n_intervals: int,
             prefix: str) -> evidence.Source:
    """The unit's stored windows of one sample (prefix "" for the page's, "review_" for the review sample's)."""
    top: list[Window] = []
    intervals: list[list[Window]] = [[] for _ in range(n_intervals)]
    rows = session.execute(select(*WINDOW_COLUMNS)
                           .where(Example.unit_id == unit_id, Example.kind.in_([prefix + "top", prefix + "interval"]))
                           .order_by(*PAGE_ORDER))
    for stored in unpack_rows(rows):
        w = decode_window(stored.token_ids, stored.activations, None, strings, before)
        plain_kind = stored.kind.removeprefix(prefix)
        window = Window(plain_kind, tuple(w.texts), tuple(w.acts), tuple(i != bos_id for i in w.ids),
                        None if stored.bucket is None else int(stored.bucket))
        (top if plain_kind == "top" else intervals[min(int(stored.bucket), n_intervals - 1)]).append(window)
    return evidence.Source(top, intervals, [], [])


def unit_evidence(session: Session, basis: Basis, index: int, pool: Pool, cfg: AutointerpConfig) -> evidence.Evidence:
    """Gather one unit's evidence: its windows from the database and held-out windows from the pool."""
    unit = session.scalar(select(Unit).where(Unit.basis_id == basis.id, Unit.index == index))
    if unit is None:
        raise MonoscopeError(f"basis {basis.name!r} has no unit {index}")
    strings = token_strings(session, basis.model_id)
    before = context_before(basis.config)
    after = analysis_setting(basis.config, "context_after")
    n_intervals = analysis_setting(basis.config, "n_intervals")
    page = _windows(session, unit.id, strings, before, pool.bos_id, n_intervals, "")
    review = _windows(session, unit.id, strings, before, pool.bos_id, n_intervals, "review_")
    tops = select(Example.width, Example.token_ids, Example.codec).where(Example.unit_id == unit.id,
                                                                         Example.kind == "top")
    top_ids = {int(t) for width, ids, codec in session.execute(tops)  # each top window's max token
               for t in np.frombuffer(decoded(ids, codec), "<i4").reshape(-1, width)[:, before]}
    held = {}
    for half, sample in (("explain", page), ("score", review)):
        n_random = cfg.explain_random if half == "explain" else cfg.sim_random + 2 * cfg.detect_silent
        n_token = cfg.explain_top_token_contexts if half == "explain" else cfg.sim_top_token_contexts
        held[half] = evidence.Source(
            sample.top, sample.intervals,
            pool.random_windows(basis.name, index, half, n_random, before, after, cfg.seed),
            pool.token_windows(basis.name, index, half, top_ids - {-1, pool.bos_id}, n_token, before, after,
                               cfg.seed))
    ranked = [pool.strings[i] for i in pool.promoted.get((basis.name, index), [])]

    def texts(pairs: list) -> list[str]:  # stored [token id, weight] pairs -> token strings
        return [strings[i] if 0 <= i < len(strings) else "" for i, _ in pairs]

    return evidence.build(basis.name, index, float(unit.max_activation), cfg, page=held["explain"],
                          held_out=held["score"], top_logits=texts(unit.top_logits),
                          bottom_logits=texts(unit.bottom_logits), logit_ranked=ranked, vocabulary=pool.strings)


def _scoring_hashes(ev: evidence.Evidence, text: str, scorer_model: str) -> dict[str, str]:
    """Per scorer: the hash of the examples it scores on, its version, the prompts' version, the explanation and the
    model that scores."""
    examples = {"simulation": records(ev.simulate), "detection": records(ev.detect_active + ev.detect_silent),
                "fuzzing": records(ev.fuzz), "logits": [ev.logit_positive, ev.logit_negative]}
    return {name: fingerprint(examples[name], scorers.SCORER_VERSION, PROMPT_VERSION, text, scorer_model)
            for name in scorers.SCORERS}


def review_hypotheses(session: Session, bases: list[Basis]) -> dict[tuple[str, int], list[tuple[str, str]]]:
    """{(basis name, unit index): [(rater, hypothesis)]} of the units of `bases` rated in closed blind reviews (an
    open review's items stay blind: its hypotheses name what its raters saw)."""
    names = {b.id: b.name for b in bases}
    found: dict[tuple[str, int], list[tuple[str, str]]] = defaultdict(list)
    for basis_id, index, rater, hypothesis in session.execute(
            select(ReviewUnit.basis_id, ReviewUnit.unit_index, User.name, ReviewScore.hypothesis)
            .join(Review, Review.id == ReviewUnit.review_id)
            .join(ReviewScore, ReviewScore.review_unit_id == ReviewUnit.id).join(User, User.id == ReviewScore.rater_id)
            .where(Review.state == "closed", ReviewScore.skipped.is_(False), ReviewScore.hypothesis.is_not(None),
                   ReviewUnit.basis_id.in_(list(names))).order_by(ReviewUnit.id, User.name)):
        if (rater, hypothesis) not in found[(names[basis_id], index)]:
            found[(names[basis_id], index)].append((rater, hypothesis))
    return dict(found)


def process_unit(sessions: sessionmaker, llm: LLM, basis: Basis, index: int, pool: Pool, cfg: AutointerpConfig,
                 stats: RunStats, *, force: bool = False, hypothesis: tuple[str, str] | None = None) -> None:
    """Explain and score one unit unless up to date; store the result in one transaction. With `hypothesis`
    (rater, text) a reviewer's hypothesis is scored instead, as the explanation of model "review:<rater>"."""
    author = llm.name if hypothesis is None else HUMAN + hypothesis[0]
    version = PROMPT_VERSION if hypothesis is None else HUMAN_VERSION
    with sessions() as session:
        ev = unit_evidence(session, basis, index, pool, cfg)
        shown = [w.as_record(ev.max_activation) for w in ev.explain] if hypothesis is None else []
        explain_hash = fingerprint([shown, ev.top_logits, ev.bottom_logits] if hypothesis is None
                                   else [hypothesis[1]], version)
        old = session.scalar(select(Explanation).where(
            Explanation.basis_id == basis.id, Explanation.unit_index == index, Explanation.model == author,
            Explanation.prompt_version == version))
        old_scores = {} if old is None else {s.scorer: s.examples_hash for s in session.scalars(
            select(ExplanationScore).where(ExplanationScore.explanation_id == old.id))}
        current = old is not None and old.examples_hash == explain_hash and not force
        text = old.text if current else None
    stats.units += 1
    usage = Usage()
    if not current and hypothesis is not None:
        text, old_scores = hypothesis[1], {}
    elif not current:
        started = time.perf_counter()
        text, usage = scorers.explain(llm, ev, cfg.explain_max_tokens)
        stats.seconds["explain"] += time.perf_counter() - started
        stats.usage["explain"].add(usage)
        stats.explained += 1
        old_scores = {}
    hashes = _scoring_hashes(ev, text, llm.name)
    todo = tuple(name for name in scorers.SCORERS if old_scores.get(name) != hashes[name])
    results = []
    for name in todo:
        started = time.perf_counter()
        results += scorers.score_all(llm, text, ev, cfg.seed, (name,))
        stats.seconds[name] += time.perf_counter() - started
        stats.usage[name].add(results[-1].usage)
    if current and not todo:
        stats.up_to_date += 1
        return
    with write_transaction(sessions) as session:
        row = session.scalar(select(Explanation).where(
            Explanation.basis_id == basis.id, Explanation.unit_index == index, Explanation.model == author,
            Explanation.prompt_version == version))
        if row is None:
            row = Explanation(basis_id=basis.id, unit_index=index, model=author, prompt_version=version)
            session.add(row)
        if not current:
            row.text, row.examples, row.examples_hash = text, shown, explain_hash
            row.prompt_tokens, row.completion_tokens = usage.prompt_tokens, usage.completion_tokens
            row.created = utc_now()
            if row.id is not None:  # scores of the old text go with it
                session.execute(delete(ExplanationScore).where(ExplanationScore.explanation_id == row.id))
        session.flush()
        for result in results:
            session.execute(delete(ExplanationScore).where(ExplanationScore.explanation_id == row.id,
                                                           ExplanationScore.scorer == result.scorer))
            session.add(ExplanationScore(
                explanation_id=row.id, scorer=result.scorer, score=result.score, details=result.details,
                examples_hash=hashes[result.scorer], model=llm.name, prompt_tokens=result.usage.prompt_tokens,
                completion_tokens=result.usage.completion_tokens))
    stats.scored += len(results)


def run_autointerp(sessions: sessionmaker, llm: LLM, pool: Pool, units: dict[str, list[int]], cfg: AutointerpConfig,
                   *, model_id: int, force: bool = False, progress: bool = True,
                   hypotheses: dict[tuple[str, int], list[tuple[str, str]]] | None = None) -> RunStats:
    """Explain and score every unit of `units` ({basis name: indexes}) of one model, then score the reviewers'
    `hypotheses` ({(basis, index): [(rater, text)]}, units of the same bases); see the module docstring."""
    with sessions() as session:
        bases = {b.name: b for b in session.scalars(select(Basis).where(Basis.model_id == model_id,
                                                                          Basis.name.in_(list(units))))}
        for b in bases.values():
            session.expunge(b)
    stats = RunStats()
    todo = [(bases[name], i, None) for name, indexes in units.items() for i in indexes]
    todo += [(bases[name], i, h) for (name, i), said in (hypotheses or {}).items() for h in said]
    for basis, index, hypothesis in tqdm(todo, desc="autointerp", unit="unit", disable=not progress, leave=False):
        process_unit(sessions, llm, basis, index, pool, cfg, stats, force=force, hypothesis=hypothesis)
    return stats
