"""Metrics that know their limits: tie-aware top-k / strong pairs, closed-form ceilings and chance levels,
the Mantel permutation test and the token bootstrap, each against an independent reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from probsig_jax.analysis.limits import metric_ceilings, metric_chance_levels
from probsig_jax.analysis.metrics import (alignment_metrics, cosine_similarity_matrix, offdiagonal, pearson,
                                          strong_pair_precision, topk_neighbour_overlap)
from probsig_jax.analysis.significance import (bootstrap_correlations, bootstrap_interval, mantel_test,
                                               partial_correlation, partial_mantel_test)
from probsig_jax.validation import ConfigError


def block_similarity(sizes=(4, 4, 4)) -> np.ndarray:
    """1 within a group, 0 across: every row has heavy ties at 0."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return (labels[:, None] == labels[None, :]).astype(float)


def symmetric_noise(n, scale, rng):
    X = rng.normal(size=(n, n)) * scale
    return (X + X.T) / 2


def test_ceilings_of_a_tied_block_matrix_equal_their_closed_form_and_a_monte_carlo():
    S = block_similarity()
    k, q = 5, 10.0
    c = metric_ceilings(S, k=k, q=q)
    # Each row: 3 same-group tokens sure, 2 more drawn from the 8 tied at 0: (3 + 2^2 / 8) / 5.
    assert c["topk_overlap"] == pytest.approx((3 + 4 / 8) / 5)
    # 66 pairs, 18 within groups (all tied at 1); c = round(6.6) = 7 drawn from them: 18 (7/18)^2 / 7.
    assert c["strong_pair_precision"] == pytest.approx(7 / 18)
    ranks = scipy.stats.rankdata(offdiagonal(S))
    assert c["spearman"] == pytest.approx(np.sqrt(np.var(ranks) / ((66**2 - 1) / 12)))
    # Independent reference: a perfect embedding = the signature plus a perturbation far smaller than its gaps
    # (and far above TIE_TOLERANCE).
    rng = np.random.default_rng(0)
    draws = [alignment_metrics(S + symmetric_noise(12, 1e-4, rng), S, k=k, q=q) for _ in range(400)]
    for name in ("topk_overlap", "strong_pair_precision", "spearman"):
        values = np.array([d[name] for d in draws])
        assert abs(values.mean() - c[name]) < 4 * values.std() / np.sqrt(len(values)) + 1e-9, name
    # A matrix compared with itself scores its ceiling exactly.
    m = alignment_metrics(S, S, k=k, q=q)
    assert m["topk_overlap"] == pytest.approx(c["topk_overlap"])
    assert m["strong_pair_precision"] == pytest.approx(c["strong_pair_precision"])


def test_without_ties_every_ceiling_is_one():
    S = cosine_similarity_matrix(np.random.default_rng(1).normal(size=(15, 4)))
    assert all(v == pytest.approx(1.0) for v in metric_ceilings(S, k=4, q=10.0).values())


def test_tie_aware_metrics_do_not_depend_on_token_order():
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1, 2], (5, 4, 6))
    S_sig = block_similarity((5, 4, 6)) * np.array([0.7, 0.5, 0.9])[labels][:, None]   # ties within and at 0
    S_emb = S_sig + symmetric_noise(15, 0.3, rng)
    base = alignment_metrics(S_emb, S_sig, k=4, q=30.0)
    assert np.isfinite(base["strong_pair_pearson"])
    for seed in range(5):
        p = np.random.default_rng(seed).permutation(15)
        relabelled = alignment_metrics(S_emb[np.ix_(p, p)], S_sig[np.ix_(p, p)], k=4, q=30.0)
        for name in ("topk_overlap", "strong_pair_precision", "strong_pair_pearson", "pearson", "spearman"):
            assert relabelled[name] == pytest.approx(base[name], abs=1e-12), name


