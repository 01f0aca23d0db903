"""Uncertainty of the correlation between two token-similarity matrices: permutation nulls and intervals.

The ``n (n - 1) / 2`` pairs of a similarity matrix are not independent (every pair shares a token with
``2 (n - 2)`` others), so the usual p-value and interval of a correlation over pairs are wrong. Both tools
here treat the **token** as the unit:

* :func:`mantel_test`: the null distribution of the correlation under random relabellings of one matrix's
  tokens (rows and columns permuted together; Mantel 1967), one-sided ``p = (1 + #{r_perm >= r}) / (1 + N)``;
  :func:`partial_mantel_test` does the same for the partial correlation ``r(a, b | c)``, permuting ``a``;
* :func:`bootstrap_correlations`: resample **tokens** with replacement (pairs of a token with its own copy
  are dropped) and recompute the correlations among several matrices at once; percentile intervals.

Both avoid per-pair Python work: a permutation is one gather of the standardised matrix and a dot product, and
the bootstrap is a few
``(B, n) @ (n, n)`` matrix products on token counts, so 999 permutations and 1000 resamples of 1000 tokens
take a few seconds (``benchmarks/alignment_statistics.py``).

``method="spearman"`` uses the mid-ranks of the full sample's off-diagonal values: exact for the Mantel test
(a relabelling moves the ranks with the values); for the bootstrap it is the bootstrap of the correlation of
the full sample's ranks (the ranks are not recomputed inside each resample, a documented approximation that
avoids a sort per resample).
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np

from probsig_jax.analysis.metrics import _pair, _square, midranks
from probsig_jax.validation import require, require_float, require_int, require_seed

__all__ = ["mae_relabelling_null", "mean_abs_pair_error", "mantel_test", "partial_mantel_test", "vector_correlation_test", "bootstrap_correlations", "bootstrap_interval",
           "partial_correlation", "pair_correlation_matrix"]

Method = Literal["pearson", "spearman"]
NULL_TIE_TOLERANCE = 1e-6
"""A permuted correlation within this of the observed one counts as at least as large (relabellings that
map a structured matrix onto itself give the observed value exactly, up to the float32 gathers)."""


def _check_method(method: str) -> str:
    require(method in ("pearson", "spearman"), "method", f"must be pearson or spearman, got {method!r}")
    return method


def _standardised(S: np.ndarray, method: str) -> np.ndarray:
    """Symmetric (n, n) matrix of the z-scored upper-triangle values (ranks for spearman), zero diagonal.

    ``sum_{i<j} Z_a[i, j] Z_b[i, j] / P`` is then the correlation of the two matrices' pairs."""
    n = S.shape[0]
    rows, cols = np.triu_indices(n, k=1)
    values = S[rows, cols]
    if method == "spearman":
        values = midranks(values)
    std = values.std()
    z = (values - values.mean()) / std if std > 0 else np.zeros_like(values)
    Z = np.zeros((n, n))
    Z[rows, cols] = z
    return Z + Z.T


