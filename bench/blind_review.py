"""Is a blind review blind on a real database? The attacks of app/read/blindness.py on a review's items, and on
every unit a review could draw.

    .venv/bin/python bench/blind_review.py --db sqlite:///monoscope.db --review ID

Reads, in this process, with the query functions the routes call: every unit's open JSON twin (what anyone can read
at /api/v1/bases/{basis}/units/{index}) and each unit's item as a rater sees it. Prints
- separation: the largest AUC of any number an item shows (its windows' own activations aside) between the review's
  two bases, over the review's items and over every unit the review could have drawn, with the worst fields;
- lookup: the share of the review's items (and of every drawable unit) whose unit the attack finds in the open twins,
  by each way of matching a window (app/read/blindness.py: the same window; a phrase around its max token; its max
  token with its strength) and by all three, against the control: the same attack on items made of the open pages'
  windows; and the logit lookup (promoted tokens in order), which the review does not guard against.
"""

from __future__ import annotations

import argparse
import json
import time

from sqlalchemy import select

from app.read.blindness import CHANNELS, OpenTwins, found_share, separation, windows
from app.read.queries.bases import BasisRecord
from app.read.queries.review_items import blind_evidence
from app.read.queries.unit import unit_view
from app.store.db import session_factory
from app.store.models import Basis, Model, Review, ReviewUnit
from app.store.reviews import reviewable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite:///monoscope.db")
    parser.add_argument("--review", type=int, required=True, help="The review's id (`monoscope review list`)")
    parser.add_argument("--worst", type=int, default=8, help="How many of the most separating fields to print")
    args = parser.parse_args()
    started = time.perf_counter()
    with session_factory(args.db)() as session:
        review = session.get(Review, args.review)
        model = session.scalar(select(Model).where(Model.name == review.config["model"]))
        bases = {b.name: b for b in session.scalars(select(Basis).where(Basis.model_id == model.id,
                                                                        Basis.name.in_(review.config["bases"])))}
        twins = {(name, i): json.loads(unit_view(session=session, basis=name, index=i, model=model.name).json())
                 for name, b in bases.items() for i in range(b.n_units)}
        drawable = {(name, i): blind_evidence(session, BasisRecord.of(b), i).model_dump(mode="json")
                    for name, b in bases.items() for i in reviewable(session, b)}
        name_of = {b.id: name for name, b in bases.items()}
        items = {(name_of[u.basis_id], u.unit_index): drawable[(name_of[u.basis_id], u.unit_index)]
                 for u in session.scalars(select(ReviewUnit).where(ReviewUnit.review_id == review.id))}
    names = list(review.config["bases"])
    print(f"review {review.id} {review.name!r}: {len(items)} items of {', '.join(names)}; "
          f"{len(twins)} open twins; "
          + ", ".join(f"{sum(k[0] == n for k in drawable)} drawable {n}" for n in names))
    for label, pool in (("the review's items", items), ("every drawable unit", drawable)):
        groups = [[item for (basis, _), item in pool.items() if basis == name] for name in names[:2]]
        aucs = separation(*groups)
        worst = sorted(aucs, key=aucs.get, reverse=True)[: args.worst]
        print(f"separation over {label} ({len(groups[0])} vs {len(groups[1])}): {len(aucs)} fields, max AUC "
              f"{aucs[worst[0]]:.3f}; worst: " + ", ".join(f"{f} {aucs[f]:.3f}" for f in worst))
    index = OpenTwins(twins)
    control = {key: {"top_examples": [dict(w, value=round(w["value"] / (twins[key]["max_activation"] or 1.0), 3))
                                      for w in windows(twins[key])]} for key in drawable}
    for channels in [("window",), ("phrase",), ("value",), CHANNELS, ("logits",)]:
        name = "+".join(channels)
        print(f"lookup by {name}: the review's items {found_share(index, items, channels):.1%} found, every "
              f"drawable unit {found_share(index, drawable, channels):.1%} (control, items made of the open "
              f"windows: {found_share(index, control, channels):.1%})")
    print(f"{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
