"""The project's scientific conventions, each defined once: where activations come from, what the neuron basis
is called, the density thresholds that name a unit ultralow or dense (dead is "never fired"), and BOS."""

from __future__ import annotations

HOOK_POST = "blocks.0.mlp.hook_post"  # MLP post-activations of the one layer: what every SAE is trained on
NEURON_BASIS = "neurons"  # the name of the MLP neuron basis; no SAE may take it
ULTRALOW_DENSITY = 1e-5  # a live unit firing on fewer than this share of tokens is ultralow
DENSE_DENSITY = 1e-2  # a unit firing on more than this share of tokens is dense
# Every token row starts with BOS. Its activation is the same whatever the text, so it is left out of SAE training,
# of every metric and statistic (density, L0, MSE, FVU, histograms, loss-recovered splices) and can never be an
# example's max token; context windows still show it.
BOS_POSITION = 0
# Held-out rows are taken in one seeded permutation of the held-out split, made once per corpus
# (corpus/heldout_order.npy): every consumer (LM loss, SAE metrics, analysis, matches, reviews) reads rows in that
# order, so a sample of any size spreads over the whole split instead of its first files (sorted by path).
HELDOUT_ORDER_SEED = 0
# Feature families (the paper's splitting graph): two features of dictionaries of one LM are joined when the masked
# cosine of their activations (sae/analysis/masked_cosine.py) is at least FAMILY_THRESHOLD, the paper's ~0.4.
# `monoscope match` keeps every edge from FAMILY_FLOOR up, so the pages can draw the graph at another threshold.
FAMILY_THRESHOLD = 0.4
FAMILY_FLOOR = 0.2
