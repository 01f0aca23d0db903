"""The one alignment pipeline of every experiment: weights vs signatures over token sets (PAPER section 7).

Conventions, the same for the toy tasks and for language models:

* **weights are token rows**: a ``(V, H)`` matrix whose row ``i`` is token ``i``'s vector (a language
  model's input embeddings ``W_E`` and unembeddings ``W_U``; the linear model's ``(d, F)`` embedding turned
  into rows by :func:`probsig_jax.models.linear.token_rows`);
* a :class:`TokenSet` names the tokens compared (``ids`` index the weight rows);
* **targets** are ``(n, n)`` similarity matrices of a token set computed from the data alone (signature
  similarities, the theory's prediction);
* a :class:`Comparison` ``(name, a, b)`` compares two matrices by name, ``a`` and ``b`` each a weight
  similarity or a target; :func:`compare` returns the :func:`~probsig_jax.analysis.metrics.alignment_metrics`
  of each with, side by side, every metric's chance level and ceiling (closed forms) and, for Pearson and
  Spearman, the Mantel permutation p-value and the bootstrap interval over tokens
  (:mod:`probsig_jax.analysis.significance`);
* :class:`AlignmentTracker` is the metrics-over-training hook: call it with a step and the current weights;
  it keeps the nested ``{token set: {comparison: metrics}}`` records (JSON-able, so a resumed run keeps them).

:class:`AlignmentConfig` holds the settings every experiment shares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Sequence

import numpy as np

from probsig_jax.analysis.limits import metric_ceilings, metric_chance_levels
from probsig_jax.analysis.metrics import alignment_metrics, cosine_similarity_matrix, weak_pair_precision
from probsig_jax.analysis.significance import (bootstrap_correlations, bootstrap_interval, mantel_test,
                                               pair_correlation_matrix, partial_correlation, partial_mantel_test)
from probsig_jax.config_base import Config
from probsig_jax.validation import require, require_float, require_int, require_seed

SIMILARITY_KINDS = ("cosine_M", "cosine_Q", "hellinger_Q", "js_Q")
TOKEN_SET_KINDS = ("keys", "top", "digits")
MIN_STRONG_PAIRS = 5
CORRELATIONS = ("pearson", "spearman")
"""The metrics that get a Mantel p-value and a bootstrap interval."""
LIMITED_METRICS = ("pearson", "spearman", "topk_overlap", "strong_pair_precision", "weak_pair_precision")
"""The metrics reported with ``chance_<metric>`` and ``ceiling_<metric>``."""


@dataclass(frozen=True)
class AlignmentConfig(Config):
    """How weight similarity is compared with signature similarity.

    Attributes:
      similarity: signature similarity: cosine_M (cosine of the centred, frequency-weighted columns / rows of
        M: what the linear theory predicts), cosine_Q (cosine of the conditional distributions: Q_s =
        phi_next on the input side, R_y = phi_pre on the output side), hellinger_Q or js_Q (Hellinger /
        Jensen-Shannon similarity of the conditionals).
      topk: k of the top-k nearest-neighbour overlap.
      strong_pair_percent: q: strong (weak) pairs are the top (bottom) q percent by signature similarity.
      token_sets: the token sets compared: keys (composite addition tasks: the key tokens seen in training),
        top (the top_tokens most frequent tokens of a corpus), digits (the tokens 0..9).
      top_tokens: size of the top-frequency token set (the end-of-text token excluded).
      token_list: an extra token set (corpora): strings that are single tokens (others are skipped).
      permutations: relabellings of the Mantel test of Pearson and Spearman (0: no test).
      bootstrap: token-bootstrap resamples of the Pearson / Spearman interval (0: no interval).
      confidence: level of the bootstrap interval.
      statistics_seed: seed of the permutations and resamples.
    """

    similarity: Literal["cosine_M", "cosine_Q", "hellinger_Q", "js_Q"] = "cosine_M"
    topk: int = 5
    strong_pair_percent: float = 10.0
    token_sets: tuple[str, ...] = ("keys",)
    top_tokens: int = 100
    token_list: tuple[str, ...] = ()
    permutations: int = 999
    bootstrap: int = 1000
    confidence: float = 0.95
    statistics_seed: int = 0

    def _check(self) -> None:
        require(self.similarity in SIMILARITY_KINDS, "similarity",
                f"must be one of {', '.join(SIMILARITY_KINDS)}, got {self.similarity!r}")
        require_int(self.topk, "topk", minimum=1)
        require_float(self.strong_pair_percent, "strong_pair_percent", minimum=0.0, maximum=50.0,
                      strict_minimum=True)
        require(len(self.token_sets) >= 1 or self.token_list, "token_sets", "name at least one token set")
        for kind in self.token_sets:
            require(kind in TOKEN_SET_KINDS, "token_sets", f"must be among {', '.join(TOKEN_SET_KINDS)}, got {kind!r}")
        require(len(set(self.token_sets)) == len(self.token_sets), "token_sets", f"has repeats: {self.token_sets}")
        require_int(self.top_tokens, "top_tokens", minimum=3, maximum=5000)
        require_int(self.permutations, "permutations", minimum=0, maximum=100_000)
        require_int(self.bootstrap, "bootstrap", minimum=0, maximum=100_000)
        require_float(self.confidence, "confidence", minimum=0.5, maximum=1.0, strict_minimum=True)
        require(self.confidence < 1.0, "confidence", f"must be in (0.5, 1), got {self.confidence}")
        require_seed(self.statistics_seed, "statistics_seed")

    def check_token_set(self, token_set: "TokenSet") -> None:
        """Raise ConfigError (on ``topk``) when the set is too small for a meaningful top-k overlap: with
        ``topk >= n - 1`` every neighbourhood is all the other tokens and the overlap is trivially 1."""
        n = len(token_set.ids)
        require(self.topk <= n - 2, "topk", f"must be <= {n - 2} for the {n}-token set {token_set.name!r} "
                                            f"(a larger k makes the top-k overlap trivially 1), got {self.topk}")

    def require_supported(self, token_sets: Sequence[str], similarities: Sequence[str] = SIMILARITY_KINDS,
                          token_list: bool = True) -> None:
        """Raise ConfigError unless every chosen token set / similarity is one this experiment supports."""
        for kind in self.token_sets:
            require(kind in token_sets, "token_sets", f"this experiment supports {', '.join(token_sets)}, got {kind!r}")
        require(self.similarity in similarities, "similarity",
                f"this experiment supports {', '.join(similarities)}, got {self.similarity!r}")
        require(token_list or not self.token_list, "token_list", "is not supported by this experiment")


@dataclass(frozen=True)
class TokenSet:
    """Tokens compared together.

    Attributes:
      name: e.g. ``keys``, ``top``, ``digits``, ``list``.
      ids: (n,) row ids in the weights (the model's ids: compact ids after vocabulary compaction).
      labels: (n,) readable token strings (plot labels).
      tokenizer_ids: (n,) the tokenizer's ids, when a tokenizer is involved (else ``None``).
    """

    name: str
    ids: np.ndarray
    labels: tuple[str, ...]
    tokenizer_ids: np.ndarray | None = None

    def reordered(self, order: np.ndarray) -> "TokenSet":
        order = np.asarray(order)
        return TokenSet(self.name, np.asarray(self.ids)[order], tuple(self.labels[i] for i in order),
                        None if self.tokenizer_ids is None else np.asarray(self.tokenizer_ids)[order])


class Comparison(NamedTuple):
    """``name``: compare matrix ``a`` with matrix ``b`` (weight-similarity or target names; ``b`` plays the
    role of the signature: strong / weak pairs are chosen by it)."""

    name: str
    a: str
    b: str


def weight_similarities(weights: dict[str, Any], token_set: TokenSet) -> dict[str, np.ndarray]:
    """``name -> (n, n)`` cosine similarity of the set's rows of each ``(V, H)`` weight matrix (float64)."""
    ids = np.asarray(token_set.ids)
    return {name: cosine_similarity_matrix(np.asarray(W, dtype=np.float64)[ids]) for name, W in weights.items()}


def similarity_from_gram(gram_VxV: Any, ids: Any) -> np.ndarray:
    """(n, n) cosine similarity of the token vectors whose Gram matrix (over token rows) is ``gram_VxV``."""
    ids = np.asarray(ids)
    inner = np.asarray(gram_VxV)[np.ix_(ids, ids)]
    norms = np.sqrt(np.clip(np.diag(inner), 0, None))
    outer = np.outer(norms, norms)
    return np.divide(inner, outer, out=np.zeros_like(inner), where=outer > 0)


def compare_one(S_a: np.ndarray, S_b: np.ndarray, config: AlignmentConfig) -> dict[str, float]:
    """:func:`alignment_metrics` of ``S_a`` against ``S_b`` (``b`` = the signature side), the weak-pair
    precision, and beside them:

    * ``chance_<metric>`` and ``ceiling_<metric>`` for :data:`LIMITED_METRICS` (expected value under a random
      relabelling of the tokens; expected value of an embedding equal to ``S_b`` up to tie-breaking);
      ``chance_precision`` is the strong- / weak-pair chance level;
    * for Pearson and Spearman: ``<metric>_p`` (Mantel, one-sided, ``config.permutations`` relabellings) and
      ``<metric>_ci_low`` / ``<metric>_ci_high`` (token bootstrap, ``config.bootstrap`` resamples, percentile
      interval at ``config.confidence``), left out when the count is 0.
    """
    k, q = config.topk, config.strong_pair_percent
    metrics = alignment_metrics(S_a, S_b, k=k, q=q)
    metrics["weak_pair_precision"] = weak_pair_precision(S_a, S_b, q)
    chance = metric_chance_levels(S_a.shape[0], k=k, q=q)
    ceiling = metric_ceilings(S_b, k=k, q=q)
    metrics["chance_precision"] = chance["strong_pair_precision"]
    for name in LIMITED_METRICS:
        metrics[f"chance_{name}"] = chance[name]
        metrics[f"ceiling_{name}"] = ceiling[name]
    for i, method in enumerate(CORRELATIONS):
        if config.permutations:
            test = mantel_test(S_a, S_b, permutations=config.permutations, seed=config.statistics_seed + i,
                               method=method)
            metrics[f"{method}_p"] = test["p"]
        if config.bootstrap:
            samples = bootstrap_correlations([S_a, S_b], resamples=config.bootstrap, seed=config.statistics_seed,
                                             method=method)[:, 0, 1]
            metrics[f"{method}_ci_low"], metrics[f"{method}_ci_high"] = bootstrap_interval(samples, config.confidence)
    return metrics


def compare(matrices: dict[str, np.ndarray], comparisons: Sequence[Comparison], config: AlignmentConfig
            ) -> dict[str, dict[str, float]]:
    """``comparison name -> metrics`` for the comparisons whose matrices are all in ``matrices``."""
    return {c.name: compare_one(matrices[c.a], matrices[c.b], config) for c in comparisons
            if c.a in matrices and c.b in matrices}


def strong_pair_finding(metrics: dict[str, float]) -> dict[str, Any]:
    """PAPER section 7's qualitative result, tested: is agreement stronger on the strongest signature pairs?

    Strong-pair precision (top q %) against the weak-pair precision (bottom q %) and the chance level of one
    comparison's metrics (:func:`compare_one`). ``holds`` is True when the strong-pair precision beats both,
    and ``None`` when the top q % holds fewer than ``MIN_STRONG_PAIRS`` pairs (e.g. 45 digit pairs at 5 %)."""
    n = metrics["num_tokens"]
    pairs = max(1, round(metrics["q"] / 100.0 * n * (n - 1) / 2))
    finding = {"strong_pair_precision": metrics["strong_pair_precision"],
               "weak_pair_precision": metrics["weak_pair_precision"],
               "chance_precision": metrics["chance_precision"], "pairs_compared": int(pairs)}
    if pairs < MIN_STRONG_PAIRS:
        return finding | {"holds": None, "statement": f"too few pairs ({pairs}) in the top q % for the strong-pair test"}
    holds = metrics["strong_pair_precision"] > max(metrics["weak_pair_precision"], metrics["chance_precision"])
    return finding | {"holds": bool(holds),
                      "statement": ("agreement is stronger on the strongly similar pairs" if holds else
                                    "agreement is NOT stronger on the strongly similar pairs in this run")}


@dataclass
class AlignmentTracker:
    """The metrics-over-training hook shared by every experiment and the notebooks.

    Attributes:
      token_sets: the sets compared.
      targets: set name -> target name -> (n, n) matrix.
      comparisons: what to measure at each call (weights vs targets).
      config: the metric settings.
      history: one record per call: ``{"step": step, "alignment": {set: {comparison: metrics}}}``.
    """

    token_sets: Sequence[TokenSet]
    targets: dict[str, dict[str, np.ndarray]]
    comparisons: Sequence[Comparison]
    config: AlignmentConfig
    history: list[dict[str, Any]] = field(default_factory=list)

    def measure(self, weights: dict[str, Any], comparisons: Sequence[Comparison] | None = None
                ) -> dict[str, dict[str, dict[str, float]]]:
        """``{set: {comparison: metrics}}`` of ``weights`` (name -> (V, H) rows); nothing is recorded."""
        comparisons = self.comparisons if comparisons is None else comparisons
        return {s.name: compare({**weight_similarities(weights, s), **self.targets[s.name]}, comparisons, self.config)
                for s in self.token_sets}

    def weight_similarity(self, weights: dict[str, Any], name: str, token_set: str | None = None) -> np.ndarray:
        """(n, n) similarity of weight ``name`` over a token set (default: the first)."""
        s = next(t for t in self.token_sets if token_set is None or t.name == token_set)
        return weight_similarities({name: weights[name]}, s)[name]

    def __call__(self, step: float, weights: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
        """Measure ``weights`` at ``step`` (a step count or a flow time) and record it."""
        alignment = self.measure(weights)
        self.history.append({"step": step, "alignment": alignment})
        return alignment


def alignment_series(history: Sequence[dict[str, Any]], token_set: str, comparison: str
                     ) -> dict[str, list[float]]:
    """``{"step": [...], metric: [...]}`` of one comparison over the records of :class:`AlignmentTracker`
    (or of evaluation records holding an ``"alignment"`` entry)."""
    rows = [(r["step"], r["alignment"][token_set][comparison]) for r in history
            if comparison in r.get("alignment", {}).get(token_set, {})]
    out: dict[str, list[float]] = {"step": [s for s, _ in rows]}
    for name in (rows[0][1] if rows else {}):
        out[name] = [m[name] for _, m in rows]
    return out


def side_specificity(weights: dict[str, np.ndarray], signatures: dict[str, np.ndarray],
                     expected: dict[str, str], config: AlignmentConfig, *, alpha: float = 0.01) -> dict[str, Any]:
    """Does each weight matrix follow its own side's signature rather than the other side's? (PAPER section 7)

    The sharpest test the data allow: the input embedding should follow the next-token signature and the
    unembedding the previous-token signature, and the two signatures are themselves correlated, so the table
    also gives the partial correlations (each weight with one signature, the other held fixed).

    Args:
      weights: two ``name -> (n, n)`` weight similarities, e.g. ``{"W_E": ..., "W_U": ...}``.
      signatures: two ``name -> (n, n)`` signature similarities, e.g. ``{"phi_next": ..., "phi_pre": ...}``.
      expected: weight name -> the signature it should follow.
      config: permutations, resamples, confidence and seed.
      alpha: level of the Mantel tests behind ``holds``.

    Returns:
      ``pearson[w][s]`` and ``partial[w]["s | other"]``: ``{"r", "ci_low", "ci_high", "p"}`` (token bootstrap,
      Mantel / partial Mantel); ``difference[w]``: r(w, own) - r(w, other) with its interval;
      ``signature_correlation`` with its interval; per weight ``follows`` (the larger of its two correlations)
      and ``holds``: its own-side difference interval lies above 0 and the partial correlation with its own
      side has Mantel p < ``alpha``; ``holds`` overall: every weight holds (None without tests).
    """
    require(len(weights) == 2 and len(signatures) == 2, "side_specificity", "takes two weights and two signatures")
    w_names, s_names = list(weights), list(signatures)
    mats = [weights[w] for w in w_names] + [signatures[s] for s in s_names]
    point = pair_correlation_matrix(mats)
    boots = (bootstrap_correlations(mats, resamples=config.bootstrap, seed=config.statistics_seed)
             if config.bootstrap else None)
    level = config.confidence

    def interval(samples) -> dict[str, float]:
        if samples is None:
            return {}
        low, high = bootstrap_interval(samples, level)
        return {"ci_low": low, "ci_high": high}

    out: dict[str, Any] = {"pearson": {}, "partial": {}, "difference": {}, "follows": {}, "holds_for": {}}
    for i, w in enumerate(w_names):
        out["pearson"][w], out["partial"][w] = {}, {}
        for j, s in enumerate(s_names, 2):
            other = 5 - j                                       # the other signature's index (2 <-> 3)
            entry = {"r": float(point[i, j]), **interval(None if boots is None else boots[:, i, j])}
            if config.permutations:
                entry["p"] = mantel_test(mats[i], mats[j], permutations=config.permutations,
                                         seed=config.statistics_seed)["p"]
            out["pearson"][w][s] = entry
            part = {"r": float(partial_correlation(point[i, j], point[i, other], point[j, other])),
                    **interval(None if boots is None else
                               partial_correlation(boots[:, i, j], boots[:, i, other], boots[:, j, other]))}
            if config.permutations:
                part["p"] = partial_mantel_test(mats[i], mats[j], mats[other], permutations=config.permutations,
                                                seed=config.statistics_seed)["p"]
            out["partial"][w][f"{s} | {s_names[other - 2]}"] = part
        own = expected[w]
        j_own = 2 + s_names.index(own)
        j_other = 5 - j_own
        diff = {"value": float(point[i, j_own] - point[i, j_other]),
                **interval(None if boots is None else boots[:, i, j_own] - boots[:, i, j_other])}
        out["difference"][w] = {f"{own} - {s_names[j_other - 2]}": diff}
        out["follows"][w] = s_names[int(np.argmax(point[i, 2:]))]
        partial_own = out["partial"][w][f"{own} | {s_names[j_other - 2]}"]
        if "ci_low" in diff and "p" in partial_own:
            out["holds_for"][w] = bool(diff["ci_low"] > 0 and partial_own["p"] < alpha)
        else:
            out["holds_for"][w] = None
    out["signature_correlation"] = {"r": float(point[2, 3]), **interval(None if boots is None else boots[:, 2, 3])}
    verdicts = list(out["holds_for"].values())
    out["holds"] = None if None in verdicts else all(verdicts)
    out["alpha"] = alpha
    out["expected"] = dict(expected)
    return out


def correlation_difference(weight: np.ndarray, predictor: np.ndarray, reference: np.ndarray,
                           config: AlignmentConfig) -> dict[str, float]:
    """``r(weight, predictor) - r(weight, reference)`` (Pearson over pairs) with its token-bootstrap interval
    (``value``, ``ci_low``, ``ci_high``; the interval is left out when ``config.bootstrap`` is 0): what a
    predictor adds over a reference, e.g. the theory's prediction over the signature it is built from."""
    mats = [weight, predictor, reference]
    point = pair_correlation_matrix(mats)
    out = {"value": float(point[0, 1] - point[0, 2]), "r_predictor": float(point[0, 1]),
           "r_reference": float(point[0, 2])}
    if config.bootstrap:
        boots = bootstrap_correlations(mats, resamples=config.bootstrap, seed=config.statistics_seed)
        out["ci_low"], out["ci_high"] = bootstrap_interval(boots[:, 0, 1] - boots[:, 0, 2], config.confidence)
    return out


def predictor_table(weight: np.ndarray, predictors: dict[str, np.ndarray], reference: str,
                    config: AlignmentConfig) -> dict[str, Any]:
    """Which data-only predictor explains one weight similarity best?

    Per predictor: Pearson ``r`` over pairs with its token-bootstrap interval and Mantel p; ``best`` (largest
    r) and, per predictor, ``r - r(reference)`` with its interval (the same resamples for every predictor, so
    the differences are paired)."""
    names = list(predictors)
    require(reference in names, "reference", f"must be one of {names}, got {reference!r}")
    mats = [weight] + [predictors[n] for n in names]
    point = pair_correlation_matrix(mats)[0, 1:]
    boots = (bootstrap_correlations(mats, resamples=config.bootstrap, seed=config.statistics_seed)[:, 0, 1:]
             if config.bootstrap else None)
    ref = names.index(reference)
    table: dict[str, Any] = {}
    for i, name in enumerate(names):
        entry: dict[str, Any] = {"r": float(point[i])}
        if boots is not None:
            entry["ci_low"], entry["ci_high"] = bootstrap_interval(boots[:, i], config.confidence)
            diff = bootstrap_interval(boots[:, i] - boots[:, ref], config.confidence)
            entry["minus_reference"] = {"value": float(point[i] - point[ref]), "ci_low": diff[0], "ci_high": diff[1]}
        if config.permutations:
            entry["p"] = mantel_test(weight, predictors[name], permutations=config.permutations,
                                     seed=config.statistics_seed)["p"]
        table[name] = entry
    return {"predictors": table, "best": names[int(np.nanargmax(point))], "reference": reference}
