"""The sign-descent (early Adam) prediction of embedding similarity against Monte Carlo and against a real Adam
step of the bigram model, and the gradient-flow prediction against a real GD step."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from probsig_jax.analysis.metrics import cosine_similarity_matrix, offdiagonal
from probsig_jax.models.linear import LinearEmbeddingModel
from probsig_jax.numerics import numerics
from probsig_jax.signatures.dense import signature_matrix
from probsig_jax.signatures.pair_counts import count_context_pairs
from probsig_jax.theory.sign_descent import (gradient_flow_update_cosine, sign_descent_embedding_cosine,
                                             sign_descent_update_cosine, sign_update_cosine)
from probsig_jax.training.supervised import TrainConfig, train
from probsig_jax.validation import ConfigError


def test_arcsine_law_against_monte_carlo():
    rng = np.random.default_rng(0)
    n = 400_000
    for rho in (-0.8, -0.2, 0.0, 0.3, 0.6, 0.95):
        x = rng.normal(size=n)
        y = rho * x + np.sqrt(1 - rho**2) * rng.normal(size=n)
        assert np.mean(np.sign(x) * np.sign(y)) == pytest.approx(sign_update_cosine(rho), abs=4 / np.sqrt(n))
    assert sign_update_cosine(1.0) == pytest.approx(1.0) and sign_update_cosine(0.5) == pytest.approx(1 / 3)
    with pytest.raises(ConfigError, match="^rho: "):
        sign_update_cosine(1.5)


def _first_step_update_cosines(optimizer: str, d: int = 4096):
    rng = np.random.default_rng(1)
    stream = (np.cumsum(rng.integers(1, 5, 20_000)) % 40).astype(np.uint32)
    counts = count_context_pairs(stream, 40).pooled(np.arange(12))
    with numerics("float64") as dtype:
        model = LinearEmbeddingModel(13, d, init_scale=1e-3, dtype=dtype, rngs=nnx.Rngs(0))
        run = train(model, counts, TrainConfig(optimizer=optimizer, learning_rate=1e-4, steps=1, record_every=1),
                    quiet=True)
    update = run.weights["E"][1] - run.weights["E"][0]          # (d, F)
    return cosine_similarity_matrix(update.T), signature_matrix(counts)


@pytest.mark.parametrize("optimizer, predictor", [("adam", sign_descent_update_cosine),
                                                  ("gd", gradient_flow_update_cosine)])
def test_first_update_cosines_follow_their_own_optimiser_law(optimizer, predictor):
    """One step from small init, d = 4096: Adam's update cosines match the arcsine law and GD's the signature
    cosine, each within 4 / sqrt(d); and each law misses the other optimiser's update by more (that is what makes
    the prediction optimiser-aware)."""
    measured, M = _first_step_update_cosines(optimizer)
    other = gradient_flow_update_cosine if predictor is sign_descent_update_cosine else sign_descent_update_cosine
    own_err = np.abs(offdiagonal(measured) - offdiagonal(predictor(M))).max()
    other_err = np.abs(offdiagonal(measured) - offdiagonal(other(M))).max()
    assert own_err < 4 / np.sqrt(4096), own_err
    assert other_err > 2 * own_err, (own_err, other_err)


def test_time_course_starts_at_zero_and_tends_to_the_update_cosine():
    M = np.random.default_rng(2).normal(size=(9, 5))
    course = sign_descent_embedding_cosine(M, [0.0, 1e-3, 1.0], init_std=1e-3)
    a = sign_descent_update_cosine(M)
    np.testing.assert_allclose(offdiagonal(course[0]), 0.0)
    np.testing.assert_allclose(offdiagonal(course[1]), 0.5 * offdiagonal(a))
    np.testing.assert_allclose(course[2], a, atol=1e-5)
