"""Alignment metrics between embedding similarity and probability-signature similarity (PAPER section 7).

These are host-side analysis functions (numpy / scipy) applied to small ``(n, n)``
similarity matrices over ``n`` tokens, e.g.

* ``S_emb``: cosine similarity of a model's token embeddings, and
* ``S_sig``: similarity of the tokens' probability signatures computed from data.

All metrics look only at the off-diagonal structure (a token is trivially similar to
itself).  Conventions used throughout:

* "pairs" are the strict upper-triangle entries ``(i, j)`` with ``i < j``, in row-major
  order (see :func:`offdiagonal`);
* **ties are never broken by token index**: a top-k (top-c) selection with ties at its boundary is scored by
  its expected value under a uniformly random tie-breaking, computed exactly from each item's inclusion
  probability (1 above the boundary value, ``need / tied`` on it, 0 below; values within
  ``TIE_TOLERANCE`` times the largest magnitude are one tie). For two independent selections
  ``E|A ∩ B| = sum_j P(j in A) P(j in B)``;
* every metric has a **ceiling** and a **chance level** in closed form (:mod:`probsig_jax.analysis.limits`);
* correlations of constant input are ``nan`` (undefined), never a warning.

Bad input raises :class:`probsig_jax.validation.ConfigError` naming the argument and
the accepted range.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.stats

from probsig_jax.validation import ConfigError, require

__all__ = [
    "cosine_similarity_matrix",
    "offdiagonal",
    "pearson",
    "spearman",
    "topk_neighbour_overlap",
    "strong_pair_precision",
    "strong_pair_correlation",
    "weak_pair_precision",
    "alignment_metrics",
    "topk_inclusion",
    "top_inclusion",
    "TIE_TOLERANCE",
    "snap_ties",
    "midranks",
]

TIE_TOLERANCE = 1e-10
"""Values closer than this times the largest magnitude compared are one tie (float64 rounding of equal
signatures gives differences around 1e-16)."""


# ---------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------


def _as_float_array(x: Any, field: str, ndim: int) -> np.ndarray:
    """Convert ``x`` to a finite float64 array with ``ndim`` dimensions."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(field, f"must be a real {ndim}-D array, got {type(x).__name__}") from None
    require(arr.ndim == ndim, field, f"must be a {ndim}-D array, got shape {arr.shape}")
    require(bool(np.all(np.isfinite(arr))), field, "must contain only finite values")
    return arr


def _square(matrix: Any, field: str, min_n: int = 1) -> np.ndarray:
    """Check that ``matrix`` is a finite square ``(n, n)`` array with ``n >= min_n``."""
    arr = _as_float_array(matrix, field, 2)
    require(
        arr.shape[0] == arr.shape[1],
        field,
        f"must be a square (n, n) matrix, got shape {arr.shape}",
    )
    require(
        arr.shape[0] >= min_n,
        field,
        f"must be (n, n) with n >= {min_n}, got shape {arr.shape}",
    )
    return arr


