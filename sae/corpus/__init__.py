"""Stage 1, corpus: a text source -> a byte-level BPE tokenizer -> fixed-length token rows (train / held-out).

`config` is light; the names below load their module on first use.
"""

from sae.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "sae.corpus.config": ["CorpusConfig"],
    "sae.corpus.build": ["build_corpus", "load_corpus_meta", "load_heldout", "load_tokens",
                         "read_token_strings"],
    "sae.corpus.sources": ["Document", "read_source"],
    "sae.corpus.tokenizer": ["load_hf_tokenizer", "token_strings", "train_bpe"],
})
