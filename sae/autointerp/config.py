"""The autointerp protocol's settings: how many examples of each kind the explainer sees and the scorers test."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AutointerpConfig:
    """The example mix (the paper's appendix: the top of the distribution, a few from each activation interval,
    random text, and the unit's top tokens in other contexts) for explaining and for scoring, and the scorers' sizes.

    The explainer sees the unit page's windows (top contexts, interval samples); the scorers use the review sample's
    windows, which share no token with those (sae/analysis/review_sample.py), and random held-out windows from rows
    the explainer's random windows never come from, so no scoring example was ever shown to the explainer.
    """

    # explain
    explain_top: int = 10  # the largest activations
    explain_per_interval: int = 1  # samples from each non-empty activation interval (the lowest first)
    explain_random: int = 3  # random held-out windows (mostly silent: what the unit is not)
    explain_top_token_contexts: int = 3  # the unit's max tokens in other contexts
    explain_logits: int = 10  # promoted and suppressed tokens shown
    explain_max_tokens: int = 40  # the answer's length cap (a short phrase)
    # simulation (the paper's): predict 0-9 on every token of held-out windows, Spearman over all tokens
    sim_top: int = 3
    sim_per_interval: int = 1
    sim_random: int = 3
    sim_top_token_contexts: int = 2
    # detection and fuzzing (delphi's): balanced accuracy of yes/no answers
    detect_active: int = 6
    detect_silent: int = 6
    fuzz_examples: int = 6  # half highlighted correctly, half on tokens where the unit is silent
    # the logit test (the paper's): the tokens ranked logit_from..logit_to by direct effect against random ones
    logit_from: int = 10
    logit_to: int = 60
    logit_random: int = 50
    seed: int = 0
