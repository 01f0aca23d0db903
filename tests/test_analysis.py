"""Tests for probsig_jax.analysis: metrics checked against independent brute-force values."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from probsig_jax.analysis import (
    alignment_metrics,
    cosine_similarity_matrix,
    offdiagonal,
    pca_projection,
    pearson,
    spearman,
    strong_pair_correlation,
    strong_pair_precision,
    topk_neighbour_overlap,
    weak_pair_precision,
)
from probsig_jax.validation import ConfigError

# ---------------------------------------------------------------------------
# independent reference implementations (plain loops, no shared code)
# ---------------------------------------------------------------------------


def _upper_list(S: np.ndarray) -> list[float]:
    n = S.shape[0]
    return [float(S[i, j]) for i in range(n) for j in range(i + 1, n)]


def _brute_topk(S_a: np.ndarray, S_b: np.ndarray, k: int) -> float:
    n = S_a.shape[0]
    total = 0.0
    for i in range(n):
        others = [j for j in range(n) if j != i]
        na = set(sorted(others, key=lambda j: -S_a[i, j])[:k])
        nb = set(sorted(others, key=lambda j: -S_b[i, j])[:k])
        total += len(na & nb) / k
    return total / n


def _brute_strong_pairs(S_emb: np.ndarray, S_sig: np.ndarray, q: float) -> tuple[float, float]:
    n = S_emb.shape[0]
    pairs = list(itertools.combinations(range(n), 2))
    count = max(1, round(q / 100 * len(pairs)))
    top_sig = sorted(pairs, key=lambda p: -S_sig[p])[:count]
    top_emb = sorted(pairs, key=lambda p: -S_emb[p])[:count]
    precision = len(set(top_sig) & set(top_emb)) / count
    corr = np.corrcoef([S_emb[p] for p in top_sig], [S_sig[p] for p in top_sig])[0, 1]
    return precision, float(corr)


def _ranks(x: list[float]) -> np.ndarray:
    order = np.argsort(x)
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    return r


def _random_similarity(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, d))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v @ v.T


# ---------------------------------------------------------------------------
# cosine / offdiagonal
# ---------------------------------------------------------------------------


def test_cosine_known_values():
    v = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [-1.0, 0.0]])
    S = cosine_similarity_matrix(v)
    r = 1 / np.sqrt(2)
    expected = np.array(
        [
            [1, 0, r, -1],
            [0, 1, r, 0],
            [r, r, 1, -r],
            [-1, 0, -r, 1],
        ]
    )
    np.testing.assert_allclose(S, expected, atol=1e-12)


def test_cosine_zero_vector_gives_zero_not_nan():
    v = np.array([[1.0, 2.0], [0.0, 0.0], [2.0, -1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        S = cosine_similarity_matrix(v)
    assert np.all(np.isfinite(S))
    np.testing.assert_array_equal(S[1], 0.0)
    np.testing.assert_array_equal(S[:, 1], 0.0)
    assert S[0, 2] == pytest.approx(0.0)
    assert S[0, 0] == pytest.approx(1.0)


def test_offdiagonal_row_major_upper_triangle():
    m = np.arange(16.0).reshape(4, 4)
    np.testing.assert_array_equal(offdiagonal(m), [1, 2, 3, 6, 7, 11])


# ---------------------------------------------------------------------------
# correlations
# ---------------------------------------------------------------------------


def test_pearson_spearman_known_values():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = np.array([1.0, 4.0, 9.0, 16.0])
    assert pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert spearman(a, b) == pytest.approx(1.0)
    assert spearman(a, -b ** 3) == pytest.approx(-1.0)
    assert isinstance(pearson(a, b), float)


def test_constant_input_gives_nan_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
        assert np.isnan(spearman([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))


# ---------------------------------------------------------------------------
# alignment metrics
# ---------------------------------------------------------------------------


def test_identical_matrices_give_perfect_alignment():
    S = _random_similarity(12, 4, seed=0)
    m = alignment_metrics(S, S.copy(), k=3, q=20.0)
    for key in ("pearson", "spearman", "topk_overlap", "strong_pair_precision", "strong_pair_pearson"):
        assert m[key] == pytest.approx(1.0), key
    assert set(m) == {
        "pearson",
        "spearman",
        "topk_overlap",
        "strong_pair_precision",
        "strong_pair_pearson",
        "k",
        "q",
        "num_tokens",
    }
    assert m["k"] == 3 and m["q"] == 20.0 and m["num_tokens"] == 12


def test_permuted_matrix_matches_brute_force():
    n, k, q = 15, 4, 20.0
    S_sig = _random_similarity(n, 5, seed=1)
    perm = np.random.default_rng(2).permutation(n)
    P = np.eye(n)[perm]
    S_emb = P @ S_sig @ P.T
    np.testing.assert_allclose(S_emb, S_sig[np.ix_(perm, perm)])

    u_emb, u_sig = _upper_list(S_emb), _upper_list(S_sig)
    exp_pearson = np.corrcoef(u_emb, u_sig)[0, 1]
    exp_spearman = np.corrcoef(_ranks(u_emb), _ranks(u_sig))[0, 1]
    exp_topk = _brute_topk(S_emb, S_sig, k)
    exp_prec, exp_corr = _brute_strong_pairs(S_emb, S_sig, q)

    m = alignment_metrics(S_emb, S_sig, k=k, q=q)
    assert m["pearson"] == pytest.approx(exp_pearson, abs=1e-12)
    assert m["spearman"] == pytest.approx(exp_spearman, abs=1e-12)
    assert m["topk_overlap"] == pytest.approx(exp_topk, abs=1e-12)
    assert m["strong_pair_precision"] == pytest.approx(exp_prec, abs=1e-12)
    assert m["strong_pair_pearson"] == pytest.approx(exp_corr, abs=1e-12)
    # A random permutation really scrambles the structure.
    assert m["pearson"] < 0.9
    assert m["topk_overlap"] < 1.0

    # Standalone functions agree with the dict.
    assert topk_neighbour_overlap(S_emb, S_sig, k) == pytest.approx(exp_topk)
    assert strong_pair_precision(S_emb, S_sig, q) == pytest.approx(exp_prec)
    assert strong_pair_correlation(S_emb, S_sig, q) == pytest.approx(exp_corr)
    assert pearson(offdiagonal(S_emb), offdiagonal(S_sig)) == pytest.approx(exp_pearson)


def test_topk_overlap_brute_force_all_k():
    S_a = _random_similarity(9, 3, seed=3)
    S_b = _random_similarity(9, 3, seed=4)
    for k in range(1, 9):
        assert topk_neighbour_overlap(S_a, S_b, k) == pytest.approx(_brute_topk(S_a, S_b, k)), k
    # With k = n - 1 every other token is a neighbour.
    assert topk_neighbour_overlap(S_a, S_b, 8) == pytest.approx(1.0)


def test_reversed_sign_gives_minus_one():
    S = _random_similarity(10, 3, seed=5)
    m = alignment_metrics(-S, S, k=2, q=30.0)
    assert m["pearson"] == pytest.approx(-1.0)
    assert m["spearman"] == pytest.approx(-1.0)


def _hand_made_4x4() -> tuple[np.ndarray, np.ndarray]:
    #            (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    sig_pairs = [0.9, 0.8, 0.1, 0.7, 0.2, 0.3]
    emb_pairs = [0.9, 0.1, 0.8, 0.7, 0.2, 0.3]
    out = []
    for vals in (emb_pairs, sig_pairs):
        S = np.eye(4)
        for (i, j), v in zip(itertools.combinations(range(4), 2), vals):
            S[i, j] = S[j, i] = v
        out.append(S)
    return out[0], out[1]


def test_strong_pair_precision_hand_made():
    S_emb, S_sig = _hand_made_4x4()
    # 6 pairs. q=50 -> 3 pairs: sig top {(0,1),(0,2),(1,2)}, emb top {(0,1),(0,3),(1,2)}.
    assert strong_pair_precision(S_emb, S_sig, 50.0) == pytest.approx(2 / 3)
    # q=34 -> round(2.04) = 2 pairs: {(0,1),(0,2)} vs {(0,1),(0,3)}.
    assert strong_pair_precision(S_emb, S_sig, 34.0) == pytest.approx(1 / 2)
    # q=1 -> at least one pair: (0,1) in both.
    assert strong_pair_precision(S_emb, S_sig, 1.0) == pytest.approx(1.0)
    # q=100 -> all pairs.
    assert strong_pair_precision(S_emb, S_sig, 100.0) == pytest.approx(1.0)


def test_weak_pair_precision_hand_made():
    S_emb, S_sig = _hand_made_4x4()
    # q=50 -> 3 pairs: sig bottom {(0,3),(1,3),(2,3)} = 0.1, 0.2, 0.3; emb bottom {(0,2),(1,3),(2,3)}.
    assert weak_pair_precision(S_emb, S_sig, 50.0) == pytest.approx(2 / 3)
    # q=17 -> 1 pair: sig (0,3), emb (0,2): no overlap.
    assert weak_pair_precision(S_emb, S_sig, 17.0) == pytest.approx(0.0)


def test_strong_pair_correlation_hand_made():
    S_emb, S_sig = _hand_made_4x4()
    # q=50 -> pairs (0,1),(0,2),(1,2): emb [0.9, 0.1, 0.7], sig [0.9, 0.8, 0.7].
    expected = np.corrcoef([0.9, 0.1, 0.7], [0.9, 0.8, 0.7])[0, 1]
    assert strong_pair_correlation(S_emb, S_sig, 50.0) == pytest.approx(expected)
    # A single pair has no correlation.
    assert np.isnan(strong_pair_correlation(S_emb, S_sig, 1.0))


def test_alignment_metrics_refuses_a_trivial_k():
    """k >= n - 1 would make every neighbourhood all the other tokens: top-k overlap trivially 1, refused."""
    S_emb, S_sig = _hand_made_4x4()
    for k in (3, 5):
        with pytest.raises(ConfigError, match="k: must be <= n - 2 = 2 for 4 tokens"):
            alignment_metrics(S_emb, S_sig, k=k, q=50.0)
    m = alignment_metrics(S_emb, S_sig, k=2, q=50.0)
    assert m["k"] == 2 and m["num_tokens"] == 4
    assert m["strong_pair_precision"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------
# PCA
# ---------------------------------------------------------------------------


def _pairwise_distances(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)


def test_pca_known_axis_aligned_values():
    x = np.array([[-2.0, -1.0], [2.0, -1.0], [-2.0, 1.0], [2.0, 1.0]]) + np.array([5.0, -3.0])
    proj, ratio = pca_projection(x, 2)
    np.testing.assert_allclose(ratio, [0.8, 0.2])
    np.testing.assert_allclose(proj, [[-2, -1], [2, -1], [-2, 1], [2, 1]], atol=1e-12)


def test_pca_plane_in_5d_preserves_distances():
    rng = np.random.default_rng(6)
    basis, _ = np.linalg.qr(rng.normal(size=(5, 2)))  # (5, 2) orthonormal columns
    offset = rng.normal(size=5)
    coeffs = rng.normal(size=(20, 2)) * np.array([3.0, 1.0])
    x = coeffs @ basis.T + offset

    proj, ratio = pca_projection(x, 2)
    assert proj.shape == (20, 2) and ratio.shape == (2,)
    assert ratio.sum() == pytest.approx(1.0)
    assert ratio[0] >= ratio[1]
    np.testing.assert_allclose(_pairwise_distances(proj), _pairwise_distances(x), atol=1e-9)
    np.testing.assert_allclose(proj.mean(axis=0), 0.0, atol=1e-12)

    # One component keeps the dominant share of variance.
    p1, r1 = pca_projection(x, 1)
    assert p1.shape == (20, 1)
    assert r1[0] == pytest.approx(ratio[0])

    # Deterministic sign: negated data gives negated coordinates (same axes).
    proj_neg, _ = pca_projection(-x, 2)
    np.testing.assert_allclose(proj_neg, -proj, atol=1e-9)


def test_pca_basis_from_fixed_basis():
    rng = np.random.default_rng(7)
    basis, _ = np.linalg.qr(rng.normal(size=(5, 2)))
    fit = rng.normal(size=(30, 2)) * np.array([2.0, 1.0]) @ basis.T + 1.0
    later = rng.normal(size=(10, 2)) @ basis.T + 1.0  # same plane, different points

    proj_fit, ratio_fit = pca_projection(fit, 2)
    proj_later, ratio_later = pca_projection(later, 2, basis_from=fit)
    np.testing.assert_allclose(ratio_later, ratio_fit)
    # Same plane -> distances preserved in the fixed basis.
    np.testing.assert_allclose(_pairwise_distances(proj_later), _pairwise_distances(later), atol=1e-9)
    # Projecting the fit data in its own basis equals the default call.
    same, _ = pca_projection(fit, 2, basis_from=fit)
    np.testing.assert_allclose(same, proj_fit)
    # Consistency: a later point equal to a fit point maps to the same coordinates.
    mixed, _ = pca_projection(np.vstack([later, fit[:3]]), 2, basis_from=fit)
    np.testing.assert_allclose(mixed[-3:], proj_fit[:3], atol=1e-12)


def test_pca_zero_variance_gives_zero_ratio():
    proj, ratio = pca_projection(np.ones((4, 3)), 2)
    np.testing.assert_array_equal(ratio, 0.0)
    np.testing.assert_array_equal(proj, 0.0)


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------

_S4 = np.eye(4)


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda: cosine_similarity_matrix(np.ones(3)), "vectors"),
        (lambda: cosine_similarity_matrix([[1.0, np.nan]]), "vectors"),
        (lambda: offdiagonal(np.ones((2, 3))), "matrix"),
        (lambda: pearson([1.0, 2.0], [1.0, 2.0, 3.0]), "b"),
        (lambda: pearson([1.0], [1.0]), "a"),
        (lambda: spearman(np.ones((2, 2)), np.ones((2, 2))), "a"),
        (lambda: topk_neighbour_overlap(_S4, _S4, 0), "k"),
        (lambda: topk_neighbour_overlap(_S4, _S4, 4), "k"),
        (lambda: topk_neighbour_overlap(_S4, _S4, 1.5), "k"),
        (lambda: topk_neighbour_overlap(_S4, np.eye(5), 1), "S_b"),
        (lambda: strong_pair_precision(_S4, _S4, 0.0), "q"),
        (lambda: strong_pair_precision(_S4, _S4, 100.5), "q"),
        (lambda: strong_pair_correlation(_S4, _S4, -3), "q"),
        (lambda: strong_pair_precision(np.ones((4, 3)), _S4, 10), "S_emb"),
        (lambda: alignment_metrics(np.eye(2), np.eye(2)), "S_emb"),
        (lambda: alignment_metrics(_S4, np.eye(5)), "S_sig"),
        (lambda: alignment_metrics(_S4, _S4, k=0), "k"),
        (lambda: alignment_metrics(_S4, _S4, q=0), "q"),
        (lambda: pca_projection(np.ones((4, 3)), 0), "n_components"),
        (lambda: pca_projection(np.ones((4, 3)), 4), "n_components"),
        (lambda: pca_projection(np.ones((4, 3)), 2, basis_from=np.ones((4, 2))), "basis_from"),
        (lambda: pca_projection(np.ones(3)), "vectors"),
    ],
)
def test_bad_input_raises_config_error(call, field):
    with pytest.raises(ConfigError) as info:
        call()
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}:")
    assert isinstance(info.value, ValueError)


def test_error_message_states_range():
    with pytest.raises(ConfigError, match=r"\(0, 100\]"):
        strong_pair_precision(_S4, _S4, 0.0)
    with pytest.raises(ConfigError, match=r"\[1, 3\]"):
        topk_neighbour_overlap(_S4, _S4, 7)
