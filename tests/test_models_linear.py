"""Tests of the linear embedding model (probsig_jax.models.linear) against a numpy reference."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from probsig_jax.models.linear import LinearEmbeddingModel, feature_index
from probsig_jax.validation import ConfigError


def np_logits(E, U, inputs, vocab, positional):
    """logits_i = U E c(x_i) with c built by explicit loops."""
    n, L = inputs.shape
    C = np.zeros((n, E.shape[1]))
    for i in range(n):
        for l in range(L):
            C[i, (l * vocab if positional else 0) + inputs[i, l]] += 1.0
    return C @ E.T @ U.T


@pytest.mark.parametrize("positional, seq_len", [(False, 1), (False, 4), (True, 4)])
def test_shapes_and_dtypes(positional, seq_len):
    V, d = 7, 5
    for dtype in (jnp.float32, jnp.float64):
        m = LinearEmbeddingModel(V, d, seq_len=seq_len, positional=positional, dtype=dtype, rngs=nnx.Rngs(0))
        W = m.weights()
        F = V * seq_len if positional else V
        assert W["E"].shape == (d, F) and W["U"].shape == (V, d)
        assert W["E"].dtype == dtype and W["U"].dtype == dtype
        x = jnp.zeros((3, seq_len), jnp.int32)
        out = m(x)
        assert out.shape == (3, V) and out.dtype == dtype


def test_init_scale_and_seed():
    m = LinearEmbeddingModel(50, 200, init_scale=0.02, dtype=jnp.float64, rngs=nnx.Rngs(0))
    E, U = np.asarray(m.weights()["E"]), np.asarray(m.weights()["U"])
    # 10^4 i.i.d. N(0, 0.02^2) entries: sample std within 3% (~4 standard errors), mean ~ 0
    for W in (E, U):
        assert W.std() == pytest.approx(0.02, rel=0.03)
        assert abs(W.mean()) < 4 * 0.02 / np.sqrt(W.size)
    same = LinearEmbeddingModel(50, 200, init_scale=0.02, dtype=jnp.float64, rngs=nnx.Rngs(0))
    other = LinearEmbeddingModel(50, 200, init_scale=0.02, dtype=jnp.float64, rngs=nnx.Rngs(1))
    np.testing.assert_array_equal(same.weights()["E"], E)
    assert not np.allclose(other.weights()["E"], E)
    assert not np.allclose(E[:, :50], U.T)          # E and U are drawn independently


def test_feature_index():
    x = jnp.asarray([[1, 2, 0], [3, 3, 1]])
    np.testing.assert_array_equal(feature_index(x, 4, False), x)
    np.testing.assert_array_equal(feature_index(x, 4, True), [[1, 6, 8], [3, 7, 9]])


@pytest.mark.parametrize("positional", [False, True])
def test_logits_equal_numpy_reference(positional):
    rng = np.random.default_rng(0)
    V, d, L, n = 6, 4, 3, 20
    F = V * L if positional else V
    E, U = rng.standard_normal((d, F)), rng.standard_normal((V, d))
    x = rng.integers(0, V, (n, L))
    x[0] = [2, 2, 2]                                  # repeated tokens: counts (or distinct positions) matter
    m = LinearEmbeddingModel.from_weights(jnp.asarray(E), jnp.asarray(U), positional=positional)
    ref = np_logits(E, U, x, V, positional)
    np.testing.assert_allclose(np.asarray(m(jnp.asarray(x))), ref, rtol=1e-12, atol=1e-12)
    if not positional:                                # bag of tokens: order does not matter
        np.testing.assert_allclose(np.asarray(m(jnp.asarray(x[:, ::-1]))), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("positional", [False, True])
def test_from_weights_round_trip(positional):
    rng = np.random.default_rng(1)
    V, d, L = 5, 3, 2
    F = V * L if positional else V
    for dtype in (np.float32, np.float64):
        E, U = rng.standard_normal((d, F)).astype(dtype), rng.standard_normal((V, d)).astype(dtype)
        m = LinearEmbeddingModel.from_weights(jnp.asarray(E), jnp.asarray(U), positional=positional)
        W = m.weights()
        np.testing.assert_array_equal(W["E"], E)
        np.testing.assert_array_equal(W["U"], U)
        assert W["E"].dtype == dtype and m.vocab_size == V and m.positional == positional
        again = LinearEmbeddingModel.from_weights(W["E"], W["U"], positional=positional)
        np.testing.assert_array_equal(again.weights()["E"], E)


@pytest.mark.parametrize("args, kwargs, field", [
    ((-3, 4), {}, "vocab_size"),
    ((1, 4), {}, "vocab_size"),
    ((5, 0), {}, "dim"),
    ((5, -2), {}, "dim"),
    ((5, 4), dict(seq_len=0), "seq_len"),
    ((5, 4), dict(init_scale=0.0), "init_scale"),
    ((5, 4), dict(init_scale=-1.0), "init_scale"),
    ((5, 4), dict(dtype=jnp.int32), "dtype"),
])
def test_constructor_validation(args, kwargs, field):
    with pytest.raises(ConfigError) as e:
        LinearEmbeddingModel(*args, rngs=nnx.Rngs(0), **kwargs)
    assert e.value.field == field


def test_from_weights_validation():
    with pytest.raises(ConfigError) as e:
        LinearEmbeddingModel.from_weights(jnp.zeros((3, 6)), jnp.zeros((5, 3)))        # F != V
    assert e.value.field == "E"
    with pytest.raises(ConfigError) as e:
        LinearEmbeddingModel.from_weights(jnp.zeros((3, 11)), jnp.zeros((5, 3)), positional=True)   # F % V != 0
    assert e.value.field == "E"
    with pytest.raises(ConfigError) as e:
        LinearEmbeddingModel.from_weights(jnp.zeros((3, 5)), jnp.zeros((5, 4)))        # d mismatch
    assert e.value.field == "U"
    with pytest.raises(ConfigError) as e:
        LinearEmbeddingModel.from_weights(jnp.zeros((3,)), jnp.zeros((5, 3)))
    assert e.value.field == "E"
