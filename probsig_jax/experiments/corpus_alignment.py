"""Shared by E4 (``simulate llm``) and E5 (``simulate pretrained``): corpus -> token ids -> signatures ->
the token sets and similarity targets that a model's embeddings are compared with (PAPER section 7).

For each token set (the N most frequent tokens; the digits "0".."9"; a user list) the targets are
``(n, n)`` similarity matrices:

- ``input_cosine``: cosine between the next-token distributions Q_s (the paper's phi_next; its
  ``R_cos(W_E, phi_next)`` compares them with the input embeddings);
- ``input_M``: cosine between the columns of the signature matrix M (centred and frequency weighted: the
  quantity the linear theory says drives the embeddings);
- ``output_cosine`` / ``output_M``: the same on the unembedding side (previous-token distributions R_y,
  the paper's phi_pre, and the rows of M);
- ``theory_embedding`` / ``theory_unembedding``: the linear theory's predicted Gram at the chosen time
  (a truncated SVD of M; :mod:`probsig_jax.theory.corpus`), computed from corpus counts alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from probsig_jax.analysis import alignment_metrics, cosine_similarity_matrix, weak_pair_precision
from probsig_jax.signatures.corpus import CorpusPairCounts, signature_similarity, top_tokens
from probsig_jax.theory.corpus import max_modes, predicted_similarity, time_for_growth, truncated_signature_modes
from probsig_jax.validation import ConfigError, require
from probsig_jax.vocab import VocabularyMap

TARGETS = ("input_cosine", "input_M", "output_cosine", "output_M", "theory_embedding", "theory_unembedding")
# (what is compared, which weights, which target): the rows of every alignment table
COMPARISONS = (
    ("embedding_vs_signature", "embedding", "input_cosine"),
    ("embedding_vs_M", "embedding", "input_M"),
    ("embedding_vs_theory", "embedding", "theory_embedding"),
    ("unembedding_vs_signature", "unembedding", "output_cosine"),
    ("unembedding_vs_theory", "unembedding", "theory_unembedding"),
)


def default_cache_dir() -> Path:
    """Token-shard cache: ``$PROBSIG_CACHE`` or ``~/.cache/probsig-jax``, then ``/shards``."""
    root = os.environ.get("PROBSIG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "probsig-jax")
    return Path(root) / "shards"


@dataclass(frozen=True)
class TokenSet:
    """Tokens compared together.

    Attributes:
      name: ``top``, ``digits`` or ``list``.
      model_ids: (n,) ids in the model's vocabulary (compact ids after compaction).
      tokenizer_ids: (n,) the tokenizer's ids.
      labels: (n,) readable token strings (plot labels).
    """

    name: str
    model_ids: np.ndarray
    tokenizer_ids: np.ndarray
    labels: tuple[str, ...]


def _single_token_ids(tokenizer, strings: Sequence[str]) -> list[tuple[str, int]]:
    out = []
    for text in strings:
        ids = tokenizer.encode(text)
        if len(ids) == 1:
            out.append((text, int(ids[0])))
    return out


def select_token_sets(pc: CorpusPairCounts, tokenizer, vocab_map: VocabularyMap, *, top_n: int,
                      digits: bool, token_list: Sequence[str] = (), exclude_tokenizer_ids: Sequence[int] = ()
                      ) -> list[TokenSet]:
    """The token sets, keeping only tokens that occur as context and as label in the counted stream (others
    have no signature). A set with fewer than 3 tokens is dropped; the ``top`` set must exist."""
    context, labels = np.asarray(pc.context_weights), np.asarray(pc.label_counts)
    exclude = [int(i) for i in vocab_map.to_compact(np.asarray(
        [t for t in exclude_tokenizer_ids if vocab_map.contains(np.asarray([t]))[0]], dtype=np.int64))]

    def make(name: str, model_ids: Sequence[int]) -> TokenSet | None:
        ids = np.asarray([i for i in model_ids if context[i] > 0 and labels[i] > 0], dtype=np.int64)
        if ids.size < 3:
            return None
        original = vocab_map.to_original(ids)
        return TokenSet(name, ids, original, tuple(tokenizer.token_strings(original.tolist())))

    sets = [make("top", top_tokens(pc, top_n, exclude=exclude))]
    if sets[0] is None:
        raise ConfigError("top_tokens", "fewer than 3 tokens occur in the corpus; use a larger corpus")
    if digits:
        found = _single_token_ids(tokenizer, [str(d) for d in range(10)])
        present = [vocab_map.to_compact(np.asarray([i]))[0] for _, i in found if vocab_map.contains(np.asarray([i]))[0]]
        sets.append(make("digits", present))
    if token_list:
        found = _single_token_ids(tokenizer, token_list)
        present = [vocab_map.to_compact(np.asarray([i]))[0] for _, i in found if vocab_map.contains(np.asarray([i]))[0]]
        sets.append(make("list", present))
    return [s for s in sets if s is not None]


def theory_time(pc: CorpusPairCounts, rank: int, growth: float, seed: int = 0):
    """``(modes, t)``: the truncated SVD of M (``rank`` modes, at most what the solver accepts for this
    corpus, :func:`~probsig_jax.theory.corpus.max_modes`) and the time at which the
    leading mode has grown ``growth``-fold."""
    rank = min(int(rank), max_modes(pc))
    require(rank >= 1, "theory_rank", f"the corpus supports no singular mode (vocabulary {pc.vocab_size})")
    modes = truncated_signature_modes(pc, rank, seed=seed)
    return modes, time_for_growth(modes, growth)


def similarity_targets(pc: CorpusPairCounts, modes, t: float, token_set: TokenSet) -> dict[str, np.ndarray]:
    """The ``TARGETS`` matrices of one token set."""
    ids = token_set.model_ids
    return {
        "input_cosine": signature_similarity(pc, ids, side="input", kind="cosine"),
        "input_M": signature_similarity(pc, ids, side="input", kind="M"),
        "output_cosine": signature_similarity(pc, ids, side="output", kind="cosine"),
        "output_M": signature_similarity(pc, ids, side="output", kind="M"),
        "theory_embedding": np.asarray(predicted_similarity(modes, ids, t, side="embedding")),
        "theory_unembedding": np.asarray(predicted_similarity(modes, ids, t, side="unembedding")),
    }


def weight_similarities(W_E: Any, W_U: Any, token_set: TokenSet) -> dict[str, np.ndarray]:
    """Cosine-similarity matrices of the set's input-embedding and unembedding rows ((V, H) matrices)."""
    ids = token_set.model_ids
    return {"embedding": cosine_similarity_matrix(np.asarray(W_E, dtype=np.float64)[ids]),
            "unembedding": cosine_similarity_matrix(np.asarray(W_U, dtype=np.float64)[ids])}