def test_chance_levels_match_random_relabellings():
    rng = np.random.default_rng(3)
    n, k, q = 14, 3, 10.0
    S_sig = cosine_similarity_matrix(rng.normal(size=(n, 3)))
    S_emb = cosine_similarity_matrix(rng.normal(size=(n, 3)))
    chance = metric_chance_levels(n, k=k, q=q)
    assert chance["topk_overlap"] == pytest.approx(k / (n - 1))
    assert chance["strong_pair_precision"] == pytest.approx(round(0.1 * 91) / 91)
    draws = []
    for _ in range(3000):
        p = rng.permutation(n)
        draws.append((topk_neighbour_overlap(S_emb[np.ix_(p, p)], S_sig, k),
                      strong_pair_precision(S_emb[np.ix_(p, p)], S_sig, q)))
    mean, sem = np.mean(draws, axis=0), np.std(draws, axis=0) / np.sqrt(len(draws))
    assert abs(mean[0] - chance["topk_overlap"]) < 4 * sem[0]
    assert abs(mean[1] - chance["strong_pair_precision"]) < 4 * sem[1]


def test_mantel_p_values_are_uniform_under_the_null_and_small_on_planted_structure():
    rng = np.random.default_rng(4)
    p_values = []
    for i in range(200):
        A = cosine_similarity_matrix(rng.normal(size=(16, 3)))
        B = cosine_similarity_matrix(rng.normal(size=(16, 3)))
        p_values.append(mantel_test(A, B, permutations=199, seed=i)["p"])
    assert scipy.stats.kstest(p_values, "uniform").pvalue > 0.01
    X = rng.normal(size=(30, 4))
    planted = mantel_test(cosine_similarity_matrix(X + 0.7 * rng.normal(size=X.shape)), cosine_similarity_matrix(X),
                          permutations=999, seed=0)
    assert planted["p"] < 0.01 and planted["r"] > planted["null_q975"]
    assert planted["p"] == pytest.approx(1 / 1000)


def test_mantel_null_equals_a_loop_over_the_same_relabellings():
    from probsig_jax.analysis import significance
    rng = np.random.default_rng(5)
    A, B = (cosine_similarity_matrix(rng.normal(size=(12, 3))) for _ in range(2))
    perms = significance._permutations(12, 50, 7)
    ours = significance._permuted_inner_products(significance._standardised(A, "pearson"),
                                                 [significance._standardised(B, "pearson")], perms)[:, 0]
    loop = [pearson(offdiagonal(A[np.ix_(p, p)]), offdiagonal(B)) for p in perms]
    np.testing.assert_allclose(ours, loop, atol=1e-6)
    observed = mantel_test(A, B, permutations=999)
    assert observed["r"] == pytest.approx(pearson(offdiagonal(A), offdiagonal(B)), abs=1e-12)
    rank = mantel_test(A, B, permutations=9, method="spearman")
    assert rank["r"] == pytest.approx(scipy.stats.spearmanr(offdiagonal(A), offdiagonal(B))[0], abs=1e-12)


def test_bootstrap_interval_covers_a_known_correlation_about_95_percent_of_the_time():
    rng = np.random.default_rng(6)
    d, mu, noise = 3, 0.5, 1.0
    # The population value: the correlation of (x.x', y.y') over independent token pairs, by Monte Carlo.
    x1, x2 = rng.normal(size=(2, 400_000, d)) + mu
    y1, y2 = x1 + noise * rng.normal(size=x1.shape), x2 + noise * rng.normal(size=x2.shape)
    rho = np.corrcoef((x1 * x2).sum(1), (y1 * y2).sum(1))[0, 1]
    covered = 0
    for i in range(200):
        X = rng.normal(size=(40, d)) + mu
        Y = X + noise * rng.normal(size=X.shape)
        low, high = bootstrap_interval(bootstrap_correlations([X @ X.T, Y @ Y.T], resamples=500, seed=i)[:, 0, 1])
        covered += low <= rho <= high
    assert 0.90 <= covered / 200 <= 0.99


