"""Corpora to token shards: readers (Pile jsonl/jsonl.zst, plain text, the embedded Python stdlib),
:class:`CorpusConfig`, and :func:`tokenize_corpus`, which writes cached, resumable uint32 shards.

Example::

    from probsig_jax.corpus import CorpusConfig, tokenize_corpus
    from probsig_jax.tokenizer import qwen2_tokenizer

    shards = tokenize_corpus(CorpusConfig(), qwen2_tokenizer(), "cache/tokens")
    tokens = shards.tokens()          # uint32, shape (shards.num_tokens,)
"""

from probsig_jax.corpus import embedded
from probsig_jax.corpus.config import FORMATS, CorpusConfig, iter_documents, source_fingerprint, utf8_len
from probsig_jax.corpus.readers import CorpusError, ReadStats, read_pile, read_text
from probsig_jax.corpus.shards import TokenShards, default_cache_dir, open_shards, shard_directory, tokenize_corpus

__all__ = [
    "FORMATS", "CorpusConfig", "CorpusError", "ReadStats", "TokenShards", "default_cache_dir", "embedded",
    "iter_documents",
    "open_shards", "read_pile", "read_text", "shard_directory", "source_fingerprint",
    "tokenize_corpus", "utf8_len",
]