def _pair(S_a: Any, S_b: Any, name_a: str, name_b: str, min_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Check two square matrices of the same shape."""
    a = _square(S_a, name_a, min_n)
    b = _square(S_b, name_b, min_n)
    require(
        a.shape == b.shape,
        name_b,
        f"must have the same shape as {name_a} {a.shape}, got {b.shape}",
    )
    return a, b


def _check_q(q: Any) -> float:
    """Check the percentage ``q`` lies in ``(0, 100]``."""
    try:
        qf = float(q)
    except (TypeError, ValueError):
        raise ConfigError("q", f"must be a real number in (0, 100], got {q!r}") from None
    require(math.isfinite(qf) and 0.0 < qf <= 100.0, "q", f"must be in (0, 100], got {q}")
    return qf


def _check_k(k: Any, n: int) -> int:
    """Check the neighbour count ``k`` lies in ``[1, n - 1]``."""
    ok_type = isinstance(k, (int, np.integer)) and not isinstance(k, bool)
    require(ok_type, "k", f"must be an integer in [1, {n - 1}], got {k!r}")
    k = int(k)
    require(1 <= k <= n - 1, "k", f"must be an integer in [1, {n - 1}] (n = {n} tokens), got {k}")
    return k


def _top_count(q: float, num_pairs: int) -> int:
    """Number of pairs in the top ``q`` percent: ``max(1, round(q/100 * num_pairs))``."""
    return min(num_pairs, max(1, int(round(q / 100.0 * num_pairs))))


def _inclusion(values_NxM: np.ndarray, count: int) -> np.ndarray:
    """Row-wise probability that each entry is among the row's ``count`` largest under random tie-breaking.

    ``values_NxM`` may hold ``-inf`` for excluded entries (the diagonal). Returns (N, M) probabilities that sum
    to ``count`` in every row."""
    finite = values_NxM[np.isfinite(values_NxM)]
    tol = TIE_TOLERANCE * max(1.0, float(np.abs(finite).max()) if finite.size else 1.0)
    kth = -np.sort(-values_NxM, axis=1)[:, count - 1:count]
    sure = values_NxM > kth + tol
    tied = np.abs(values_NxM - kth) <= tol
    need = count - sure.sum(axis=1, keepdims=True)
    return sure + tied * (need / tied.sum(axis=1, keepdims=True))


def top_inclusion(values: Any, count: int) -> np.ndarray:
    """(P,) probability that each entry of a 1-D array is among its ``count`` largest (random tie-breaking)."""
    v = _as_float_array(values, "values", 1)
    require(1 <= int(count) <= v.size, "count", f"must be in [1, {v.size}], got {count}")
    return _inclusion(v[None, :], int(count))[0]


def topk_inclusion(S: Any, k: int) -> np.ndarray:
    """(n, n) probability that token ``j`` is among token ``i``'s ``k`` nearest neighbours under ``S`` (self
    excluded, random tie-breaking); every row sums to ``k``."""
    m = _square(S, "S", 2)
    k = _check_k(k, m.shape[0])
    masked = m.copy()
    np.fill_diagonal(masked, -np.inf)
    return _inclusion(masked, k)


# ---------------------------------------------------------------------------
# similarity matrices and pairs
# ---------------------------------------------------------------------------


def cosine_similarity_matrix(vectors: Any) -> np.ndarray:
    """Pairwise cosine similarity of row vectors.

    Args:
        vectors: ``(n, d)`` array, one vector per row.

    Returns:
        ``(n, n)`` float64 matrix ``S[i, j] = <v_i, v_j> / (|v_i| |v_j|)``.  Rows that
        are zero vectors have similarity 0 with everything (including themselves), so
        the result never contains NaN.
    """
    v = _as_float_array(vectors, "vectors", 2)
    norms = np.linalg.norm(v, axis=1)
    safe = np.where(norms > 0.0, norms, 1.0)
    unit = np.where((norms > 0.0)[:, None], v / safe[:, None], 0.0)
    sim = unit @ unit.T
    return np.clip(sim, -1.0, 1.0)


def offdiagonal(matrix: Any) -> np.ndarray:
    """Strict upper-triangle entries of a square matrix.

    Args:
        matrix: ``(n, n)`` array.

    Returns:
        1-D array of length ``n (n - 1) / 2`` with the entries ``matrix[i, j]`` for
        ``i < j`` in row-major order ``(0,1), (0,2), ..., (1,2), ...``.
    """
    m = _square(matrix, "matrix")
    rows, cols = np.triu_indices(m.shape[0], k=1)
    return m[rows, cols]


# ---------------------------------------------------------------------------
# correlations
# ---------------------------------------------------------------------------


def _check_vectors(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x = _as_float_array(a, "a", 1)
    y = _as_float_array(b, "b", 1)
    require(x.shape == y.shape, "b", f"must have the same length as a ({x.size}), got {y.size}")
    require(x.size >= 2, "a", f"must have length >= 2, got {x.size}")
    return x, y


def pearson(a: Any, b: Any) -> float:
    """Pearson correlation of two 1-D arrays of equal length ``>= 2``.

    Returns ``nan`` (without a warning) when either input is constant.
    """
    x, y = _check_vectors(a, b)
    if np.ptp(x) == 0.0 or np.ptp(y) == 0.0:
        return float("nan")
    return float(scipy.stats.pearsonr(x, y)[0])


def snap_ties(values: Any) -> np.ndarray:
    """``values`` (1-D) with every run of values less than ``TIE_TOLERANCE`` times the largest magnitude
    apart set to the run's smallest value, so rounding differences of equal quantities rank as ties."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return v.copy()
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    tol = TIE_TOLERANCE * max(1.0, float(np.abs(v).max()))
    starts = np.r_[True, np.diff(sorted_v) > tol]
    out = np.empty_like(v)
    out[order] = sorted_v[starts][np.cumsum(starts) - 1]
    return out


