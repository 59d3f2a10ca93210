"""The matches page: for every pair of bases joined by `monoscope match`, the distribution of each unit's best
activation correlation in the other basis, what the pair measures (sae/analysis/pairs.py), its medians over the
paper's population and by density, the share of mutual best matches, each universality pair's same-LM seed control
beside it, the split counts of the family graph, and sentences that say what those numbers say."""

from __future__ import annotations

import numpy as np
from sqlalchemy import bindparam, func, literal_column, select
from sqlalchemy.orm import Session, aliased

from app.read.cache import Cache
from app.read.match_schemas import ControlRef, DensityBand, MatchDistribution, Matches
from app.read.urls import basis_url
from app.store.models import Basis, Model, Unit, UnitLink
from sae.analysis.pairs import paper_population, pair_relation, training_config
from sae.conventions import FAMILY_THRESHOLD, ULTRALOW_DENSITY

BINS = 20  # histogram bins over correlations -1 .. 1
MAX_SPLIT = 5  # split counts are 0, 1, ..., MAX_SPLIT or more
BANDS = (0.0, ULTRALOW_DENSITY, 1e-4, 1e-3, 1e-2, 1.0)  # density bands of the source units (the first: ultralow)
PAPER = {"features": 0.72, "neurons": 0.46}  # the paper's median best correlations across two LMs

_SOURCE, _TARGET = aliased(Basis), aliased(Basis)
_SOURCE_MODEL, _TARGET_MODEL = aliased(Model), aliased(Model)
_PAIRS = (select(_SOURCE, _SOURCE_MODEL.name, _TARGET, _TARGET_MODEL.name)
          .select_from(UnitLink).join(Unit, Unit.id == UnitLink.unit_id).join(_SOURCE, _SOURCE.id == Unit.basis_id)
          .join(_SOURCE_MODEL, _SOURCE_MODEL.id == _SOURCE.model_id)
          .join(_TARGET, _TARGET.id == UnitLink.target_basis_id)
          .join(_TARGET_MODEL, _TARGET_MODEL.id == _TARGET.model_id)
          .where(UnitLink.kind == "best_match", _SOURCE.status == "ready", _TARGET.status == "ready")
          .group_by(_SOURCE.id, _SOURCE_MODEL.name, _TARGET.id, _TARGET_MODEL.name)
          .order_by(_SOURCE_MODEL.name, _SOURCE.name, _TARGET_MODEL.name, _TARGET.name))
_BEST = (select(Unit.index, UnitLink.target_index, UnitLink.weight, Unit.density, Unit.firing_count)
         .join(Unit, Unit.id == UnitLink.unit_id)
         .where(UnitLink.kind == bindparam("kind"), Unit.basis_id == bindparam("source"),
                UnitLink.target_basis_id == bindparam("target")))
_LIVE = select(Unit.index).where(Unit.basis_id == bindparam("basis"), Unit.firing_count > 0,
                                 Unit.density >= ULTRALOW_DENSITY)


def _median(x: np.ndarray) -> float | None:
    return float(np.median(x)) if len(x) else None


