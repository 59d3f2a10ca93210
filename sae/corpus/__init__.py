"""Stage 1, corpus: a text source -> a byte-level BPE tokenizer -> fixed-length token rows (train / held-out)."""

from sae.corpus.build import CorpusConfig, build_corpus, load_corpus_meta, load_tokens
from sae.corpus.sources import Document, read_source
from sae.corpus.tokenizer import load_hf_tokenizer, token_strings, train_bpe

__all__ = ["CorpusConfig", "Document", "build_corpus", "load_corpus_meta", "load_hf_tokenizer", "load_tokens",
           "read_source", "token_strings", "train_bpe"]
