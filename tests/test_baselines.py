"""Competing corpus predictors (frequency, PPMI / SPPMI SVD) against dense numpy references, and the
predictor table that ranks them."""

from __future__ import annotations

import numpy as np
import pytest

from probsig_jax.analysis.alignment import AlignmentConfig, predictor_table
from probsig_jax.analysis.metrics import cosine_similarity_matrix
from probsig_jax.signatures.baselines import frequency_similarity, ppmi_matrix, ppmi_similarity
from probsig_jax.signatures.pair_counts import count_context_pairs


@pytest.fixture(scope="module")
def counts():
    rng = np.random.default_rng(0)
    V = 30
    # A Markov chain with structure, so PMI is far from zero.
    P = rng.dirichlet(np.full(V, 0.3), size=V)
    ids = [0]
    for _ in range(20_000):
        ids.append(rng.choice(V, p=P[ids[-1]]))
    return count_context_pairs(np.asarray(ids), V, 1)


@pytest.mark.parametrize("shift", [1.0, 5.0])
def test_ppmi_matrix_equals_a_dense_computation(counts, shift):
    N = counts.counts.toarray().astype(float)
    with np.errstate(divide="ignore"):
        pmi = np.log(N * N.sum() / np.outer(N.sum(1), N.sum(0))) - np.log(shift)
    dense = np.where(N > 0, np.maximum(pmi, 0.0), 0.0)
    np.testing.assert_allclose(ppmi_matrix(counts, shift).toarray(), dense, atol=1e-12)


@pytest.mark.parametrize("arpack", [False, True])
@pytest.mark.parametrize("side", ["input", "output"])
def test_ppmi_similarity_equals_the_dense_truncated_svd(counts, side, arpack, monkeypatch):
    if arpack:                                   # the large-vocabulary path on the same small matrix
        from probsig_jax.signatures import baselines
        monkeypatch.setattr(baselines, "DENSE_SVD_MAX", 0)
    X = ppmi_matrix(counts).toarray()
    X = X if side == "input" else X.T
    U, S, _ = np.linalg.svd(X)
    rank = 8
    reference = cosine_similarity_matrix((U[:, :rank] * np.sqrt(S[:rank])))
    tokens = np.arange(0, 30, 2)
    np.testing.assert_allclose(ppmi_similarity(counts, tokens, side=side, rank=rank), reference[np.ix_(tokens, tokens)],
                               atol=1e-8)


def test_frequency_similarity(counts):
    tokens = np.array([1, 4, 9])
    f = counts.counts.toarray().sum(1)[tokens]
    np.testing.assert_allclose(frequency_similarity(counts, tokens), -np.abs(np.log(f)[:, None] - np.log(f)[None]))


def test_predictor_table_finds_the_planted_driver():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 4))
    driver = cosine_similarity_matrix(X)
    weak = cosine_similarity_matrix(X + 2.0 * rng.normal(size=X.shape))
    weight = cosine_similarity_matrix(X + 0.5 * rng.normal(size=X.shape))
    table = predictor_table(weight, {"weak": weak, "driver": driver}, "weak",
                            AlignmentConfig(permutations=199, bootstrap=300))
    assert table["best"] == "driver"
    assert table["predictors"]["driver"]["minus_reference"]["ci_low"] > 0
    assert table["predictors"]["driver"]["p"] < 0.01