def _distribution(session: Session, s: Basis, s_model: str, t: Basis, t_model: str,
                  several_models: bool) -> MatchDistribution:
    """One pair's figures (the control is filled in by `matches`)."""
    c = session.connection()
    rows = np.array([tuple(r) for r in c.execute(_BEST, {"kind": "best_match", "source": s.id, "target": t.id})],
                    dtype=float)  # tuples: numpy probes a Row for the array protocols, an exception a row
    src, tgt, weight, density, fired = (rows[:, k] if len(rows) else np.zeros(0) for k in range(5))
    back = dict(c.execute(_BEST.with_only_columns(Unit.index, UnitLink.target_index),
                          {"kind": "best_match", "source": t.id, "target": s.id}).all())
    mutual = np.array([back.get(int(j)) == int(i) for i, j in zip(src, tgt)], dtype=bool)
    population = paper_population(fired, density)
    counts, edges = np.histogram(weight, bins=BINS, range=(-1.0, 1.0))
    bands = []
    for low, high in zip(BANDS, BANDS[1:]):
        inside = (fired > 0) & (density >= low) & ((density < high) if high < 1.0 else True)
        bands.append(DensityBand(low=low, high=high, n=int(inside.sum()), median=_median(weight[inside])))
    relation = pair_relation(s.model_id == t.model_id, s.kind, t.kind, s.n_units, t.n_units,
                             training_config(s.config), training_config(t.config))
    return MatchDistribution(
        model=s_model, basis=s.name, kind=s.kind, other_model=t_model, other_basis=t.name, relation=relation,
        n_units=len(weight), median=_median(weight), n_population=int(population.sum()),
        median_population=_median(weight[population]), bands=bands,
        mutual_share=float(mutual[population].mean()) if population.any() else None,
        edges=edges.tolist(), counts=counts.tolist(),
        split_counts=_split_counts(session, s, t) if relation == "splitting" and s.n_units > t.n_units else None,
        url=basis_url(s.name, s_model if several_models else None),
        other_url=basis_url(t.name, t_model if several_models else None))


def _split_counts(session: Session, large: Basis, small: Basis) -> list[int] | None:
    """How many of the smaller dictionary's features (neither dead nor ultralow) have 0, 1, ... (last: MAX_SPLIT or
    more) children in the larger one in the family graph at FAMILY_THRESHOLD; None without family edges. Counted by
    the database: a full run holds millions of edges (fetching them took 6.5 s a request)."""
    c = session.connection()
    both = ({"large": large.id, "small": small.id}, {"large": small.id, "small": large.id})
    if not any(c.scalar(_HAS_FAMILY, ids) for ids in both):
        return None
    children = np.zeros(small.n_units, dtype=np.int64)
    for parent, n in [*c.execute(_CHILDREN, both[0]), *c.execute(_CHILDREN_STORED_BACK, both[1])]:
        children[parent] += n
    live = np.array(c.scalars(_LIVE, {"basis": small.id}).all(), dtype=np.int64)
    return np.bincount(np.minimum(children[live], MAX_SPLIT), minlength=MAX_SPLIT + 1).tolist()


_EDGES = select().select_from(UnitLink).join(Unit, Unit.id == UnitLink.unit_id).where(
    UnitLink.kind == "family", Unit.basis_id == bindparam("large"), UnitLink.target_basis_id == bindparam("small"))
_HAS_FAMILY = select(_EDGES.add_columns(UnitLink.id).exists())
# Edges are stored once, from the match's first basis: children per parent from either end.
_STRONG = _EDGES.where(UnitLink.weight >= FAMILY_THRESHOLD)
# "+ 0": grouped by the index on the target's index, SQLite read the edges' table rows in that order, a random read
# each (5.3 s for 2.7M edges of the full demo); grouped by an expression, it reads them through the (kind, target)
# index in table order and groups in a temporary tree (0.7 s).
_PARENT = (UnitLink.target_index + literal_column("0")).label("parent")
_CHILDREN = _STRONG.add_columns(_PARENT, func.count()).group_by(_PARENT)
_CHILDREN_STORED_BACK = _STRONG.add_columns(Unit.index, func.count()).group_by(Unit.index)


def _control_for(pair: MatchDistribution, seeds: dict[tuple[str, str], MatchDistribution]) -> ControlRef | None:
    """The same-LM seed control of a universality pair: for neurons, 1 by definition (the same LM has the same
    neurons); for a dictionary, its seed-control match in the source LM, else the target's in the target LM (the
    same comparison read the other way: `demo --full` trains the second seed on the first LM only), if one was run."""
    if pair.relation != "universality":
        return None
    if pair.kind == "neuron":
        return ControlRef(model=pair.model, basis=pair.basis, other_basis=pair.basis, median_population=1.0,
                          n_population=None, by_definition=True)
    seed = seeds.get((pair.model, pair.basis)) or seeds.get((pair.other_model, pair.other_basis))
    if seed is None:
        return None
    return ControlRef(model=seed.model, basis=seed.basis, other_basis=seed.other_basis,
                      median_population=seed.median_population, n_population=seed.n_population, by_definition=False)


