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

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from probsig_jax import plots
from probsig_jax.analysis import (alignment_metrics, cosine_similarity_matrix, offdiagonal, pearson, spearman,
                                  weak_pair_precision)
from probsig_jax.signatures.corpus import CorpusPairCounts, count_context_pairs, signature_similarity, top_tokens
from probsig_jax.theory.corpus import max_modes, predicted_similarity, time_for_growth, truncated_signature_modes
from probsig_jax.validation import ConfigError, require, require_float, require_int
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


def _single_token_ids(tokenizer, strings: Sequence[str]) -> list[int]:
    """The ids of the strings that are one token each (others are skipped)."""
    encoded = (tokenizer.encode(text) for text in strings)
    return [int(ids[0]) for ids in encoded if len(ids) == 1]


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
    for name, strings in (("digits", [str(d) for d in range(10)] if digits else []), ("list", list(token_list))):
        if strings:
            found = np.asarray(_single_token_ids(tokenizer, strings), dtype=np.int64)
            sets.append(make(name, vocab_map.to_compact(found[vocab_map.contains(found)])))
    return [s for s in sets if s is not None]


def theory_time(pc: CorpusPairCounts, rank: int, growth: float, seed: int = 0, method: str = "arpack"):
    """``(modes, t)``: the truncated SVD of M (``rank`` modes, at most what the solver accepts for this
    corpus, :func:`~probsig_jax.theory.corpus.max_modes`) and the time at which the
    leading mode has grown ``growth``-fold."""
    rank = min(int(rank), max_modes(pc, method))
    require(rank >= 1, "theory_rank", f"the corpus supports no singular mode (vocabulary {pc.vocab_size})")
    modes = truncated_signature_modes(pc, rank, method=method, seed=seed)
    return modes, time_for_growth(modes, growth)