def _permutations(n: int, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.argsort(rng.random((count, n)), axis=1)


def _permuted_inner_products(Z_perm: np.ndarray, targets: Sequence[np.ndarray], perms: np.ndarray) -> np.ndarray:
    """(N, len(targets)) ``sum_{i<j} Z_perm[s_i, s_j] T[i, j] / P`` for every permutation ``s``.

    The gathers run in float32 (a row gather, then a column ``take``: the fastest of the numpy and jax
    variants measured, from 40 to 1000 tokens); the null values so carry ~1e-6 absolute error, which the p-value's tolerance
    ``NULL_TIE_TOLERANCE`` absorbs."""
    n = Z_perm.shape[0]
    pairs = n * (n - 1) / 2
    Z32 = Z_perm.astype(np.float32)
    T_Kxnxn = np.stack([np.asarray(t, dtype=np.float32) for t in targets])
    out = np.empty((perms.shape[0], len(targets)))
    for b, p in enumerate(perms):
        G_nxn = np.take(Z32[p], p, axis=1)
        for k, t in enumerate(T_Kxnxn):
            out[b, k] = float(np.vdot(G_nxn, t)) / (2.0 * pairs)
    return out


def _check_permutations(permutations: Any) -> int:
    return require_int(permutations, "permutations", minimum=1, maximum=10**6)


def mantel_test(S_a: Any, S_b: Any, *, permutations: int = 999, seed: int = 0, method: Method = "pearson"
                ) -> dict[str, float]:
    """Permutation test of the correlation between the off-diagonal pairs of two (n, n) matrices.

    Args:
      S_a, S_b: (n, n) similarity matrices (upper triangles compared), n >= 3.
      permutations: number N of random relabellings of ``S_a``'s tokens.
      seed: seed of the permutations.
      method: ``pearson`` or ``spearman``.

    Returns:
      ``r`` (the observed correlation), ``p`` (one-sided, for r > 0: ``(1 + #{r_perm >= r}) / (1 + N)``),
      ``null_mean``, ``null_std``, ``null_q025``, ``null_q975`` of the permutation distribution and
      ``permutations``.
    """
    a, b = _pair(S_a, S_b, "S_a", "S_b", 3)
    method = _check_method(method)
    permutations = _check_permutations(permutations)
    Za, Zb = _standardised(a, method), _standardised(b, method)
    r = float(np.sum(np.triu(Za * Zb, 1)) / (a.shape[0] * (a.shape[0] - 1) / 2))
    null = _permuted_inner_products(Za, [Zb], _permutations(a.shape[0], permutations, require_seed(seed)))[:, 0]
    return _null_summary(r, null)


def vector_correlation_test(x: Any, y: Any, *, permutations: int = 999, seed: int = 0, method: Method = "pearson"
                            ) -> dict[str, float]:
    """Permutation test of the correlation of two paired 1-D samples (e.g. a per-example score and a per-example
    outcome): the null relabels ``x``'s entries at random. It assumes exchangeable units; where units share
    structure (examples sharing an input, tokens of one pair) the p-value is optimistic.

    Args:
      x, y: (n,) finite values, n >= 3.
      permutations, seed, method: as :func:`mantel_test`.

    Returns what :func:`mantel_test` returns (``r``, one-sided ``p``, the null's mean, std and 2.5 / 97.5 %
    quantiles, ``permutations``); ``r`` is nan (and ``p`` 1) if either sample is constant.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    require(x.ndim == 1 and x.shape == y.shape and x.size >= 3, "x",
            f"x and y must be 1-D of the same length >= 3, got shapes {x.shape} and {y.shape}")
    require(bool(np.all(np.isfinite(x)) and np.all(np.isfinite(y))), "x", "x and y must be finite")
    method = _check_method(method)
    permutations = _check_permutations(permutations)
    if method == "spearman":
        x, y = midranks(x), midranks(y)
    zx, zy = x - x.mean(), y - y.mean()
    norm = float(np.linalg.norm(zx) * np.linalg.norm(zy))
    if norm == 0.0:
        nan = float("nan")
        return {"r": nan, "p": 1.0, "null_mean": nan, "null_std": nan, "null_q025": nan, "null_q975": nan,
                "permutations": float(permutations)}
    r = float(zx @ zy / norm)
    perms = _permutations(x.size, permutations, require_seed(seed))
    null = np.concatenate([zx[chunk] @ zy for chunk in np.array_split(perms, max(1, perms.size // 4_000_000))])
    return _null_summary(r, null / norm)


def partial_correlation(r_ab: Any, r_ac: Any, r_bc: Any) -> Any:
    """``r(a, b | c) = (r_ab - r_ac r_bc) / sqrt((1 - r_ac^2) (1 - r_bc^2))`` (elementwise, nan where undefined)."""
    r_ab, r_ac, r_bc = (np.asarray(x, dtype=np.float64) for x in (r_ab, r_ac, r_bc))
    denom = np.sqrt(np.clip((1.0 - r_ac**2) * (1.0 - r_bc**2), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(denom > 0, (r_ab - r_ac * r_bc) / np.where(denom > 0, denom, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


def partial_mantel_test(S_a: Any, S_b: Any, S_c: Any, *, permutations: int = 999, seed: int = 0,
                        method: Method = "pearson") -> dict[str, float]:
    """Permutation test of the partial correlation ``r(a, b | c)`` of the matrices' pairs (``a``'s tokens are
    relabelled; ``b`` and ``c`` stay fixed, so their correlation is kept). Returns what :func:`mantel_test`
    returns, ``r`` being the partial correlation."""
    a, b = _pair(S_a, S_b, "S_a", "S_b", 3)
    c = _square(S_c, "S_c", 3)
    require(c.shape == a.shape, "S_c", f"must have the same shape as S_a {a.shape}, got {c.shape}")
    method = _check_method(method)
    permutations = _check_permutations(permutations)
    Za, Zb, Zc = (_standardised(x, method) for x in (a, b, c))
    pairs = a.shape[0] * (a.shape[0] - 1) / 2
    r_ab, r_ac, r_bc = (float(np.sum(np.triu(x * y, 1)) / pairs) for x, y in ((Za, Zb), (Za, Zc), (Zb, Zc)))
    null_ab_ac = _permuted_inner_products(Za, [Zb, Zc], _permutations(a.shape[0], permutations, require_seed(seed)))
    null = partial_correlation(null_ab_ac[:, 0], null_ab_ac[:, 1], r_bc)
    return _null_summary(partial_correlation(r_ab, r_ac, r_bc), np.asarray(null, dtype=np.float64))


def mean_abs_pair_error(S_a: Any, S_b: Any) -> float:
    """Mean ``|S_a - S_b|`` over the off-diagonal pairs of two (n, n) similarity matrices (ceiling 0)."""
    a, b = _pair(S_a, S_b, "S_a", "S_b", 2)
    upper = np.triu_indices(a.shape[0], 1)
    return float(np.mean(np.abs(a[upper] - b[upper])))


def mae_relabelling_null(measured: Any, predicted: Any, *, permutations: int = 199, seed: int = 0) -> float:
    """The null of :func:`mean_abs_pair_error`: its mean with the prediction's tokens relabelled (rows and columns
    together), i.e. what a prediction with the right values on the wrong tokens scores."""
    a, b = _pair(measured, predicted, "measured", "predicted", 2)
    perms = _permutations(a.shape[0], _check_permutations(permutations), require_seed(seed))
    return float(np.mean([mean_abs_pair_error(a, b[np.ix_(p, p)]) for p in perms]))


def _null_summary(r: float, null: np.ndarray) -> dict[str, float]:
    finite = null[np.isfinite(null)]
    exceed = int(np.sum(finite >= r - NULL_TIE_TOLERANCE)) if np.isfinite(r) else len(finite)
    return {"r": float(r), "p": float((1 + exceed) / (1 + len(finite))), "null_mean": float(finite.mean()),
            "null_std": float(finite.std()), "null_q025": float(np.quantile(finite, 0.025)),
            "null_q975": float(np.quantile(finite, 0.975)), "permutations": float(len(finite))}


def _check_resamples(resamples: Any) -> int:
    return require_int(resamples, "resamples", minimum=1, maximum=10**6)


def _check_matrices(matrices: Sequence[Any]) -> list[np.ndarray]:
    require(len(matrices) >= 2, "matrices", f"need at least 2 matrices, got {len(matrices)}")
    out = [_square(m, f"matrices[{i}]", 3) for i, m in enumerate(matrices)]
    for i, m in enumerate(out[1:], 1):
        require(m.shape == out[0].shape, f"matrices[{i}]", f"must have shape {out[0].shape}, got {m.shape}")
    return out


def pair_correlation_matrix(matrices: Sequence[Any], *, method: Method = "pearson") -> np.ndarray:
    """(K, K) correlations between the off-diagonal pairs of K (n, n) matrices (the full sample)."""
    Z = [_standardised(m, _check_method(method)) for m in _check_matrices(matrices)]
    pairs = Z[0].shape[0] * (Z[0].shape[0] - 1) / 2
    return np.array([[np.sum(np.triu(x * y, 1)) / pairs for y in Z] for x in Z])


def bootstrap_correlations(matrices: Sequence[Any], *, resamples: int = 1000, seed: int = 0,
                           method: Method = "pearson") -> np.ndarray:
    """Correlations among K (n, n) similarity matrices over bootstrap resamples of the tokens.

    Each resample draws n tokens with replacement; with multiplicities ``c`` the pair of distinct tokens
    ``(s, t)`` enters ``c_s c_t`` times and a token's pairs with its own copies not at all, so every weighted
    moment is ``c^T X c`` over a zero-diagonal matrix ``X``: a matrix product for all resamples at once.

    Args:
      matrices: K >= 2 (n, n) matrices of one token set (upper triangles used; symmetrised).
      resamples: number B of bootstrap resamples.
      seed: seed of the resampling.
      method: ``pearson`` or ``spearman`` (full-sample ranks; module docstring).

    Returns:
      (B, K, K) correlation matrices, one per resample (nan where a resample is constant on a side).
    """
    Z = [_standardised(m, _check_method(method)) for m in _check_matrices(matrices)]
    resamples = _check_resamples(resamples)
    n, K = Z[0].shape[0], len(Z)
    rng = np.random.default_rng(require_seed(seed))
    counts_Bxn = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)]).astype(float)
    weight_B = counts_Bxn.sum(1) ** 2 - np.sum(counts_Bxn**2, axis=1)     # sum over ordered distinct pairs

    def weighted_sum(X: np.ndarray) -> np.ndarray:
        return np.einsum("bi,bi->b", counts_Bxn @ X, counts_Bxn)

    with np.errstate(divide="ignore", invalid="ignore"):
        means = np.stack([weighted_sum(z) / weight_B for z in Z], axis=1)          # (B, K)
        cov = np.empty((resamples, K, K))
        for i in range(K):
            for j in range(i, K):
                cov[:, i, j] = cov[:, j, i] = weighted_sum(Z[i] * Z[j]) / weight_B - means[:, i] * means[:, j]
        std = np.sqrt(np.clip(np.einsum("bii->bi", cov), 0.0, None))
        corr = cov / (std[:, :, None] * std[:, None, :])
    return np.where(np.isfinite(corr), corr, np.nan)


def bootstrap_interval(samples: Any, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap samples (nan samples ignored): ``(low, high)``."""
    confidence = require_float(confidence, "confidence", minimum=0.5, maximum=1.0, strict_minimum=True)
    x = np.asarray(samples, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(x, [tail, 1.0 - tail])
    return float(low), float(high)
