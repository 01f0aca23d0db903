"""The token sets a corpus analysis compares (PAPER section 7): the most frequent tokens, the digits, a list.

Only tokens that occur both as context and as label in the counted stream have a signature on both sides;
others are dropped, and a set left with fewer than 3 tokens is dropped with it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from probsig_jax.analysis.alignment import AlignmentConfig, TokenSet
from probsig_jax.corpus.vocab import VocabularyMap
from probsig_jax.signatures.corpus import top_tokens
from probsig_jax.signatures.pair_counts import CorpusPairCounts
from probsig_jax.validation import ConfigError

DIGITS = tuple(str(d) for d in range(10))


def single_token_ids(tokenizer, strings: Sequence[str]) -> list[int]:
    """The ids of the strings that are one token each (others are skipped)."""
    encoded = (tokenizer.encode(text) for text in strings)
    return [int(ids[0]) for ids in encoded if len(ids) == 1]


def select_token_sets(pc: CorpusPairCounts, tokenizer, vocab_map: VocabularyMap, alignment: AlignmentConfig, *,
                      exclude_tokenizer_ids: Sequence[int] = ()) -> list[TokenSet]:
    """The sets named by ``alignment.token_sets`` (``top``, ``digits``) and, when ``alignment.token_list`` is
    given, ``list``; ids are the model's (compact) ids of ``pc``. ``exclude_tokenizer_ids`` (e.g. the
    end-of-text token) never enter the ``top`` set."""
    context, labels = np.asarray(pc.context_weights), np.asarray(pc.label_counts)
    present = np.asarray([t for t in exclude_tokenizer_ids if vocab_map.contains(np.asarray([t]))[0]], dtype=np.int64)
    exclude = [int(i) for i in vocab_map.to_compact(present)]

    def make(name: str, model_ids: Sequence[int]) -> TokenSet | None:
        ids = np.asarray([i for i in model_ids if context[i] > 0 and labels[i] > 0], dtype=np.int64)
        if ids.size < 3:
            return None
        original = vocab_map.to_original(ids)
        return TokenSet(name, ids, tuple(tokenizer.token_strings(original.tolist())), original)

    def from_strings(name: str, strings: Sequence[str]) -> TokenSet | None:
        found = np.asarray(single_token_ids(tokenizer, strings), dtype=np.int64)
        return make(name, vocab_map.to_compact(found[vocab_map.contains(found)]))

    sets = []
    for kind in alignment.token_sets:
        if kind == "top":
            top = make("top", top_tokens(pc, alignment.top_tokens, exclude=exclude))
            if top is None:
                raise ConfigError("top_tokens", "fewer than 3 tokens occur in the corpus; use a larger corpus")
            sets.append(top)
        elif kind == "digits":
            sets.append(from_strings("digits", DIGITS))
        else:
            raise ConfigError("token_sets", f"a corpus has no {kind!r} token set (top, digits, or a token_list)")
    if alignment.token_list:
        sets.append(from_strings("list", alignment.token_list))
    sets = [s for s in sets if s is not None]
    if not sets:
        raise ConfigError("token_sets", "no token set has 3 or more tokens that occur in the corpus")
    for s in sets:
        alignment.check_token_set(s)
    return sets
