"""Tests for probsig_jax.signatures against hand-derived numbers and brute-force references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.spatial import distance

from probsig_jax.data import Dataset, PRESETS, make_composite_addition
from probsig_jax.signatures import (
    SIMILARITIES,
    SignatureCounts,
    cooccurrence_matrix,
    cooccurrence_signatures,
    cosine_similarity,
    frequency_weights,
    hellinger_similarity,
    input_signatures,
    jensen_shannon_similarity,
    joint_signature,
    output_signatures,
    signature_counts,
    signature_matrix,
    signature_similarity,
    similarity_by_name,
)
from probsig_jax.validation import ConfigError

# ----------------------------------------------------------------------------- the hand example
#
# V = 4, L = 2, three samples:
#   x1 = (0, 1), y = 2, w = 1      c(x1) = [1, 1, 0, 0]
#   x2 = (0, 0), y = 3, w = 2      c(x2) = [2, 0, 0, 0]
#   x3 = (1, 2), y = 2, w = 1      c(x3) = [0, 1, 1, 0]
# total weight W = 4, u = 1/4.
#
# joint N[y, s] = sum_i w_i 1{y_i = y} c_s(x_i):
#   y = 2: c(x1) + c(x3)  = [1, 2, 1, 0]
#   y = 3: 2 * c(x2)      = [4, 0, 0, 0]
#   y = 0, 1: zeros
# feature counts n_s = [5, 2, 1, 0];  label counts = [0, 0, 2, 2]
# f = n / W = [1.25, 0.5, 0.25, 0]
# M = (N - u n) / W, with u n = [1.25, 0.5, 0.25, 0]:
#   row 0, 1: -[1.25, 0.5, 0.25, 0] / 4     = [-0.3125, -0.125, -0.0625, 0]
#   row 2:    [-0.25, 1.5, 0.75, 0] / 4     = [-0.0625,  0.375,  0.1875, 0]
#   row 3:    [ 2.75, -0.5, -0.25, 0] / 4   = [ 0.6875, -0.125, -0.0625, 0]
# Q (column s = N[:, s] / n_s):
#   s = 0: [0, 0, 1/5, 4/5]   (token 0 occurs once with y=2 (w 1), twice with y=3 (w 2))
#   s = 1: [0, 0, 1, 0];  s = 2: [0, 0, 1, 0];  s = 3: zeros (never occurs)
# R (row y = N[y] / (label_count_y * L)):
#   y = 2: [1, 2, 1, 0] / 4 = [0.25, 0.5, 0.25, 0];  y = 3: [4, 0, 0, 0] / 4 = [1, 0, 0, 0]
#   y = 0, 1: zeros

HAND = Dataset(np.array([[0, 1], [0, 0], [1, 2]]), np.array([2, 3, 2]), 4, np.array([1.0, 2.0, 1.0]))
HAND_JOINT = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [1, 2, 1, 0], [4, 0, 0, 0]], dtype=float)
HAND_F = np.array([1.25, 0.5, 0.25, 0.0])
HAND_M = np.array([
    [-0.3125, -0.125, -0.0625, 0.0],
    [-0.3125, -0.125, -0.0625, 0.0],
    [-0.0625, 0.375, 0.1875, 0.0],
    [0.6875, -0.125, -0.0625, 0.0],
])
HAND_Q = np.array([
    [0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0],
    [0.2, 1.0, 1.0, 0.0],
    [0.8, 0.0, 0.0, 0.0],
])
HAND_R = np.array([
    [0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0],
    [0.25, 0.5, 0.25, 0.0],
    [1.0, 0.0, 0.0, 0.0],
])


def test_hand_example_counts():
    c = signature_counts(HAND)
    np.testing.assert_allclose(c.joint, HAND_JOINT)
    np.testing.assert_allclose(c.label_counts, [0, 0, 2, 2])
    assert c.total_weight == 4.0
    assert c.seq_len == 2
    np.testing.assert_allclose(c.feature_counts, [5, 2, 1, 0])
    assert c.vocab_size == 4 and c.num_features == 4


def test_hand_example_signatures():
    np.testing.assert_allclose(frequency_weights(HAND), HAND_F, atol=1e-15)
    np.testing.assert_allclose(signature_matrix(HAND), HAND_M, atol=1e-15)
    np.testing.assert_allclose(input_signatures(HAND), HAND_Q, atol=1e-15)
    np.testing.assert_allclose(output_signatures(HAND), HAND_R, atol=1e-15)


def test_hand_example_positional():
    # positional feature l * V + t. Feature 0 (position 0, token 0): x1 (y=2, w=1), x2 (y=3, w=2)
    #   joint column = [0, 0, 1, 2], n = 3, M column = ([0, 0, 1, 2] - 3/4) / 4
    # Feature 4 (position 1, token 0): x2 only -> joint column [0, 0, 0, 2], n = 2
    # Feature 5 (position 1, token 1): x1 only -> [0, 0, 1, 0], n = 1
    # Feature 6 (position 1, token 2): x3 only -> [0, 0, 1, 0], n = 1
    M = signature_matrix(HAND, positional=True)
    assert M.shape == (4, 8)
    np.testing.assert_allclose(M[:, 0], (np.array([0, 0, 1, 2]) - 0.75) / 4)
    np.testing.assert_allclose(M[:, 4], (np.array([0, 0, 0, 2]) - 0.5) / 4)
    np.testing.assert_allclose(frequency_weights(HAND, positional=True), [3 / 4, 1 / 4, 0, 0, 2 / 4, 1 / 4, 1 / 4, 0])
    Q = input_signatures(HAND, positional=True)
    np.testing.assert_allclose(Q[:, 0], [0, 0, 1 / 3, 2 / 3])
    np.testing.assert_allclose(Q[:, 5], [0, 0, 1, 0])
    np.testing.assert_allclose(Q[:, 3], 0)
    # R over L * V features: row 2 = [x1 + x3 positional] / (2 * 2)
    R = output_signatures(HAND, positional=True)
    np.testing.assert_allclose(R[2], np.array([1, 1, 0, 0, 0, 1, 1, 0]) / 4)
    np.testing.assert_allclose(R[3], np.array([2, 0, 0, 0, 2, 0, 0, 0]) / 4)


# ----------------------------------------------------------------------------- random data sets


def _random_dataset(seed: int, V: int = 7, L: int = 3, N: int = 25, weighted: bool = True) -> Dataset:
    rng = np.random.default_rng(seed)
    # leave the last token unused in inputs and label 0 unused, to exercise empty rows/columns
    inputs = rng.integers(0, V - 1, size=(N, L))
    labels = rng.integers(1, V, size=N)
    w = rng.uniform(0.1, 3.0, size=N) if weighted else None
    return Dataset(inputs, labels, V, w)


def _brute_force_M(ds: Dataset) -> np.ndarray:
    """E[(e_Y - u 1) c(X)^T] by an explicit loop over samples and positions."""
    V = ds.vocab_size
    w = np.ones(ds.num_samples) if ds.weights is None else ds.weights
    M = np.zeros((V, V))
    for x, y, wi in zip(ds.inputs, ds.labels, w):
        for t in x:
            for yy in range(V):
                M[yy, t] += wi * ((1.0 if yy == y else 0.0) - 1.0 / V)
    return M / w.sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_M_matches_brute_force(seed):
    ds = _random_dataset(seed)
    np.testing.assert_allclose(signature_matrix(ds), _brute_force_M(ds), atol=1e-14)


@pytest.mark.parametrize("seed", [0, 1])
def test_Q_columns_and_R_rows_are_distributions(seed):
    ds = _random_dataset(seed)
    V = ds.vocab_size
    Q = input_signatures(ds)
    R = output_signatures(ds)
    occurring_tokens = np.unique(ds.inputs)
    occurring_labels = np.unique(ds.labels)
    assert len(occurring_tokens) < V and len(occurring_labels) < V  # the test exercises empty ones
    np.testing.assert_allclose(Q[:, occurring_tokens].sum(axis=0), 1.0)
    np.testing.assert_allclose(R[occurring_labels].sum(axis=1), 1.0)
    absent_tokens = np.setdiff1d(np.arange(V), occurring_tokens)
    absent_labels = np.setdiff1d(np.arange(V), occurring_labels)
    np.testing.assert_array_equal(Q[:, absent_tokens], 0.0)
    np.testing.assert_array_equal(R[absent_labels], 0.0)
    assert np.all(Q >= 0) and np.all(R >= 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_M_column_and_row_identities(seed):
    ds = _random_dataset(seed)
    V, L = ds.vocab_size, ds.seq_len
    M = signature_matrix(ds)
    Q = input_signatures(ds)
    R = output_signatures(ds)
    f = frequency_weights(ds)
    u = 1.0 / V
    # independent P(Y = y) and f
    w = ds.sample_weights()
    p_y = np.array([w[ds.labels == y].sum() for y in range(V)])
    f_ref = np.array([(w * (ds.inputs == s).sum(axis=1)).sum() for s in range(V)])
    np.testing.assert_allclose(f, f_ref, atol=1e-14)
    for s in range(V):
        np.testing.assert_allclose(M[:, s], f[s] * (Q[:, s] - u), atol=1e-14)
    for y in range(V):
        np.testing.assert_allclose(M[y], p_y[y] * L * R[y] - u * f, atol=1e-14)
    # M sums to zero over labels (e_Y - u 1 sums to 0)
    np.testing.assert_allclose(M.sum(axis=0), 0.0, atol=1e-14)


def _all_signatures(ds):
    return {
        "M": signature_matrix(ds),
        "Q": input_signatures(ds),
        "R": output_signatures(ds),
        "f": frequency_weights(ds),
        "K": cooccurrence_signatures(ds),
        "C": cooccurrence_matrix(ds),
        "J": joint_signature(ds, int(ds.inputs[0, 0])),
        "Mp": signature_matrix(ds, positional=True),
    }


def _assert_same(a: dict, b: dict):
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-13, err_msg=k)


def test_invariant_to_duplicating_dataset():
    ds = _random_dataset(3)
    _assert_same(_all_signatures(ds), _all_signatures(ds.concatenate(ds)))
    unweighted = _random_dataset(4, weighted=False)
    _assert_same(_all_signatures(unweighted), _all_signatures(unweighted.concatenate(unweighted)))


def test_invariant_to_scaling_weights():
    ds = _random_dataset(5)
    scaled = Dataset(ds.inputs, ds.labels, ds.vocab_size, ds.weights * 3.7)
    _assert_same(_all_signatures(ds), _all_signatures(scaled))
    ones = Dataset(ds.inputs, ds.labels, ds.vocab_size, np.full(ds.num_samples, 0.2))
    unweighted = Dataset(ds.inputs, ds.labels, ds.vocab_size)
    _assert_same(_all_signatures(ones), _all_signatures(unweighted))


def test_integer_weights_equal_repeated_rows():
    rng = np.random.default_rng(6)
    ds = _random_dataset(6)
    reps = rng.integers(0, 4, size=ds.num_samples)
    reps[0] = 2  # the token used for J occurs
    weighted = Dataset(ds.inputs, ds.labels, ds.vocab_size, reps.astype(float))
    repeated = Dataset(np.repeat(ds.inputs, reps, axis=0), np.repeat(ds.labels, reps), ds.vocab_size)
    _assert_same(_all_signatures(weighted), _all_signatures(repeated))
    # and weights genuinely matter: the unweighted data set differs
    assert not np.allclose(signature_matrix(weighted), signature_matrix(Dataset(ds.inputs, ds.labels, ds.vocab_size)))


def test_signature_counts_built_by_hand():
    counts = SignatureCounts(HAND_JOINT, np.array([0.0, 0.0, 2.0, 2.0]), 4.0, 2)
    np.testing.assert_allclose(signature_matrix(counts), signature_matrix(HAND), atol=1e-15)
    np.testing.assert_allclose(signature_matrix(counts), HAND_M, atol=1e-15)
    np.testing.assert_allclose(input_signatures(counts), HAND_Q, atol=1e-15)
    np.testing.assert_allclose(output_signatures(counts), HAND_R, atol=1e-15)
    np.testing.assert_allclose(frequency_weights(counts), HAND_F, atol=1e-15)
    np.testing.assert_allclose(signature_similarity(counts), signature_similarity(HAND), atol=1e-15)


def test_signature_counts_from_joint_count_matrix_of_random_data():
    ds = _random_dataset(7)
    V = ds.vocab_size
    joint = np.zeros((V, V))
    label_counts = np.zeros(V)
    for x, y, wi in zip(ds.inputs, ds.labels, ds.weights):
        label_counts[y] += wi
        for t in x:
            joint[y, t] += wi
    counts = SignatureCounts(joint, label_counts, float(ds.weights.sum()), ds.seq_len)
    np.testing.assert_allclose(signature_matrix(counts), signature_matrix(ds), atol=1e-14)
    np.testing.assert_allclose(input_signatures(counts), input_signatures(ds), atol=1e-14)
    np.testing.assert_allclose(output_signatures(counts), output_signatures(ds), atol=1e-14)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(joint=np.ones(4), label_counts=np.ones(4), total_weight=1.0, seq_len=1), "joint"),
        (dict(joint=np.ones((4, 4)), label_counts=np.ones(3), total_weight=1.0, seq_len=1), "label_counts"),
        (dict(joint=-np.ones((4, 4)), label_counts=np.ones(4), total_weight=1.0, seq_len=1), "joint"),
        (dict(joint=np.ones((4, 4)), label_counts=np.ones(4), total_weight=0.0, seq_len=1), "total_weight"),
        (dict(joint=np.ones((4, 4)), label_counts=-np.ones(4), total_weight=1.0, seq_len=1), "label_counts"),
    ],
)
def test_signature_counts_validation(kwargs, field):
    with pytest.raises(ConfigError) as info:
        SignatureCounts(**kwargs)
    assert info.value.field == field


def test_simple_task_signatures_by_hand():
    # simple preset: key z with anchor a (uniform), label z + a. Q_z = uniform over z+1..z+4.
    task = make_composite_addition(PRESETS["simple"])
    Q = input_signatures(task.train)
    for z in (20, 37, 59):
        expected = np.zeros(64)
        expected[z + 1:z + 5] = 0.25
        np.testing.assert_allclose(Q[:, z], expected, atol=1e-14)
    # anchor a: label uniform over 20+a .. 59+a
    for a in (1, 4):
        expected = np.zeros(64)
        expected[20 + a:60 + a] = 1 / 40
        np.testing.assert_allclose(Q[:, a], expected, atol=1e-14)
    f = frequency_weights(task.train)
    np.testing.assert_allclose(f[20:60], 1 / 40)
    np.testing.assert_allclose(f[1:5], 1 / 4)


# ----------------------------------------------------------------------------- co-occurrence and joint


def _brute_force_K(ds: Dataset) -> np.ndarray:
    V = ds.vocab_size
    w = np.ones(ds.num_samples) if ds.weights is None else ds.weights
    K = np.zeros((V, V))
    for x, wi in zip(ds.inputs, w):
        for i, j in itertools.permutations(range(len(x)), 2):
            K[x[i], x[j]] += wi
    norm = K.sum(axis=1, keepdims=True)
    return np.divide(K, norm, out=np.zeros_like(K), where=norm > 0)


def test_cooccurrence_hand_example():
    # ordered pairs of distinct positions: x1 -> (0,1), (1,0) w 1; x2 -> (0,0) twice, w 2; x3 -> (1,2), (2,1) w 1
    # unnormalised rows: 0: [4, 1, 0, 0]; 1: [1, 0, 1, 0]; 2: [0, 1, 0, 0]; 3: zeros
    K = cooccurrence_signatures(HAND)
    np.testing.assert_allclose(K, [[0.8, 0.2, 0, 0], [0.5, 0, 0.5, 0], [0, 1, 0, 0], [0, 0, 0, 0]], atol=1e-15)
    # second moment E[c c^T]: (c1 c1^T * 1 + c2 c2^T * 2 + c3 c3^T * 1) / 4
    c1, c2, c3 = np.array([1, 1, 0, 0]), np.array([2, 0, 0, 0]), np.array([0, 1, 1, 0])
    expected = (np.outer(c1, c1) + 2 * np.outer(c2, c2) + np.outer(c3, c3)) / 4
    np.testing.assert_allclose(cooccurrence_matrix(HAND), expected, atol=1e-15)


@pytest.mark.parametrize("seed", [8, 9])
def test_cooccurrence_random_vs_brute_force(seed):
    ds = _random_dataset(seed, L=4)
    np.testing.assert_allclose(cooccurrence_signatures(ds), _brute_force_K(ds), atol=1e-13)


def _brute_force_J(ds: Dataset, s: int) -> np.ndarray:
    V = ds.vocab_size
    w = np.ones(ds.num_samples) if ds.weights is None else ds.weights
    J = np.zeros((V, V))
    total = 0.0
    for x, y, wi in zip(ds.inputs, ds.labels, w):
        if s in x:
            total += wi
            for r in set(x.tolist()):
                J[r, y] += wi
    return J / total


def test_joint_signature_hand_example():
    # s = 0: x1 (w 1, tokens {0, 1}, y 2) and x2 (w 2, tokens {0}, y 3); total 3
    J = joint_signature(HAND, 0)
    expected = np.zeros((4, 4))
    expected[0, 2] = 1 / 3
    expected[1, 2] = 1 / 3
    expected[0, 3] = 2 / 3
    np.testing.assert_allclose(J, expected, atol=1e-15)
    # the row of s itself is P(Y | s in X) by sequences (not by counts)
    np.testing.assert_allclose(J[0].sum(), 1.0)


@pytest.mark.parametrize("seed", [10, 11])
def test_joint_signature_random_vs_brute_force(seed):
    ds = _random_dataset(seed, L=4)
    for s in np.unique(ds.inputs):
        np.testing.assert_allclose(joint_signature(ds, int(s)), _brute_force_J(ds, int(s)), atol=1e-13)


def test_joint_signature_bad_token():
    with pytest.raises(ConfigError) as info:
        joint_signature(HAND, 3)  # never occurs
    assert info.value.field == "token"
    with pytest.raises(ConfigError) as info:
        joint_signature(HAND, 4)  # out of range
    assert info.value.field == "token"


# ----------------------------------------------------------------------------- similarities


def _random_distributions(seed: int, V: int = 9, n: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=(V, n)) * (rng.uniform(size=(V, n)) > 0.3)
    p[0, :] += 0.01  # no all-zero column
    return p / p.sum(axis=0, keepdims=True)


def test_cosine_similarity_vs_scipy():
    rng = np.random.default_rng(12)
    m = rng.normal(size=(5, 6))
    S = cosine_similarity(m)
    for i, j in itertools.product(range(6), repeat=2):
        assert S[i, j] == pytest.approx(1.0 - distance.cosine(m[:, i], m[:, j]), abs=1e-12)
    np.testing.assert_allclose(np.diag(S), 1.0)


def test_cosine_similarity_zero_column_gives_zero():
    m = np.array([[1.0, 0.0, 2.0], [1.0, 0.0, -2.0]])
    S = cosine_similarity(m)
    np.testing.assert_array_equal(S[1], 0.0)
    np.testing.assert_array_equal(S[:, 1], 0.0)
    assert S[0, 2] == pytest.approx(0.0)
    assert S[0, 0] == pytest.approx(1.0)


def test_hellinger_vs_hand_formula():
    P = _random_distributions(13)
    S = hellinger_similarity(P)
    n = P.shape[1]
    for i, j in itertools.product(range(n), repeat=2):
        # H(p, q) = ||sqrt(p) - sqrt(q)||_2 / sqrt(2)
        h = np.linalg.norm(np.sqrt(P[:, i]) - np.sqrt(P[:, j])) / np.sqrt(2)
        assert S[i, j] == pytest.approx(1.0 - h, abs=1e-7)


def test_jensen_shannon_vs_scipy():
    P = _random_distributions(14)
    S = jensen_shannon_similarity(P)
    n = P.shape[1]
    for i, j in itertools.product(range(n), repeat=2):
        # scipy returns the JS *distance* (square root of the divergence)
        js = distance.jensenshannon(P[:, i], P[:, j], base=2) ** 2
        assert S[i, j] == pytest.approx(1.0 - js, abs=1e-12)


def test_similarities_normalise_unnormalised_columns():
    P = _random_distributions(15)
    scaled = P * np.arange(1, P.shape[1] + 1)[None, :]
    np.testing.assert_allclose(hellinger_similarity(scaled), hellinger_similarity(P), atol=1e-12)
    np.testing.assert_allclose(jensen_shannon_similarity(scaled), jensen_shannon_similarity(P), atol=1e-12)


def test_identical_and_disjoint_distributions():
    P = np.array([
        [0.5, 0.5, 0.0],
        [0.5, 0.5, 0.0],
        [0.0, 0.0, 0.3],
        [0.0, 0.0, 0.7],
    ])
    for fn in (hellinger_similarity, jensen_shannon_similarity, cosine_similarity):
        S = fn(P)
        assert S[0, 1] == pytest.approx(1.0, abs=1e-7), fn.__name__
        np.testing.assert_allclose(np.diag(S), 1.0, atol=1e-7)
        assert S[0, 2] == pytest.approx(0.0, abs=1e-12), fn.__name__
        np.testing.assert_allclose(S, S.T, atol=1e-12)


def test_distribution_similarities_reject_negative_and_bad_shapes():
    with pytest.raises(ConfigError) as info:
        hellinger_similarity(np.array([[0.5, -0.1], [0.5, 1.1]]))
    assert info.value.field == "distributions"
    with pytest.raises(ConfigError):
        jensen_shannon_similarity(np.array([[0.5, -0.1], [0.5, 1.1]]))
    with pytest.raises(ConfigError) as info:
        cosine_similarity(np.ones(3))
    assert info.value.field == "matrix"


def test_similarity_by_name():
    # cosine_M from the hand M, computed independently
    hand_norm = np.linalg.norm(HAND_M, axis=0)
    expected = np.zeros((4, 4))
    for i, j in itertools.product(range(3), repeat=2):
        expected[i, j] = HAND_M[:, i] @ HAND_M[:, j] / (hand_norm[i] * hand_norm[j])
    np.testing.assert_allclose(similarity_by_name("cosine_M", HAND), expected, atol=1e-14)
    # Q columns 1 and 2 are identical, 0 differs: cos(Q0, Q1) = 0.2 / sqrt(0.04 + 0.64)
    SQ = similarity_by_name("cosine_Q", HAND)
    assert SQ[1, 2] == pytest.approx(1.0)
    assert SQ[0, 1] == pytest.approx(0.2 / np.sqrt(0.68))
    # Hellinger between Q0 = (.2, .8) and Q1 = (1, 0): BC = sqrt(.2)
    SH = similarity_by_name("hellinger_Q", HAND)
    assert SH[0, 1] == pytest.approx(1 - np.sqrt(1 - np.sqrt(0.2)))
    SJ = similarity_by_name("js_Q", HAND)
    assert SJ[0, 1] == pytest.approx(1 - distance.jensenshannon([0.2, 0.8], [1.0, 0.0], base=2) ** 2)
    assert set(SIMILARITIES) == {"cosine_M", "cosine_Q", "hellinger_Q", "js_Q"}


def test_similarity_by_name_unknown():
    with pytest.raises(ConfigError) as info:
        similarity_by_name("euclid", HAND)
    assert info.value.field == "signature_similarity"
    assert "cosine_M" in str(info.value)
