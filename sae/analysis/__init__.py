"""Stage 5, analysis: per-unit statistics of the neuron basis and every SAE, as a map over shards and a reduce.

`run.run_analysis` is the entry point; `shard` is the map, `executor` where its shards run (here or on Ray), `state`
the mergeable per-unit state, `spill` the on-disk non-zeros between the passes, `reduce` the merge and second pass,
`logits` the weight-based views (logit effects, links). The reconstruction and loss metrics are sae.dictionary.metrics's, the same as training's.
"""

from sae.analysis.run import list_saes, load_heldout, run_analysis
from sae.analysis.shard import AnalysisConfig

__all__ = ["AnalysisConfig", "list_saes", "load_heldout", "run_analysis"]