def test_bootstrap_resamples_equal_a_loop_that_builds_each_resampled_matrix():
    rng = np.random.default_rng(7)
    A, B = (cosine_similarity_matrix(rng.normal(size=(15, 3))) for _ in range(2))
    ours = bootstrap_correlations([A, B], resamples=20, seed=3)[:, 0, 1]
    draws = np.random.default_rng(3)
    for r in ours:
        idx = draws.integers(0, 15, 15)
        rows, cols = np.triu_indices(15, k=1)
        keep = idx[rows] != idx[cols]
        a, b = A[idx[rows][keep], idx[cols][keep]], B[idx[rows][keep], idx[cols][keep]]
        assert r == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-12)


def test_partial_correlation_equals_the_correlation_of_regression_residuals():
    rng = np.random.default_rng(8)
    c = rng.normal(size=500)
    a, b = c + rng.normal(size=500), 0.5 * c + rng.normal(size=500) + 0.3 * rng.normal(size=500)
    design = np.stack([np.ones(500), c], 1)
    res = [v - design @ np.linalg.lstsq(design, v, rcond=None)[0] for v in (a, b)]
    r = np.corrcoef([a, b, c])
    assert partial_correlation(r[0, 1], r[0, 2], r[1, 2]) == pytest.approx(np.corrcoef(*res)[0, 1], abs=1e-12)


def test_partial_mantel_separates_a_driver_from_a_correlated_bystander():
    rng = np.random.default_rng(9)
    X = rng.normal(size=(40, 4))
    driver = cosine_similarity_matrix(X)
    bystander = cosine_similarity_matrix(X + 1.5 * rng.normal(size=X.shape))
    weights = cosine_similarity_matrix(X + 0.5 * rng.normal(size=X.shape))
    assert partial_mantel_test(weights, driver, bystander, permutations=499)["p"] < 0.01
    # The bystander adds nothing once the driver is known.
    assert partial_mantel_test(weights, bystander, driver, permutations=499)["p"] > 0.01


@pytest.mark.parametrize("call, field", [
    (lambda: mantel_test(np.eye(4), np.eye(4), permutations=0), "permutations"),
    (lambda: mantel_test(np.eye(4), np.eye(4), method="kendall"), "method"),
    (lambda: mantel_test(np.eye(4), np.eye(5)), "S_b"),
    (lambda: bootstrap_correlations([np.eye(4)]), "matrices"),
    (lambda: bootstrap_correlations([np.eye(4), np.eye(4)], resamples=0), "resamples"),
    (lambda: bootstrap_interval([0.1, 0.2], confidence=1.5), "confidence"),
    (lambda: metric_chance_levels(2, k=1, q=10.0), "n"),
])
def test_bad_input_names_the_field(call, field):
    with pytest.raises(ConfigError) as err:
        call()
    assert err.value.field == field


def test_vector_correlation_test_matches_scipy_and_its_null_is_centred():
    """The observed r equals scipy's Pearson / Spearman; under independence the null is centred on 0 with the
    1 / sqrt(n) spread and p is not small; under dependence p is the smallest possible value."""
    import scipy.stats

    from probsig_jax.analysis.significance import vector_correlation_test

    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, size=400).astype(float)            # tied values, as a collision count
    y = x + rng.normal(size=400)
    for method, ref in (("pearson", scipy.stats.pearsonr(x, y)[0]), ("spearman", scipy.stats.spearmanr(x, y)[0])):
        t = vector_correlation_test(x, y, permutations=499, seed=1, method=method)
        assert t["r"] == pytest.approx(ref, abs=1e-12)
        assert t["p"] == pytest.approx(1 / 500)
        assert abs(t["null_mean"]) < 0.01 and t["null_std"] == pytest.approx(1 / np.sqrt(400), rel=0.15)
    independent = vector_correlation_test(x, rng.normal(size=400), permutations=499, seed=1)
    assert independent["p"] > 0.01
    assert np.isnan(vector_correlation_test(np.ones(5), np.arange(5.0))["r"])
    with pytest.raises(ConfigError, match="^x: "):
        vector_correlation_test(np.arange(4.0), np.arange(5.0))