def alignment_table(weights: dict[str, np.ndarray], targets: dict[str, np.ndarray], *, k: int, q: float
                    ) -> dict[str, dict[str, float]]:
    """``comparison -> alignment_metrics`` (plus ``weak_pair_precision`` and the chance level ``q / 100``)."""
    table = {}
    for name, side, target in COMPARISONS:
        metrics = alignment_metrics(weights[side], targets[target], k=k, q=q)
        metrics["weak_pair_precision"] = weak_pair_precision(weights[side], targets[target], q)
        metrics["chance_precision"] = q / 100.0
        table[name] = metrics
    return table


def theory_vs_signature_table(targets: dict[str, np.ndarray], *, k: int, q: float) -> dict[str, dict[str, float]]:
    """How well the theory's prediction matches the signature similarities (no training involved)."""
    return {"theory_embedding_vs_signature": alignment_metrics(targets["theory_embedding"], targets["input_cosine"],
                                                               k=k, q=q),
            "theory_unembedding_vs_signature": alignment_metrics(targets["theory_unembedding"],
                                                                 targets["output_cosine"], k=k, q=q)}


def strong_pair_finding(table: dict[str, dict[str, float]]) -> dict[str, Any]:
    """PAPER section 7's qualitative result, tested: is agreement stronger on the strongest signature pairs?

    For ``embedding_vs_signature``: strong-pair precision (top q %) against the weak-pair precision (bottom
    q %) and the chance level. ``holds`` is True when the strong-pair precision beats both."""
    m = table["embedding_vs_signature"]
    holds = m["strong_pair_precision"] > max(m["weak_pair_precision"], m["chance_precision"])
    return {"strong_pair_precision": m["strong_pair_precision"], "weak_pair_precision": m["weak_pair_precision"],
            "chance_precision": m["chance_precision"], "holds": bool(holds),
            "statement": ("agreement is stronger on the strongly similar pairs" if holds else
                          "agreement is NOT stronger on the strongly similar pairs in this run")}


def check_window(window: int) -> int:
    require(isinstance(window, int) and 1 <= window <= 64, "window", f"must be an integer in [1, 64], got {window!r}")
    return window
