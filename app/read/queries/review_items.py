"""A blind review item's evidence: one unit as a rater sees it, drawn the same way for every basis.

DESIGN.md section 7: an item reveals nothing of its unit. What it shows:
- the windows of the unit's review sample (sae/analysis/review_sample.py): its largest activations and its samples
  of each activation interval, none of which share a token with a window of the open unit pages, the twins or the
  export, so no window or value of an item can be found there;
- activations relative to the unit's max (rounded to 3 decimals), logit effects relative to the unit's largest
  |effect| (rounded to 2), token texts and never token ids.
What it leaves out because it differs by kind rather than by meaning: the activation histogram and the intervals'
shares of firing tokens (a ReLU neuron's activations pile up near 0, a TopK feature's start at its threshold), and
every count. What stays (neurons fire densely, and the coloured windows show it) is said on the review page.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app.read.queries.bases import BasisRecord, NotFound
from app.read.queries.unit import vocabulary
from app.read.review_schemas import BlindEvidence, BlindExample, BlindInterval, BlindToken
from app.read.unit_data import analysis_setting, context_before
from app.read.windows import decode_window, visible_token
from app.store.example_rows import PAGE_ORDER, WINDOW_COLUMNS, unpack_rows
from app.store.models import REVIEW_KINDS, Example, Unit

ACT_DIGITS = 3  # activations / the unit's max
LOGIT_DIGITS = 2  # logit effects / the unit's largest |effect|

_UNIT = select(Unit.id, Unit.max_activation, Unit.top_logits, Unit.bottom_logits).where(
    Unit.basis_id == bindparam("basis_id"), Unit.index == bindparam("index"))
_WINDOWS = (select(*WINDOW_COLUMNS).where(Example.unit_id == bindparam("unit_id"), Example.kind.in_(REVIEW_KINDS))
            .order_by(*PAGE_ORDER))


def blind_evidence(session: Session, b: BasisRecord, index: int) -> BlindEvidence:
    """Return unit `index` of basis `b` as a review item shows it (see the module docstring)."""
    row = session.connection().execute(_UNIT, {"basis_id": b.id, "index": index}).first()
    if row is None:
        raise NotFound(f"no unit {index} in that basis")
    unit_id, max_activation, top_logits, bottom_logits = row
    strings = vocabulary(session, b)
    scale = max([abs(v) for _, v in [*top_logits, *bottom_logits]], default=0.0) or 1.0
    n_intervals = analysis_setting(b.config, "n_intervals")
    top: list[BlindExample] = []
    samples: list[list[BlindExample]] = [[] for _ in range(n_intervals)]
    before, relative = context_before(b.config), 1.0 / (max_activation or 1.0)
    for stored in unpack_rows(session.connection().execute(_WINDOWS, {"unit_id": unit_id})):
        w = decode_window(stored.token_ids, stored.activations, None, strings, before)
        acts = np.round(np.asarray(w.acts) * relative, ACT_DIGITS) + 0.0  # + 0.0: no -0.0
        example = BlindExample(value=round(stored.value * relative, ACT_DIGITS), max_position=w.max_position,
                               texts=w.texts, shown=w.shown, acts=acts.tolist())
        (top if stored.kind == "review_top" else samples[min(int(stored.bucket), n_intervals - 1)]).append(example)
    return BlindEvidence(
        top_logits=_tokens(top_logits, strings, scale), bottom_logits=_tokens(bottom_logits, strings, scale),
        top_examples=top,
        intervals=[BlindInterval(index=i, low=round(i / n_intervals, 4), high=round((i + 1) / n_intervals, 4),
                                 samples=samples[i]) for i in range(n_intervals)])


def _tokens(pairs: list, strings: list[str], scale: float) -> list[BlindToken]:
    """Stored [token id, effect] pairs as texts with effects relative to `scale`, rounded (the ids stay here)."""
    out = []
    for i, v in pairs:
        text = strings[i] if 0 <= i < len(strings) else ""
        out.append(BlindToken(text=text, shown=visible_token(text), value=round(v / scale, LOGIT_DIGITS) + 0.0))
    return out