def midranks(values: Any) -> np.ndarray:
    """Average ranks (1-based) of ``values`` with ties (up to ``TIE_TOLERANCE``) sharing their mean rank."""
    return scipy.stats.rankdata(snap_ties(values), method="average")


def spearman(a: Any, b: Any) -> float:
    """Spearman rank correlation of two 1-D arrays of equal length ``>= 2`` (ties, up to
    ``TIE_TOLERANCE``, get mid-ranks).

    Returns ``nan`` (without a warning) when either input is constant.
    """
    x, y = _check_vectors(a, b)
    if np.ptp(x) == 0.0 or np.ptp(y) == 0.0:
        return float("nan")
    return float(np.corrcoef(midranks(x), midranks(y))[0, 1])


# ---------------------------------------------------------------------------
# neighbourhood and strong-pair metrics
# ---------------------------------------------------------------------------


def topk_neighbour_overlap(S_a: Any, S_b: Any, k: int) -> float:
    """Mean top-``k`` nearest-neighbour overlap between two similarity matrices.

    For each token ``i`` take its ``k`` most similar other tokens (``i`` itself is
    excluded) under ``S_a`` and under ``S_b``; the score is the mean over ``i`` of
    ``|N_a(i) ∩ N_b(i)| / k``.  1 means identical neighbourhoods. With ties at a row's k-th value the
    overlap is its expectation under random tie-breaking (module docstring), so it can stay below 1 for
    identical tied matrices (:func:`metric_ceilings`).

    Args:
        S_a, S_b: ``(n, n)`` similarity matrices, ``n >= 2``.
        k: neighbours per token, ``1 <= k <= n - 1``.

    Returns:
        Overlap in ``[0, 1]``.
    """
    a, b = _pair(S_a, S_b, "S_a", "S_b", 2)
    k = _check_k(k, a.shape[0])
    hits = np.sum(topk_inclusion(a, k) * topk_inclusion(b, k), axis=1)
    return float(np.mean(hits) / k)


def strong_pair_precision(S_emb: Any, S_sig: Any, q: float) -> float:
    """Fraction of the strongest signature pairs that are also strongest embedding pairs.

    With ``P = n (n - 1) / 2`` off-diagonal pairs and
    ``c = max(1, round(q / 100 * P))``, take the top-``c`` pairs by ``S_sig`` and the
    top-``c`` pairs by ``S_emb``; return ``|intersection| / c`` (its expectation under random tie-breaking
    when either selection has ties at its boundary).

    Args:
        S_emb, S_sig: ``(n, n)`` similarity matrices, ``n >= 2``.
        q: percentage of pairs, ``0 < q <= 100``.

    Returns:
        Precision in ``[0, 1]``.
    """
    e, s = _pair(S_emb, S_sig, "S_emb", "S_sig", 2)
    qf = _check_q(q)
    pe, ps = offdiagonal(e), offdiagonal(s)
    count = _top_count(qf, ps.size)
    return float(np.sum(top_inclusion(ps, count) * top_inclusion(pe, count)) / count)


