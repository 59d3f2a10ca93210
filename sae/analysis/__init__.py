"""Stage 5, analysis: per-unit statistics of the neuron basis and every SAE, as a map over shards and a reduce.

`run.run_analysis` is the entry point; `config` what an analysis computes, `shard` the map, `executor` where its shards
run (here or on Ray), `state` the mergeable per-unit state, `spill` the on-disk non-zeros between the passes, `reduce`
the merge and second pass, `logits` the weight-based views (logit effects, links). The reconstruction and loss metrics
are sae.dictionary.metrics's, the same as training's. The names below load their module on first use.
"""

from sae.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "sae.analysis.config": ["AnalysisConfig"],
    "sae.analysis.run": ["list_saes", "run_analysis"],
    "sae.corpus.build": ["load_heldout"],
})
