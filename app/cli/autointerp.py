"""`monoscope autointerp`: explain and score units with a language model (opt-in; `make demo` does not run it)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from app.cli.common import DbOpt, cli, default, limit_cpu_threads, sessions
from sae.autointerp.config import AutointerpConfig
from sae.errors import MonoscopeError

POOL_ROWS = 256  # held-out rows with the chosen units' activations (half for the explainer, half for the scorers)


@cli.command("autointerp")
def autointerp(
    bases: Annotated[str, typer.Option("--bases", help="Comma-separated basis names, e.g. neurons,topk-4096.")],
    per_basis: Annotated[int, typer.Option("--per-basis", help="Units drawn from each basis (live, with a review "
                                                              "sample, as a blind review draws them).")] = 20,
    llm: Annotated[Optional[str], typer.Option("--llm", help="local (SmolLM2-135M-Instruct, offline), local:PATH "
                                                             "(a model folder or .gguf), or openai:MODEL[@URL] (key "
                                                             "from MONOSCOPE_LLM_API_KEY or OPENAI_API_KEY); "
                                                             "default: the setting MONOSCOPE_LLM.")] = None,
    units: Annotated[Optional[str], typer.Option("--units", help="Explain these units instead of a draw: "
                                                                 "basis:index,... (e.g. neurons:3,topk-4096:17).")]
    = None,
    concurrency: Annotated[Optional[int], typer.Option("--concurrency", help="Requests in flight to an endpoint "
                                                                             "(default: MONOSCOPE_LLM_CONCURRENCY).")]
    = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Model (run name) of the bases (default: the "
                                                                 "newest that has them).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the draw and of every example choice.")]
    = default(AutointerpConfig, "seed"),
    hypotheses: Annotated[bool, typer.Option("--hypotheses", help="Also score the hypotheses raters wrote in closed "
                                                                 "blind reviews of these bases, with the same "
                                                                 "scorers.")] = False,
    mix: Annotated[Optional[str], typer.Option("--mix", help="Change example counts of the protocol, e.g. "
                                                             "sim_random=5,logit_random=20 (AutointerpConfig's "
                                                             "fields; the defaults are the paper's mix).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Explain and score again even when up to date.")] = False,
    db: DbOpt = None,
) -> None:
    """Explain each drawn unit with a language model from its page's examples, then score the explanation on
    examples it never saw (simulation, detection, fuzzing, the logit test). Resumable: up-to-date units are skipped.
    A 135M local model's explanations are a smoke test of the pipeline, not evidence about the units."""
    from app.read.queries.bases import NotFound
    from app.read.queries.reviews import resolve_bases
    from app.read.unit_data import analysis_setting
    from app.settings import load_settings
    from app.store.autointerp import draw_units, review_hypotheses, run_autointerp
    from app.store.models import Model
    from sae.autointerp.backends import open_llm
    from sae.autointerp.heldout import load_pool

    settings = load_settings(llm=llm, llm_concurrency=concurrency)
    cfg = _config(mix, seed)
    names = [b.strip() for b in bases.split(",") if b.strip()]
    maker = sessions(db)
    with maker() as session:
        try:
            found = resolve_bases(session, names, model)
        except NotFound as e:
            raise MonoscopeError(str(e)) from None
        if len({b.model_id for b in found}) != 1:
            raise MonoscopeError("--bases must belong to one model (name it with --model)")
        chosen = _parse_units(units, names) if units else draw_units(session, found, per_basis, seed)
        for b in found:
            bad = [i for i in chosen.get(b.name, []) if not 0 <= i < b.n_units]
            if bad:
                raise MonoscopeError(f"basis {b.name!r} has units 0 to {b.n_units - 1}; no unit {bad[0]}")
        said = review_hypotheses(session, found) if hypotheses else {}
        run = session.get(Model, found[0].model_id)
        run_dir, model_id = Path(run.run_dir), run.id
        analysed = max(analysis_setting(b.config, "n_tokens") for b in found)
    if not (run_dir / "lm").is_dir():
        raise MonoscopeError(f"autointerp needs the run folder {run_dir} (held-out text and the LM), which is not "
                             "on this machine")
    limit_cpu_threads()
    started = time.perf_counter()
    wanted = {b: set(i) for b, i in chosen.items()}
    for b, i in said:
        wanted.setdefault(b, set()).add(i)
    pool = load_pool(run_dir, {b: sorted(i) for b, i in wanted.items() if i}, analysed_tokens=analysed,
                     n_rows=POOL_ROWS, logit_k=cfg.logit_to)
    pool_seconds = time.perf_counter() - started
    backend = open_llm(settings.llm, concurrency=settings.llm_concurrency, timeout=settings.llm_timeout,
                       retries=settings.llm_retries)
    try:
        stats = run_autointerp(maker, backend, pool, chosen, cfg, model_id=model_id, force=force,
                               hypotheses=said)
    finally:
        backend.close()
    stats.seconds["held-out pool"] = pool_seconds
    peak = getattr(backend, "peak_concurrency", None)
    print(f"autointerp with {backend.name}: {stats.line()}; held-out pool {pool_seconds:.1f} s"
          + (f"; peak concurrency {peak}" if peak is not None else ""))


def _config(mix: str | None, seed: int) -> AutointerpConfig:
    """AutointerpConfig with the --mix counts (non-negative integers of its fields) and the seed."""
    from dataclasses import fields, replace

    counts = {f.name for f in fields(AutointerpConfig) if f.type in ("int", int) and f.name != "seed"}
    changes = {}
    for item in (t.strip() for t in (mix or "").split(",") if t.strip()):
        name, _, value = item.partition("=")
        if name.strip() not in counts or not value.strip().isdigit():
            raise MonoscopeError(f"--mix takes NAME=N pairs of {', '.join(sorted(counts))}; got {item!r}")
        changes[name.strip()] = int(value)
    cfg = replace(AutointerpConfig(), seed=seed, **changes)
    if cfg.logit_to < cfg.logit_from:
        raise MonoscopeError(f"--mix: logit_to ({cfg.logit_to}) is below logit_from ({cfg.logit_from})")
    return cfg


def _parse_units(text: str, names: list[str]) -> dict[str, list[int]]:
    """{basis: indexes} of `basis:index,...`, each basis one of --bases."""
    chosen: dict[str, list[int]] = {}
    for item in (t.strip() for t in text.split(",") if t.strip()):
        basis, _, index = item.rpartition(":")
        if basis not in names or not (index.isascii() and index.isdigit() and len(index) < 10):
            raise MonoscopeError(f"--units takes basis:index pairs of the --bases, got {item!r}")
        chosen.setdefault(basis, []).append(int(index))
    return chosen
