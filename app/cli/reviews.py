"""`monoscope review`: create, list, close and export blind reviews from the shell (the web app rates them)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from app.cli.common import DbOpt, cli, sessions
from sae.errors import MonoscopeError

review_cli = typer.Typer(no_args_is_help=True, help="Blind monosemanticity reviews: features against neurons.")
cli.add_typer(review_cli, name="review")


@review_cli.command("create")
def review_create(
    bases: Annotated[str, typer.Option("--bases", help="Comma-separated basis names, e.g. neurons,topk-4096.")],
    name: Annotated[str, typer.Option("--name", help="The review's name (unique).")],
    per_basis: Annotated[int, typer.Option("--per-basis", help="Units drawn from each basis.")] = 20,
    model: Annotated[Optional[str], typer.Option("--model", help="Model of the bases (default: the newest).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the draw (default: random).")] = None,
    by: Annotated[Optional[str], typer.Option("--by", help="User who creates (and may close) it.")] = None,
    db: DbOpt = None,
) -> None:
    """Draw live units (not dead, not ultralow, with a full review sample) at random from each basis, shuffle them and
    fix the items."""
    from sqlalchemy import select

    from app.read.queries.bases import NotFound
    from app.read.queries.reviews import resolve_bases, summary
    from app.store.db import write_transaction
    from app.store.models import User
    from app.store.reviews import create_review

    names = [b.strip() for b in bases.split(",") if b.strip()]
    with write_transaction(sessions(db)) as session:
        creator = None
        if by is not None:
            creator = session.scalar(select(User).where(User.name == by))
            if creator is None:
                raise MonoscopeError(f"no user named {by!r}")
        try:
            found = resolve_bases(session, names, model)
        except NotFound as e:
            raise MonoscopeError(str(e)) from None
        review = create_review(session, name=name, bases=found, per_basis=per_basis, creator=creator, seed=seed)
        made = summary(session, review, None)
    print(f"review {made.name!r} created: {made.n_items} items ({per_basis} from each of {', '.join(names)}); "
          f"rate it at {made.url}")


@review_cli.command("list")
def review_list(db: DbOpt = None) -> None:
    """List reviews: id, name, state, items."""
    from app.read.queries.reviews import review_list as reviews

    with sessions(db)() as session:
        listing = reviews(session=session, user=None)
    if not listing.reviews:
        print("no reviews yet: `monoscope review create --bases neurons,NAME --per-basis 20 --name NAME`")
    for r in listing.reviews:
        print(f"{r.id}\t{r.name}\t{r.state}\t{r.n_items} items")


@review_cli.command("close")
def review_close(
    review_id: Annotated[int, typer.Argument(help="The review's id (`monoscope review list`).")],
    db: DbOpt = None,
) -> None:
    """Close a review: scores freeze and the results open to everyone."""
    from app.store.db import write_transaction
    from app.store.reviews import close_review, find_review

    with write_transaction(sessions(db)) as session:
        try:
            review = find_review(session, review_id, lock=True)
        except LookupError as e:
            raise MonoscopeError(str(e)) from None
        close_review(session, review, None)
    print(f"review {review_id} closed")


@review_cli.command("export")
def review_export(
    review_id: Annotated[int, typer.Argument(help="The review's id (`monoscope review list`).")],
    db: DbOpt = None,
) -> None:
    """Print a review's results as JSON: every item revealed with every score (the results page's twin)."""
    from app.read.queries.bases import NotFound
    from app.read.queries.reviews import review_results

    with sessions(db)() as session:
        try:
            results = review_results(session=session, review_id=review_id, user=None, force=True)
        except NotFound as e:
            raise MonoscopeError(str(e)) from None
    print(json.dumps(results.model_dump(mode="json"), indent=1, ensure_ascii=False))