_KIND_WORDS = {"neuron": "neurons", "sae": "SAE features"}


def _findings(pairs: list[MatchDistribution]) -> list[str]:
    """Sentences that say what the universality figures say, each from its numbers."""
    out = []
    universal = [p for p in pairs if p.relation == "universality" and p.median_population is not None]
    for p in universal:
        line = (f"{p.basis} ({_KIND_WORDS[p.kind]}) of {p.model} against {p.other_model}: median best correlation "
                f"{p.median_population:.2f} over the paper's population (n = {p.n_population:,}; "
                f"{p.median:.2f} over all {p.n_units:,})")
        if p.control is not None and p.control.by_definition:
            line += "; a neuron's seed control is 1 by definition (the same LM has the same neurons)"
        elif p.control is not None and p.control.median_population:
            share = p.median_population / p.control.median_population
            line += (f"; two dictionaries of one LM trained from different seeds agree at {p.control.median_population:.2f}"
                     f" ({p.control.basis} against {p.control.other_basis} of {p.control.model}), so this is "
                     f"{share:.0%} of what the recipe itself reproduces")
        else:
            line += "; no seed control was run, so the figure has no ceiling to be read against"
        out.append(line + ".")
    for p in pairs:
        if p.split_counts and sum(p.split_counts):
            out.append(_splitting_finding(p))
    for f in (p for p in universal if p.kind == "sae"):
        for n in (p for p in universal if p.kind == "neuron" and (p.model, p.other_model) == (f.model, f.other_model)):
            more = f.median_population > n.median_population
            out.append(f"Features ({f.basis}, {f.median_population:.2f}) are {'more' if more else 'not more'} "
                       f"universal than neurons ({n.median_population:.2f}) between these LMs"
                       f"{'' if more else ', unlike the paper'} (the paper: {PAPER['features']} against "
                       f"{PAPER['neurons']}).")
    return out


def _splitting_finding(p: MatchDistribution) -> str:
    """What a splitting pair's family graph says: how many of the smaller dictionary's features have children."""
    counts, total = p.split_counts, sum(p.split_counts)
    many, none = counts[-1], counts[0]
    line = (f"Splitting, {p.other_basis} into {p.basis}: at a masked cosine of {FAMILY_THRESHOLD} or more (the paper's "
            f"edge), {many:,} of {total:,} features of {p.other_basis} have {MAX_SPLIT} or more children, "
            f"{total - many - none:,} have 1 to {MAX_SPLIT - 1} and {none:,} none")
    if many > total / 2:
        line += ("; most features are joined to many, so at this threshold the graph does not single out families "
                 "(the paper's families are a few features each)")
    return line + "."


def matches(*, session: Session) -> Matches:
    """Return one distribution per (source basis, target basis) with best-match links, sources by model and name;
    computed once per state of the database's bases (every ingest changes it: a run's matches come in with its
    bases), since a full run's figures take seconds to read."""
    def compute() -> Matches:
        several_models = session.scalar(select(func.count()).select_from(Model)) > 1
        pairs = [_distribution(session, s, s_model, t, t_model, several_models)
                 for s, s_model, t, t_model in session.execute(_PAIRS).all()]
        seeds = {(p.model, p.basis): p for p in pairs if p.relation == "seed control"}
        pairs = [p.model_copy(update={"control": _control_for(p, seeds)}) for p in pairs]
        return Matches(pairs=pairs, findings=_findings(pairs), family_threshold=FAMILY_THRESHOLD)

    state = tuple(session.connection().execute(_STATE).one())
    return _MATCHES.get(str(session.get_bind().url), compute, state=state)


_MATCHES = Cache(max_size=16)
_STATE = select(func.sum(Basis.version), func.count(Basis.id), func.count(Basis.id).filter(Basis.status == "ready"),
                func.max(Basis.ingested_at), select(func.count(Model.id)).scalar_subquery())
