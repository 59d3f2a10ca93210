"""One unit's evidence for the protocol, chosen from what the analysis kept and from random held-out text.

Who sees what:
- the explainer: the unit page's windows (its top contexts and interval samples), random windows and windows around
  the unit's max tokens in other contexts, all from the explainer's half of the held-out pool;
- the scorers: the review sample's windows (which share no token with any window of the page), and random and
  max-token windows from the other half of the pool. So no scoring example was ever in the explainer's prompt.
Selections are seeded by (seed, basis, unit): the same run picks the same examples.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from sae.autointerp.config import AutointerpConfig
from sae.autointerp.windows import Window, quantise


@dataclass(frozen=True)
class Source:
    """Windows to choose from: `top` in rank order, `intervals[i]` the samples of activation interval i, and
    held-out windows (`random`, `top_token`) already with this unit's activations."""

    top: list[Window]
    intervals: list[list[Window]]
    random: list[Window]
    top_token: list[Window]


@dataclass(frozen=True)
class Evidence:
    basis: str
    index: int
    max_activation: float
    explain: list[Window]
    top_logits: list[str]
    bottom_logits: list[str]
    simulate: list[Window]
    detect_active: list[Window]
    detect_silent: list[Window]
    fuzz: list[Window]
    logit_positive: list[str]
    logit_negative: list[str]
    notes: dict = field(default_factory=dict)


def unit_rng(seed: int, basis: str, index: int, purpose: str) -> np.random.Generator:
    """A generator fixed by (seed, basis, unit, purpose): choices do not depend on which other units run."""
    return np.random.default_rng([seed, zlib.crc32(basis.encode()), index, zlib.crc32(purpose.encode())])


def _pick(rng: np.random.Generator, windows: list[Window], n: int) -> list[Window]:
    if n <= 0 or not windows:
        return []
    return [windows[i] for i in sorted(rng.choice(len(windows), size=min(n, len(windows)), replace=False))]


def mix(rng: np.random.Generator, source: Source, n_top: int, per_interval: int, n_random: int,
        n_top_token: int) -> list[Window]:
    """The paper's mix: the n_top largest, per_interval from each non-empty interval, random and max-token windows."""
    chosen = list(source.top[:n_top])
    for samples in source.intervals:
        chosen += _pick(rng, samples, per_interval)
    return chosen + _pick(rng, source.random, n_random) + _pick(rng, source.top_token, n_top_token)


def is_silent(w: Window, max_activation: float) -> bool:
    """True when no scored token of the window reaches level 1 of the unit's 0-9 scale."""
    return max([q for q, s in zip(quantise(w.acts, max_activation), w.scored) if s], default=0) == 0


def build(basis: str, index: int, max_activation: float, cfg: AutointerpConfig, *, page: Source, held_out: Source,
          top_logits: list[str], bottom_logits: list[str], logit_ranked: list[str],
          vocabulary: list[str]) -> Evidence:
    """Choose the explainer's and the scorers' examples of one unit (see the module docstring).

    `page`: the unit page's windows and the explainer's half of the pool; `held_out`: the review sample's windows and
    the scorers' half. `logit_ranked`: the unit's promoted tokens by direct effect, at least cfg.logit_to of them."""
    rng = lambda purpose: unit_rng(cfg.seed, basis, index, purpose)  # noqa: E731
    explain = mix(rng("explain"), page, cfg.explain_top, cfg.explain_per_interval, cfg.explain_random,
                  cfg.explain_top_token_contexts)
    simulate = mix(rng("simulate"), held_out, cfg.sim_top, cfg.sim_per_interval, cfg.sim_random,
                   cfg.sim_top_token_contexts)
    active = [w for w in held_out.top + [s for samples in held_out.intervals for s in samples]
              if not is_silent(w, max_activation)]
    silent = [w for w in held_out.random + held_out.top_token if is_silent(w, max_activation)]
    positive = logit_ranked[cfg.logit_from:cfg.logit_to]
    excluded = set(logit_ranked[:cfg.logit_to])
    pool = [t for t in vocabulary if t not in excluded]
    negative = [pool[i] for i in rng("logit").choice(len(pool), size=min(cfg.logit_random, len(pool)),
                                                     replace=False)] if pool else []
    return Evidence(basis=basis, index=index, max_activation=max_activation, explain=explain,
                    top_logits=top_logits[:cfg.explain_logits], bottom_logits=bottom_logits[:cfg.explain_logits],
                    simulate=simulate, detect_active=_pick(rng("detect"), active, cfg.detect_active),
                    detect_silent=_pick(rng("detect-silent"), silent, cfg.detect_silent),
                    fuzz=_pick(rng("fuzz"), active, cfg.fuzz_examples), logit_positive=positive,
                    logit_negative=negative)
