"""Losses of every training loop: next-token prediction (language models), weighted cross-entropy (data sets of
(x, y) pairs) and its count-matrix form (single-token inputs given as their pair counts)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def next_token_loss(logits_NxTxV: jax.Array, tokens_NxT: jax.Array, mask_NxT: jax.Array | None = None) -> jax.Array:
    """Mean cross-entropy of predicting ``tokens[:, t + 1]`` from ``logits[:, t]``.

    ``logits`` cover all T positions, or only the first T - 1 (a causal model run on
    ``tokens[:, :-1]``, which skips the last position's logits that no loss uses).
    ``mask_NxT`` (1 = real token, 0 = padding) counts a prediction only when both its input
    position and its target are real. Computed in (at least) float32 whatever the logits'
    dtype. With no valid position the loss is 0.
    """
    T = tokens_NxT.shape[1]
    if logits_NxTxV.shape[1] not in (T, T - 1):
        raise ValueError(f"logits cover {logits_NxTxV.shape[1]} positions; expected T = {T} or T - 1")
    dtype = jnp.promote_types(logits_NxTxV.dtype, jnp.float32)
    logits = logits_NxTxV[:, : T - 1].astype(dtype)
    targets = tokens_NxT[:, 1:]
    losses_NxT1 = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    if mask_NxT is None:
        return losses_NxT1.mean()
    mask = mask_NxT.astype(dtype)
    valid_NxT1 = mask[:, 1:] * mask[:, :-1]
    return (losses_NxT1 * valid_NxT1).sum() / jnp.maximum(valid_NxT1.sum(), 1.0)


def weighted_cross_entropy(logits_NxV: jax.Array, labels_N: jax.Array, weights_N: jax.Array) -> jax.Array:
    """``sum_i w_i (-log softmax(z_i)_{y_i}) / sum_i w_i``: the loss of a weighted data set (an exact
    distribution given as unique rows and their probabilities)."""
    nll_N = optax.softmax_cross_entropy_with_integer_labels(logits_NxV, labels_N)
    return jnp.sum(weights_N * nll_N) / jnp.sum(weights_N)


def count_cross_entropy(logits_FxV: jax.Array, joint_VxF: jax.Array, total_weight) -> jax.Array:
    """``-sum_{y, s} N[y, s] log softmax(z_s)_y / total``: the cross-entropy of a single-token-input model from the
    count matrix of its data (``joint`` of :class:`~probsig_jax.signatures.SignatureCounts`), given the logits of
    every input token ``s`` (row ``s`` of ``logits``). Equal to :func:`weighted_cross_entropy` over the
    ``(y, s)`` cells as rows weighted by their counts, at the cost of ``F`` forward passes instead of ``F V``."""
    logp_FxV = jax.nn.log_softmax(logits_FxV, axis=-1)
    return -jnp.sum(joint_VxF.T * logp_FxV) / total_weight
