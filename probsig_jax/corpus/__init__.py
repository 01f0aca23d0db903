"""Corpora to token ids: readers (Pile jsonl/jsonl.zst, plain text, the embedded Python stdlib),
:class:`CorpusConfig`, the tokenizers, :func:`tokenize_corpus` (cached, resumable uint32 shards), vocabulary
compaction (:class:`VocabularyMap`) and the token sets an analysis compares.

Example::

    from probsig_jax.corpus import CorpusConfig, qwen2_tokenizer, tokenize_corpus

    shards = tokenize_corpus(CorpusConfig(), qwen2_tokenizer(), "cache/tokens")
    tokens = shards.tokens()          # uint32, shape (shards.num_tokens,)
"""

from probsig_jax.corpus import embedded
from probsig_jax.corpus.config import FORMATS, CorpusConfig, iter_documents, source_fingerprint, utf8_len
from probsig_jax.corpus.readers import CorpusError, ReadStats, read_pile, read_text
from probsig_jax.corpus.shards import TokenShards, default_cache_dir, open_shards, shard_directory, tokenize_corpus
from probsig_jax.corpus.tokenizer import Tokenizer, hf_tokenizer, load_tokenizer, qwen2_tokenizer
from probsig_jax.corpus.vocab import VocabularyMap

__all__ = [
    "FORMATS", "CorpusConfig", "CorpusError", "ReadStats", "TokenShards", "Tokenizer", "VocabularyMap",
    "default_cache_dir", "embedded", "hf_tokenizer", "iter_documents", "load_tokenizer", "open_shards", "qwen2_tokenizer",
    "read_pile", "read_text", "shard_directory", "source_fingerprint", "tokenize_corpus", "utf8_len",
]