def weak_pair_precision(S_emb: Any, S_sig: Any, q: float) -> float:
    """:func:`strong_pair_precision` at the other end: of the bottom ``q`` percent pairs by ``S_sig``, the
    fraction also in the bottom ``q`` percent by ``S_emb``. Comparing the two (and with the chance level
    ``q / 100``) tests PAPER section 7's finding that agreement is strongest on the strongly similar pairs.
    """
    e, s = _pair(S_emb, S_sig, "S_emb", "S_sig", 2)
    return strong_pair_precision(-e, -s, q)


def strong_pair_correlation(S_emb: Any, S_sig: Any, q: float) -> float:
    """Pearson correlation of ``S_emb`` vs ``S_sig`` on the top ``q`` percent pairs by ``S_sig``.

    The pair count is ``max(1, round(q / 100 * P))`` as in :func:`strong_pair_precision`. Pairs tied at the
    boundary enter with their inclusion probability as weight (a weighted Pearson), so no pair is chosen by
    its index. Returns ``nan`` when fewer than 2 pairs are selected or either side is constant on the
    selected pairs.

    Args:
        S_emb, S_sig: ``(n, n)`` similarity matrices, ``n >= 2``.
        q: percentage of pairs, ``0 < q <= 100``.
    """
    e, s = _pair(S_emb, S_sig, "S_emb", "S_sig", 2)
    qf = _check_q(q)
    pe, ps = offdiagonal(e), offdiagonal(s)
    count = _top_count(qf, ps.size)
    if count < 2:
        return float("nan")
    w = top_inclusion(ps, count)
    keep = w > 0
    x, y, w = pe[keep], ps[keep], w[keep]
    if np.ptp(x) == 0.0 or np.ptp(y) == 0.0:
        return float("nan")
    xc, yc = x - np.average(x, weights=w), y - np.average(y, weights=w)
    return float(np.sum(w * xc * yc) / np.sqrt(np.sum(w * xc**2) * np.sum(w * yc**2)))


def alignment_metrics(S_emb: Any, S_sig: Any, *, k: int = 5, q: float = 10.0) -> dict[str, float]:
    """All alignment metrics between an embedding and a signature similarity matrix.

    Args:
        S_emb, S_sig: ``(n, n)`` similarity matrices of the same shape, ``n >= 3``.
        k: neighbours for :func:`topk_neighbour_overlap`, ``1 <= k <= n - 2``: with ``k >= n - 1`` every
            token's neighbourhood is all the others and the overlap is trivially 1, so it is refused.
        q: percentage of strongest pairs, ``0 < q <= 100``.

    Returns:
        dict with keys ``pearson``, ``spearman`` (over all off-diagonal pairs),
        ``topk_overlap``, ``strong_pair_precision``, ``strong_pair_pearson``, and the
        settings used: ``k``, ``q``, ``num_tokens``.
    """
    e, s = _pair(S_emb, S_sig, "S_emb", "S_sig", 3)
    n = e.shape[0]
    ok_type = isinstance(k, (int, np.integer)) and not isinstance(k, bool)
    require(ok_type and int(k) >= 1, "k", f"must be an integer >= 1, got {k!r}")
    qf = _check_q(q)
    require(int(k) <= n - 2, "k", f"must be <= n - 2 = {n - 2} for {n} tokens (k >= n - 1 makes the top-k overlap "
                                  f"trivially 1), got {k}")
    k_used = int(k)
    pe, ps = offdiagonal(e), offdiagonal(s)
    return {
        "pearson": pearson(pe, ps),
        "spearman": spearman(pe, ps),
        "topk_overlap": topk_neighbour_overlap(e, s, k_used),
        "strong_pair_precision": strong_pair_precision(e, s, qf),
        "strong_pair_pearson": strong_pair_correlation(e, s, qf),
        "k": float(k_used),
        "q": qf,
        "num_tokens": float(n),
    }
