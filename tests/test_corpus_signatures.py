"""Tests for probsig_jax.signatures.corpus: streaming windowed counts and sparse signatures.

References: a brute-force double loop over (position, window offset) for the counts, dense
V x V matrices built by hand for V ~ 20, and the dense probsig_jax.signatures functions
through CorpusPairCounts.to_signature_counts.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from probsig_jax import signatures as dense_pkg
from probsig_jax.signatures import corpus as C
from probsig_jax.signatures import (
    cosine_similarity,
    hellinger_similarity,
    input_signatures,
    output_signatures,
    signature_matrix,
    signature_similarity,
)
from probsig_jax.validation import ConfigError


def brute_force(tokens: np.ndarray, V: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense N (V, V) and n_y by the definition: for i = 0..n-2, label t[i+1], j in [max(0, i-w+1), i]."""
    N = np.zeros((V, V), dtype=np.int64)
    n_y = np.zeros(V, dtype=np.int64)
    for i in range(len(tokens) - 1):
        y = tokens[i + 1]
        n_y[y] += 1
        for j in range(max(0, i - w + 1), i + 1):
            N[tokens[j], y] += 1
    return N, n_y


def zipf_stream(n: int, V: int, seed: int, a: float = 1.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ranks = np.minimum(rng.zipf(a, size=n), V) - 1
    return rng.permutation(V)[ranks].astype(np.uint32)


def split(tokens: np.ndarray, cuts) -> list[np.ndarray]:
    return np.split(tokens, sorted(cuts))


# ----------------------------------------------------------------------------- counts

@pytest.mark.parametrize("w", [1, 2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_counts_equal_brute_force_and_counter(w, seed):
    V = 11
    rng = np.random.default_rng(seed)
    t = rng.integers(0, V, size=200).astype(np.uint32)
    N, n_y = brute_force(t, V, w)
    for pc in (C.count_context_pairs(t, V, w), C.count_context_pairs_counter(t, V, w)):
        assert pc.counts.dtype == np.int64 and sp.isspmatrix_csr(pc.counts)
        np.testing.assert_array_equal(pc.counts.toarray(), N)
        np.testing.assert_array_equal(pc.label_counts, n_y)
        np.testing.assert_array_equal(pc.context_weights, N.sum(axis=1))
        np.testing.assert_array_equal(pc.token_frequencies, np.bincount(t, minlength=V))
        assert pc.num_positions == len(t) - 1 and pc.window == w and pc.vocab_size == V
        assert pc.num_pairs == np.count_nonzero(N)


@pytest.mark.parametrize("w", [1, 2, 3, 5])
@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 7, 64])
def test_counts_across_shards_and_chunks(w, chunk):
    V = 9
    t = np.random.default_rng(10 * w + chunk).integers(0, V, size=120).astype(np.uint32)
    N, n_y = brute_force(t, V, w)
    shards = split(t, [0, 1, 2, 2, 5, 6, 40, 41, 43, 119])   # empty shards, 1-token shards, shorter than w
    for arrays in (shards, iter(shards), tuple(shards)):
        pc = C.count_context_pairs(arrays, V, w, chunk_tokens=chunk)
        np.testing.assert_array_equal(pc.counts.toarray(), N)
        np.testing.assert_array_equal(pc.label_counts, n_y)
        assert pc.num_positions == len(t) - 1 and pc.first_token == t[0]
    ref = C.count_context_pairs_counter(shards, V, w)
    np.testing.assert_array_equal(ref.counts.toarray(), N)


def test_counts_short_streams_and_dtypes():
    V = 5
    for t in ([3, 1], [0, 0, 0], [4, 2, 4]):
        for w in (1, 2, 4):
            N, n_y = brute_force(np.array(t), V, w)
            for dtype in (np.uint32, np.int64, np.uint16, np.int32, np.uint64, np.uint8):
                pc = C.count_context_pairs(np.array(t, dtype=dtype), V, w)
                np.testing.assert_array_equal(pc.counts.toarray(), N)
                np.testing.assert_array_equal(pc.label_counts, n_y)


def test_many_chunks_merge_exactly():
    V = 300
    t = zipf_stream(20_000, V, seed=3)
    N, _ = brute_force(t, V, 3)
    pc = C.count_context_pairs(t, V, 3, chunk_tokens=97)
    np.testing.assert_array_equal(pc.counts.toarray(), N)
    assert pc.counts.has_canonical_format


def test_count_errors():
    t = np.array([0, 1, 2], dtype=np.uint32)
    with pytest.raises(ConfigError, match="window"):
        C.count_context_pairs(t, 3, 0)
    with pytest.raises(ConfigError, match="vocab_size"):
        C.count_context_pairs(t, 0)
    with pytest.raises(ConfigError, match="chunk_tokens"):
        C.count_context_pairs(t, 3, chunk_tokens=0)
    with pytest.raises(ConfigError, match=r"tokens.*max id 7"):
        C.count_context_pairs([t, np.array([7, 1])], 5)
    with pytest.raises(ConfigError, match=r"tokens.*max id 7"):
        C.count_context_pairs_counter([t, np.array([7, 1])], 5)
    with pytest.raises(ConfigError, match=r"tokens.*min id -1"):
        C.count_context_pairs(np.array([0, -1, 2]), 5)
    with pytest.raises(ConfigError, match="tokens.*1-D"):
        C.count_context_pairs(np.zeros((2, 2), dtype=np.uint32), 5)
    with pytest.raises(ConfigError, match="tokens.*integer"):
        C.count_context_pairs(np.array([0.0, 1.0]), 5)
    with pytest.raises(ConfigError, match="at least 2 tokens"):
        C.count_context_pairs([np.array([1], dtype=np.uint32), np.array([], dtype=np.uint32)], 5)
    with pytest.raises(ConfigError, match="at least 2 tokens"):
        C.count_context_pairs_counter(np.array([1]), 5)


# ----------------------------------------------------------------------------- signatures vs dense references

V_SMALL = 20


@pytest.fixture(scope="module", params=[1, 3])
def small(request):
    """A small corpus with every token occurring as context and as label, plus its dense N."""
    w = request.param
    rng = np.random.default_rng(7 + w)
    t = np.concatenate([rng.permutation(V_SMALL), zipf_stream(3000, V_SMALL, seed=w, a=1.2),
                        rng.permutation(V_SMALL)]).astype(np.uint32)
    N, n_y = brute_force(t, V_SMALL, w)
    pc = C.count_context_pairs(np.array_split(t, 5), V_SMALL, w, chunk_tokens=301)
    return pc, N.astype(np.float64), n_y.astype(np.float64), len(t) - 1, w


def dense_M(N, n_pos):
    f = N.sum(axis=1)
    return (N.T - (1.0 / N.shape[0]) * f[None, :]) / n_pos


def test_signatures_equal_dense_by_hand(small):
    pc, N, n_y, n_pos, w = small
    tokens = np.array([3, 0, 17, 3, 11])
    Q = N / N.sum(axis=1, keepdims=True)
    R = N.T / (w * n_y[:, None])
    np.testing.assert_allclose(C.input_signatures(pc, tokens).toarray(), Q[tokens], rtol=1e-14)
    np.testing.assert_allclose(C.output_signatures(pc, tokens).toarray(), R[tokens], rtol=1e-14)
    np.testing.assert_allclose(C.input_signatures(pc, tokens).sum(axis=1), 1.0, rtol=1e-14)


def test_signatures_equal_dense_package_via_bridge(small):
    pc, N, n_y, n_pos, w = small
    sc = pc.to_signature_counts()
    assert sc.seq_len == w and sc.total_weight == n_pos
    np.testing.assert_array_equal(sc.joint, N.T)
    all_tok = np.arange(V_SMALL)
    np.testing.assert_allclose(C.input_signatures(pc, all_tok).toarray(), input_signatures(sc).T, rtol=1e-14)
    np.testing.assert_allclose(C.output_signatures(pc, all_tok).toarray(), output_signatures(sc), rtol=1e-14)
    np.testing.assert_allclose(signature_matrix(sc), dense_M(N, n_pos), rtol=1e-12, atol=1e-15)
    # restricted to a token set, the M columns are unchanged
    tokens = np.array([5, 2, 9])
    np.testing.assert_allclose(signature_matrix(pc.to_signature_counts(tokens)), signature_matrix(sc)[:, tokens],
                               rtol=1e-12, atol=1e-15)


def test_operator_equals_dense_M(small):
    pc, N, n_y, n_pos, w = small
    M = dense_M(N, n_pos)
    op = C.signature_matrix_operator(pc)
    assert op.shape == (V_SMALL, V_SMALL)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(V_SMALL), rng.standard_normal(V_SMALL)
    X, Y = rng.standard_normal((V_SMALL, 4)), rng.standard_normal((V_SMALL, 3))
    np.testing.assert_allclose(op.matvec(x), M @ x, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(op.rmatvec(y), M.T @ y, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(op.matmat(X), M @ X, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(op.rmatmat(Y), M.T @ Y, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(op @ np.eye(V_SMALL), M, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(op.H @ np.eye(V_SMALL), M.T, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.ones(V_SMALL) @ (op @ np.eye(V_SMALL)), 0.0, atol=1e-15)   # 1^T M = 0


def test_similarities_equal_dense(small):
    pc, N, n_y, n_pos, w = small
    tokens = np.array([0, 4, 1, 19, 7, 12, 4])
    M = dense_M(N, n_pos)
    Q = (N / N.sum(axis=1, keepdims=True)).T            # columns = Q_s
    R = N.T / (w * n_y[:, None])                        # rows = R_y
    ref = {
        ("input", "M"): cosine_similarity(M[:, tokens]),
        ("output", "M"): cosine_similarity(M[tokens].T),
        ("input", "cosine"): cosine_similarity(Q[:, tokens]),
        ("output", "cosine"): cosine_similarity(R[tokens].T),
        ("input", "hellinger"): hellinger_similarity(Q[:, tokens]),
        ("output", "hellinger"): hellinger_similarity(R[tokens].T),
    }
    for (side, kind), expected in ref.items():
        got = C.signature_similarity(pc, tokens, side=side, kind=kind)
        assert got.shape == (len(tokens), len(tokens)) and got.dtype == np.float64
        np.testing.assert_allclose(got, expected, atol=1e-10, err_msg=f"{side} {kind}")
    # and the dense package's named similarities through the bridge
    sc = pc.to_signature_counts()
    np.testing.assert_allclose(C.signature_similarity(pc, np.arange(V_SMALL)), signature_similarity(sc), atol=1e-10)
    np.testing.assert_allclose(C.signature_similarity(pc, np.arange(V_SMALL), kind="hellinger"),
                               dense_pkg.similarity_by_name("hellinger_Q", sc), atol=1e-10)


def test_top_tokens(small):
    pc, *_ = small
    freq = pc.token_frequencies
    top = C.top_tokens(pc, 5)
    order = sorted(range(V_SMALL), key=lambda i: (-freq[i], i))
    assert top.tolist() == order[:5]
    assert C.top_tokens(pc, 5, exclude=[order[0], 999]).tolist() == order[1:6]
    assert C.top_tokens(pc, V_SMALL + 5).tolist() == order                 # only tokens that occur
    assert C.top_tokens(pc, 100, exclude=order[:3]).tolist() == order[3:]
    with pytest.raises(ConfigError, match="^n:"):
        C.top_tokens(pc, 0)


def test_top_tokens_ties_by_id():
    pc = C.count_context_pairs(np.array([5, 2, 5, 2, 7, 1], dtype=np.uint32), 8)
    assert C.top_tokens(pc, 4).tolist() == [2, 5, 1, 7]
    assert C.top_tokens(pc, 10).tolist() == [2, 5, 1, 7]


def test_signature_errors():
    # token 3 is only the last token (never context), token 0 only the first (never a label)
    pc = C.count_context_pairs(np.array([0, 1, 2, 1, 3], dtype=np.uint32), 5, 1)
    with pytest.raises(ConfigError, match=r"tokens: .*never occur as context.*\[3\]"):
        C.input_signatures(pc, [1, 3])
    with pytest.raises(ConfigError, match=r"tokens: .*never occur as labels.*\[0\]"):
        C.output_signatures(pc, [0, 1])
    with pytest.raises(ConfigError, match=r"tokens: .*never occur as context.*\[4\]"):
        C.signature_similarity(pc, [1, 4])
    with pytest.raises(ConfigError, match=r"tokens: ids must be in \[0, 4\]"):
        C.input_signatures(pc, [1, 5])
    with pytest.raises(ConfigError, match="tokens"):
        C.signature_similarity(pc, [])
    with pytest.raises(ConfigError, match="side"):
        C.signature_similarity(pc, [1, 2], side="both")
    with pytest.raises(ConfigError, match="kind"):
        C.signature_similarity(pc, [1, 2], kind="js")
    with pytest.raises(ConfigError, match="tokens"):
        C.count_context_pairs(np.arange(3000) % 3000, 3000).to_signature_counts(np.arange(3000).repeat(4))
    assert C.signature_similarity(pc, [1, 2], side="output").shape == (2, 2)


def test_corpus_pair_counts_validation():
    counts = sp.csr_matrix((3, 3), dtype=np.int64)
    with pytest.raises(ConfigError, match="label_counts"):
        C.CorpusPairCounts(counts, 1, 3, 2, np.array([1, 0, 0]), 0)
    with pytest.raises(ConfigError, match="counts"):
        C.CorpusPairCounts(counts.toarray(), 1, 3, 1, np.array([1, 0, 0]), 0)
    with pytest.raises(ConfigError, match="first_token"):
        C.CorpusPairCounts(counts, 1, 3, 1, np.array([1, 0, 0]), 3)


def test_counts_with_more_distinct_ids_than_uint32_codes_allow():
    """A chunk with > 65536 distinct ids takes the uint64 code path; both paths agree with the Counter."""
    V = 70_000
    rng = np.random.default_rng(5)
    t = np.concatenate([rng.permutation(V), rng.integers(0, V, 5000), rng.permutation(V)[:100]]).astype(np.uint32)
    ref = C.count_context_pairs_counter(t, V, 2)
    for chunk in (1 << 22, 50_000, 1000):                    # uint64 codes (70k distinct ids), uint32 codes
        pc = C.count_context_pairs(t, V, 2, chunk_tokens=chunk)
        assert (pc.counts != ref.counts).nnz == 0 and pc.counts.dtype == np.int64
        np.testing.assert_array_equal(pc.label_counts, ref.label_counts)