def similarity_targets(pc: CorpusPairCounts, modes, t: float, token_set: TokenSet,
                       theory_gram: str = "learned") -> dict[str, np.ndarray]:
    """The ``TARGETS`` matrices of one token set (``theory_gram``: see :class:`CorpusAnalysisConfig`)."""
    ids = token_set.model_ids
    init = theory_gram == "expected"
    return {
        "input_cosine": signature_similarity(pc, ids, side="input", kind="cosine"),
        "input_M": signature_similarity(pc, ids, side="input", kind="M"),
        "output_cosine": signature_similarity(pc, ids, side="output", kind="cosine"),
        "output_M": signature_similarity(pc, ids, side="output", kind="M"),
        "theory_embedding": np.asarray(predicted_similarity(modes, ids, t, side="embedding", include_init=init)),
        "theory_unembedding": np.asarray(predicted_similarity(modes, ids, t, side="unembedding",
                                                              include_init=init)),
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


MIN_STRONG_PAIRS = 5


def strong_pair_finding(table: dict[str, dict[str, float]]) -> dict[str, Any]:
    """PAPER section 7's qualitative result, tested: is agreement stronger on the strongest signature pairs?

    For ``embedding_vs_signature``: strong-pair precision (top q %) against the weak-pair precision (bottom
    q %) and the chance level. ``holds`` is True when the strong-pair precision beats both, and ``None``
    when the top q % holds fewer than ``MIN_STRONG_PAIRS`` pairs (e.g. the 45 digit pairs at q = 5 %)."""
    m = table["embedding_vs_signature"]
    n = m["num_tokens"]
    pairs = max(1, round(m["q"] / 100.0 * n * (n - 1) / 2))
    finding = {"strong_pair_precision": m["strong_pair_precision"], "weak_pair_precision": m["weak_pair_precision"],
               "chance_precision": m["chance_precision"], "pairs_compared": int(pairs)}
    if pairs < MIN_STRONG_PAIRS:
        return finding | {"holds": None, "statement": f"too few pairs ({pairs}) in the top q % for the strong-pair test"}
    holds = m["strong_pair_precision"] > max(m["weak_pair_precision"], m["chance_precision"])
    return finding | {"holds": bool(holds),
                      "statement": ("agreement is stronger on the strongly similar pairs" if holds else
                                    "agreement is NOT stronger on the strongly similar pairs in this run")}


@dataclass(frozen=True)
class CorpusAnalysisConfig:
    """Signatures, token sets, theory prediction and metrics (shared by E4 and E5)."""

    window: int = 1
    """Signature window w: context = the w tokens before the next token (1 = bigram, the paper's phi_next)."""
    top_tokens: int = 100
    """Size of the top-frequency token set (the end-of-text token excluded)."""
    digits: bool = True
    """Also analyse the digit tokens 0..9."""
    token_list: tuple[str, ...] = ()
    """Extra token set: strings that are single tokens (others are skipped)."""
    theory_rank: int = 64
    """Number of singular modes of M in the linear-theory prediction (truncated SVD)."""
    theory_svd: Literal["arpack", "randomized"] = "arpack"
    """Truncated SVD of the sparse M: ARPACK (scipy svds) or a randomized range finder (faster, approximate
    in the trailing modes)."""
    theory_growth: float = 2.0
    """The theory's prediction is taken when its leading mode has grown this many times (> 1)."""
    theory_gram: Literal["learned", "expected"] = "learned"
    """Which predicted Gram: the learned part of the closed form alone (the geometry once the embeddings have
    moved far from their initialisation, as in a trained model) or the full expected Gram with the isotropic
    initialisation term (the early, small-t regime)."""
    topk: int = 5
    """k of the top-k neighbour overlap."""
    strong_pair_percent: float = 5.0
    """q: strong (weak) pairs are the top (bottom) q percent by signature similarity."""

    def validate(self) -> "CorpusAnalysisConfig":
        require_int(self.window, "window", minimum=1, maximum=64)
        require_int(self.top_tokens, "top_tokens", minimum=3, maximum=5000)
        require_int(self.theory_rank, "theory_rank", minimum=1, maximum=4096)
        require(self.theory_svd in ("arpack", "randomized"), "theory_svd",
                f"must be arpack or randomized, got {self.theory_svd!r}")
        require_float(self.theory_growth, "theory_growth", minimum=1.0, maximum=1e6, strict_minimum=True)
        require(self.theory_gram in ("learned", "expected"), "theory_gram",
                f"must be learned or expected, got {self.theory_gram!r}")
        require_int(self.topk, "topk", minimum=1)
        require_float(self.strong_pair_percent, "strong_pair_percent", minimum=0.0, maximum=50.0,
                      strict_minimum=True)
        return self


@dataclass
class CorpusAlignment:
    """Everything the analysis derives from the corpus counts, before looking at any model.

    Attributes:
      counts: the windowed (context, next-token) counts.
      token_sets: the analysed token sets.
      targets: set name -> the ``TARGETS`` similarity matrices.
      theory_rank, theory_time: the truncated SVD's rank and the prediction time.
      top_singular_values: the leading singular values of M.
    """

    counts: CorpusPairCounts
    token_sets: list[TokenSet]
    targets: dict[str, dict[str, np.ndarray]]
    theory_rank: int
    theory_time: float
    top_singular_values: list[float]

    def metrics(self, weights: dict[str, dict[str, np.ndarray]], key: str, config: CorpusAnalysisConfig
                ) -> dict[str, Any]:
        """Per token set: ``key`` -> the alignment table of ``weights``, the theory-vs-signature table and the
        strong-pair finding."""
        k, q = config.topk, config.strong_pair_percent
        out = {}
        for s in self.token_sets:
            table = alignment_table(weights[s.name], self.targets[s.name], k=k, q=q)
            out[s.name] = {"num_tokens": len(s.model_ids), "tokens": list(s.labels), key: table,
                           "theory_vs_signature": theory_vs_signature_table(self.targets[s.name], k=k, q=q),
                           "strong_pairs": strong_pair_finding(table)}
        return out


def analyse_corpus(ids: np.ndarray, vocab_size: int, tokenizer, vocab_map: VocabularyMap,
                   config: CorpusAnalysisConfig, *, seed: int = 0, quiet: bool = True) -> CorpusAlignment:
    """Count ``ids`` (model ids), take the truncated SVD, choose the token sets, compute the targets."""
    config = config.validate()
    pc = count_context_pairs(ids, vocab_size, config.window, quiet=quiet)
    modes, t = theory_time(pc, config.theory_rank, config.theory_growth, seed=seed, method=config.theory_svd)
    token_sets = select_token_sets(pc, tokenizer, vocab_map, top_n=config.top_tokens, digits=config.digits,
                                   token_list=config.token_list, exclude_tokenizer_ids=[tokenizer.eos_id])
    targets = {s.name: similarity_targets(pc, modes, t, s, config.theory_gram) for s in token_sets}
    return CorpusAlignment(pc, token_sets, targets, int(modes.S.shape[0]), float(t),
                           np.asarray(modes.S[:10]).tolist())


def cluster_order(similarity: np.ndarray) -> np.ndarray:
    """A token order that puts similar tokens next to each other: the leaves of an average-linkage
    clustering on ``1 - similarity`` (deterministic)."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    distance = np.clip(1.0 - np.asarray(similarity, dtype=np.float64), 0.0, 2.0)
    distance = (distance + distance.T) / 2
    np.fill_diagonal(distance, 0.0)
    return leaves_list(linkage(squareform(distance, checks=False), method="average"))


def write_alignment_figures(out: Path, alignment: CorpusAlignment, weights: dict[str, dict[str, np.ndarray]],
                            *, weights_label: str) -> list[Path]:
    """Per token set: heatmaps of the weights' similarity beside the signatures' and the theory's (input and
    unembedding sides), and the theory-predicted vs measured scatter. The digits stay in numeric order;
    other sets are ordered by a clustering of their signature similarity, so blocks of similar tokens show."""
    figures = []
    for s in alignment.token_sets:
        t, w = alignment.targets[s.name], weights[s.name]
        order = np.arange(len(s.model_ids)) if s.name == "digits" else cluster_order(t["input_cosine"])
        t = {k: v[np.ix_(order, order)] for k, v in t.items()}
        w = {k: v[np.ix_(order, order)] for k, v in w.items()}
        s = TokenSet(s.name, s.model_ids[order], s.tokenizer_ids[order], tuple(s.labels[i] for i in order))
        figures.append(plots.plot_similarity_heatmaps(
            out / f"heatmaps_{s.name}.png",
            {f"{weights_label} input embedding W_E": w["embedding"], "signature phi_next (Q)": t["input_cosine"],
             "theory prediction": t["theory_embedding"]}, list(s.labels), title=f"{s.name} tokens: cosine similarities"))
        figures.append(plots.plot_similarity_heatmaps(
            out / f"heatmaps_{s.name}_unembedding.png",
            {f"{weights_label} unembedding W_U": w["unembedding"], "signature phi_pre (R)": t["output_cosine"],
             "theory prediction": t["theory_unembedding"]}, list(s.labels), title=f"{s.name} tokens: unembedding side"))
        for target, xlabel, name in (("input_cosine", "signature similarity (cosine of phi_next)", "signature"),
                                     ("theory_embedding", "linear-theory predicted similarity (corpus counts only)",
                                      "theory")):
            e, sig = offdiagonal(w["embedding"]), offdiagonal(t[target])
            figures.append(plots.plot_similarity_scatter(
                out / f"{name}_vs_embedding_{s.name}.png", sig, e, xlabel=xlabel,
                ylabel=f"{weights_label} input-embedding similarity", title=f"{s.name} tokens",
                stats={"pearson": pearson(sig, e), "spearman": spearman(sig, e)}))
    return figures


def save_alignment_arrays(path: Path, alignment: CorpusAlignment, weights: dict[str, dict[str, np.ndarray]],
                          **extra: np.ndarray) -> Path:
    """``arrays.npz``: per set its tokenizer ids, every target and weight similarity matrix (the run directory
    itself is atomic, so the file is written in place)."""
    arrays = dict(extra)
    for s in alignment.token_sets:
        arrays[f"{s.name}_tokenizer_ids"] = s.tokenizer_ids
        for name, matrix in {**alignment.targets[s.name], **weights[s.name]}.items():
            arrays[f"{s.name}_{name}"] = matrix
    np.savez_compressed(path, **arrays)
    return path
