"""Tests for probsig_jax.theory.corpus: truncated modes of the corpus M and the predicted similarity."""

from __future__ import annotations

import time

import numpy as np
import pytest

from probsig_jax.analysis import offdiagonal, pearson
from probsig_jax.signatures import corpus as C
from probsig_jax.signatures import signature_matrix
from probsig_jax.theory import linear
from probsig_jax.theory.corpus import max_modes, predicted_similarity, time_for_growth, truncated_signature_modes
from probsig_jax.validation import ConfigError

V = 30


def zipf_stream(n: int, vocab: int, seed: int, a: float = 1.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ranks = np.minimum(rng.zipf(a, size=n), vocab) - 1
    return rng.permutation(vocab)[ranks].astype(np.uint32)


@pytest.fixture(scope="module")
def small():
    """A V = 30 corpus with a Markov structure (so M has a spread spectrum) and its dense M."""
    rng = np.random.default_rng(0)
    trans = rng.dirichlet(np.full(V, 0.3), size=V)
    t = np.empty(6000, dtype=np.uint32)
    t[0] = 0
    u = rng.random(len(t))
    cdf = np.cumsum(trans, axis=1)
    for i in range(1, len(t)):
        t[i] = min(int(np.searchsorted(cdf[t[i - 1]], u[i])), V - 1)
    pc = C.count_context_pairs(t, V, window=2)
    M = signature_matrix(pc.to_signature_counts())
    return pc, M


def projector(X):
    return X @ X.T


@pytest.mark.parametrize("method,kwargs", [("arpack", {}), ("randomized", {"oversample": 5, "power_iterations": 3})])
def test_full_rank_modes_equal_dense(small, method, kwargs):
    pc, M = small
    dense = linear.signature_modes(M)
    k = len(dense.S)
    assert k == V - 1                                  # 1^T M = 0
    modes = truncated_signature_modes(pc, k, method=method, **kwargs)
    assert modes.P.shape == (V, k) and modes.Q.shape == (V, k) and modes.S.shape == (k,)
    assert np.all(np.diff(modes.S) <= 0)
    np.testing.assert_allclose(modes.S, np.asarray(dense.S), atol=1e-8)
    np.testing.assert_allclose(projector(modes.Q), projector(np.asarray(dense.Q)), atol=1e-8)
    np.testing.assert_allclose(projector(modes.P), projector(np.asarray(dense.P)), atol=1e-8)
    np.testing.assert_allclose((modes.P * modes.S) @ modes.Q.T, M, atol=1e-10)
    # leading modes one by one (distinct singular values)
    for i in range(3):
        np.testing.assert_allclose(np.outer(modes.Q[:, i], modes.Q[:, i]),
                                   np.outer(dense.Q[:, i], dense.Q[:, i]), atol=1e-7)


@pytest.mark.parametrize("method", ["arpack", "randomized"])
def test_truncated_leading_modes(small, method):
    pc, M = small
    dense = linear.signature_modes(M)
    modes = truncated_signature_modes(pc, 5, method=method, power_iterations=8, seed=3)
    np.testing.assert_allclose(modes.S, np.asarray(dense.S[:5]), rtol=1e-6)
    np.testing.assert_allclose(projector(modes.Q[:, :3]), projector(np.asarray(dense.Q[:, :3])), atol=1e-5)


def test_predicted_similarity_equals_dense_gram(small):
    pc, M = small
    modes = truncated_signature_modes(pc, V - 1)
    dense = linear.signature_modes(M)
    tokens = np.array([4, 0, 29, 7, 13, 4])
    for t in (0.0, 3.0, 40.0):
        emb = np.asarray(linear.predicted_embedding_gram(M, t, 1e-3, 16, modes=dense))[np.ix_(tokens, tokens)]
        unemb = np.asarray(linear.predicted_unembedding_gram(M, t, 1e-3, 16))[np.ix_(tokens, tokens)]
        for side, G in (("embedding", emb), ("unembedding", unemb)):
            d = np.sqrt(np.diag(G))
            np.testing.assert_allclose(predicted_similarity(modes, tokens, t, side=side), G / np.outer(d, d),
                                       atol=1e-9, err_msg=f"{side} t={t}")
    np.testing.assert_allclose(predicted_similarity(modes, tokens, 0.0), (tokens[:, None] == tokens).astype(float))


def test_small_t_limit_matches_M_similarity(small):
    pc, M = small
    modes = truncated_signature_modes(pc, V - 1)
    tokens = np.arange(V)
    t = 1e-4
    pred = predicted_similarity(modes, tokens, t)
    # exact small-t form: off-diagonal = 2 t^2 <M_s, M_s'> + O(t^4), i.e. proportional to the
    # *unnormalised* inner products; dividing by the column norms gives the "M" cosine
    norms = np.linalg.norm(M, axis=0)
    sig_M = C.signature_similarity(pc, tokens, side="input", kind="M")
    off = ~np.eye(V, dtype=bool)
    np.testing.assert_allclose((pred / (2 * t * t * np.outer(norms, norms)))[off], sig_M[off], rtol=1e-6, atol=1e-9)
    assert pearson(offdiagonal(pred), offdiagonal(sig_M * np.outer(norms, norms))) > 0.999999
    # the ordering against the cosine itself, on a token set of comparable column norms
    mid = np.argsort(norms)[V // 4: 3 * V // 4]
    assert pearson(offdiagonal(predicted_similarity(modes, mid, t)),
                   offdiagonal(C.signature_similarity(pc, mid))) > 0.9
    # unembedding side: rows of M
    pred_u = predicted_similarity(modes, tokens, t, side="unembedding")
    rn = np.linalg.norm(M, axis=1)
    sig_out = C.signature_similarity(pc, tokens, side="output", kind="M")
    np.testing.assert_allclose((pred_u / (2 * t * t * np.outer(rn, rn)))[off], sig_out[off], rtol=1e-6, atol=1e-9)


def test_learned_part_is_the_M_cosine_at_small_t(small):
    """include_init=False: the learned Gram Q diag(2 sinh^2(S t)) Q^T; at full rank and small t it is
    proportional to M^T M, so its cosine equals the "M" signature similarity exactly (both sides)."""
    pc, M = small
    modes = truncated_signature_modes(pc, V - 1)
    tokens = np.arange(V)
    for side, kind_side in (("embedding", "input"), ("unembedding", "output")):
        learned = predicted_similarity(modes, tokens, 1e-4, side=side, include_init=False)
        np.testing.assert_allclose(learned, C.signature_similarity(pc, tokens, side=kind_side, kind="M"),
                                   atol=1e-7, err_msg=side)
    # later on the leading modes take over: no longer the M cosine, still a valid cosine matrix
    late = predicted_similarity(modes, tokens, 50.0 / float(modes.S[0]), include_init=False)
    np.testing.assert_allclose(np.diag(late), 1.0)
    assert np.all(np.abs(late) <= 1.0) and np.allclose(late, late.T)


def test_time_for_growth(small):
    pc, _ = small
    modes = truncated_signature_modes(pc, 3)
    t = time_for_growth(modes, 10.0)
    assert np.isclose(np.cosh(2 * modes.S[0] * t), 100.0, rtol=1e-12)
    assert time_for_growth(modes, 1.0) == 0.0
    with pytest.raises(ConfigError, match="growth"):
        time_for_growth(modes, 0.5)


def test_errors(small):
    pc, _ = small
    assert max_modes(pc) == V - 1
    with pytest.raises(ConfigError, match=r"^k: .*\[1, 29\]"):
        truncated_signature_modes(pc, V)
    with pytest.raises(ConfigError, match="^k:"):
        truncated_signature_modes(pc, 0)
    with pytest.raises(ConfigError, match="method"):
        truncated_signature_modes(pc, 2, method="lanczos")
    modes = truncated_signature_modes(pc, 2)
    with pytest.raises(ConfigError, match="side"):
        predicted_similarity(modes, [0, 1], 1.0, side="input")
    with pytest.raises(ConfigError, match="^t:"):
        predicted_similarity(modes, [0, 1], -1.0)
    with pytest.raises(ConfigError, match="tokens"):
        predicted_similarity(modes, [0, V], 1.0)


def _big_corpus():
    Vb = 151936
    t = zipf_stream(400_000, Vb, seed=1, a=1.25)
    return C.count_context_pairs(t, Vb, window=1)


def test_llm_scale_svd_runs():
    """V = 151936 operator with a few hundred thousand nonzeros, k = 32 (well under 10 s here)."""
    pc = _big_corpus()
    assert 100_000 < pc.num_pairs < 1_000_000
    start = time.perf_counter()
    modes = truncated_signature_modes(pc, 32)
    elapsed = time.perf_counter() - start
    assert modes.Q.shape == (151936, 32) and np.all(np.diff(modes.S) <= 0)
    op = C.signature_matrix_operator(pc)
    np.testing.assert_allclose(np.linalg.norm(op.matmat(modes.Q), axis=0), modes.S, rtol=1e-8)
    top = C.top_tokens(pc, 50)
    sim = predicted_similarity(modes, top, time_for_growth(modes, 100.0))
    assert sim.shape == (50, 50) and np.all(np.isfinite(sim))
    print(f"arpack k=32 on V=151936, nnz={pc.num_pairs}: {elapsed:.2f} s")


@pytest.mark.slow
def test_llm_scale_randomized_agrees_with_arpack():
    pc = _big_corpus()
    a = truncated_signature_modes(pc, 16)
    r = truncated_signature_modes(pc, 16, method="randomized", oversample=20, power_iterations=6)
    np.testing.assert_allclose(r.S[:4], a.S[:4], rtol=1e-4)


def test_k_limited_by_tokens_that_occur():
    """Only 5 distinct tokens in a V = 1000 vocabulary: M has at most 5 modes (exactly, after compression)."""
    t = np.array([1, 5, 7, 1, 9, 11, 5, 1, 7, 9, 11, 1, 5] * 20, dtype=np.uint32)
    pc = C.count_context_pairs(t, 1000, window=2)
    with pytest.raises(ConfigError, match=r"^k: must be in \[1, 4\]"):
        truncated_signature_modes(pc, 5)
    M = signature_matrix(pc.to_signature_counts())
    dense_S = np.linalg.svd(M, compute_uv=False)
    assert np.sum(dense_S > 1e-12 * dense_S[0]) == 5
    assert max_modes(pc) == 4 and max_modes(pc, "randomized") == 5
    arpack = truncated_signature_modes(pc, 4)
    np.testing.assert_allclose(arpack.S, dense_S[:4], rtol=1e-10)
    full = truncated_signature_modes(pc, 5, method="randomized")        # the randomized method reaches the bound
    np.testing.assert_allclose(full.S, dense_S[:5], rtol=1e-10)
    np.testing.assert_allclose((full.P * full.S) @ full.Q.T, M, atol=1e-12)
