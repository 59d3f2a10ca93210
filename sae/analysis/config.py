"""What an analysis computes: its config, validated; torch-free, so the command line reads its defaults cheaply."""

from __future__ import annotations

from dataclasses import dataclass

from sae.analysis.proxies import BUILTIN_NAMES, resolve
from sae.conventions import DENSE_DENSITY, ULTRALOW_DENSITY
from sae.errors import MonoscopeError


@dataclass(frozen=True)
class AnalysisConfig:
    """What an analysis computes; defaults are the paper visualiser's where it has one."""

    n_tokens: int = 1 << 20  # held-out tokens analysed (all of them when fewer)
    batch_sequences: int = 64
    top_k: int = 20
    context_before: int = 24
    context_after: int = 8
    n_intervals: int = 11
    samples_per_interval: int = 5
    # The review sample (sae/analysis/review_sample.py): windows kept for blind reviews, sharing no token with the
    # windows above, which the open unit pages show.
    review_top_k: int = 20
    review_samples_per_interval: int = 5
    act_hist_bins: int = 50
    logit_k: int = 10
    logit_hist_bins: int = 50
    # The conventions this analysis follows, in its config so that analyses made under older ones are redone.
    # 2: BOS left out of every statistic and splice; logit effects through ln_final's gain with W_U centred.
    # 3: per-token ablation effects of every stored window; mean ablation and KL divergence in the LM-loss metrics.
    # 4: held-out rows in the corpus's seeded order (sae.corpus.build.load_heldout).
    # 5: loss recovered and KL over 262,144 tokens (the paper's figures need more than a handful of files).
    conventions: int = 5
    n_links: int = 5
    # LM-loss metrics (clean, zero- and mean-ablated, spliced: 2 + n_SAE unembeddings per token for a one-layer LM,
    # as many forwards for another) use the first loss_tokens analysed tokens (rows in the seeded order: spread over
    # the whole held-out split); None: all of them, 0: none.
    loss_tokens: int | None = 1 << 18
    loss_batch_sequences: int = 16  # sequences per loss forward, for an LM without sae.lm.heads.mlp_head
    seed: int = 0  # of the reservoir keys
    ultralow_threshold: float = ULTRALOW_DENSITY
    dense_threshold: float = DENSE_DENSITY
    # Specificity proxies (sae/analysis/proxies.py): built-in names, and users' `regex:...` ones. The code-aware ones
    # are left out for a corpus that is not Python.
    proxies: tuple[str, ...] = BUILTIN_NAMES
    extra_proxies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "proxies", tuple(self.proxies))  # a manifest's JSON list compares as a tuple
        object.__setattr__(self, "extra_proxies", tuple(self.extra_proxies))
        resolve(self.proxies, self.extra_proxies)  # unknown names and bad patterns fail before any work
        if min(self.review_top_k, self.review_samples_per_interval) < 0:
            raise MonoscopeError(f"analysis needs review_top_k and review_samples_per_interval >= 0, got "
                                 f"{self.review_top_k} and {self.review_samples_per_interval}")
        if self.n_tokens <= 0 or self.batch_sequences <= 0 or (self.loss_tokens is not None and self.loss_tokens < 0):
            raise MonoscopeError(f"analysis needs n_tokens and batch_sequences positive and loss_tokens >= 0 (or "
                                 f"None), got {self.n_tokens}, {self.batch_sequences} and {self.loss_tokens}")
