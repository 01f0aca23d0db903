"""Causal grouped-query attention computed one block of queries at a time (the decoder's
``attention_impl="blocked"``, the default on a CPU).

Queries ``[a, b)`` of a causal sequence can only see keys ``[0, b)``, so block by block the score matrices
cover the lower triangle and its diagonal blocks instead of the whole T x T square: for T = 255 and blocks of
32 that is 56 % of the work of :func:`~probsig_jax.models.qwen2.model.reference_attention`, and each block's
(query block x keys) scores are small enough to stay in cache between the product, the softmax and the
next product. The backward pass is written out (``jax.custom_vjp``) in the form flash-attention uses,
``dS = P * (dP - rowsum(dO * O))``, from the saved probabilities, so the gradient takes one elementwise pass
per block where JAX's differentiation of masked softmax took several over the full square.

Numerics match ``reference_attention``: scores ``q k^T`` in the compute dtype, then scaled and softmaxed in
float32 with masked entries at ``finfo(float32).min``; probabilities cast to the value dtype. Results agree
with it to float rounding (``tests/test_qwen2_kernels.py``: values and gradients, several block sizes, GQA).
Only plain causal self-attention (S = T, no explicit mask) is computed this way; the model falls back to
``reference_attention`` for padding masks and KV caches.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

# Attention forward + backward alone (N x 8 heads x T, 2 kv heads, D 32) on a 2-core Zen 4, one-off timings: blocks of
# 16, 32 and 64 within noise of each other at T = 63, 255 and 511, 128 slower at T = 511 (and T = 255)
DEFAULT_BLOCK_SIZE = 32


def query_blocks(T: int, block_size: int) -> list[tuple[int, int]]:
    """``[(a, b), ...]``: consecutive query ranges of ``block_size`` (the last may be shorter) covering ``[0, T)``."""
    return [(a, min(a + block_size, T)) for a in range(0, T, block_size)]


def _causal_block_mask(a: int, b: int) -> jax.Array:
    """(b - a, b) bool: query ``a + i`` may attend to key ``s`` iff ``s <= a + i``."""
    return jnp.arange(a, b)[:, None] >= jnp.arange(b)[None, :]


def _forward(q_NxQxTxD, k_NxKxTxD, v_NxKxTxD, scale, block_size):
    N, Q, T, D = q_NxQxTxD.shape
    K = k_NxKxTxD.shape[1]
    q_NxKxGxTxD = q_NxQxTxD.reshape(N, K, Q // K, T, D)
    outs, probs = [], []
    for a, b in query_blocks(T, block_size):
        s_NxKxGxBxS = jnp.einsum("nkgtd,nksd->nkgts", q_NxKxGxTxD[:, :, :, a:b], k_NxKxTxD[:, :, :b])
        s_NxKxGxBxS = s_NxKxGxBxS.astype(jnp.float32) * scale
        s_NxKxGxBxS = jnp.where(_causal_block_mask(a, b), s_NxKxGxBxS, jnp.finfo(jnp.float32).min)
        p_NxKxGxBxS = jax.nn.softmax(s_NxKxGxBxS, axis=-1)
        probs.append(p_NxKxGxBxS)
        outs.append(jnp.einsum("nkgts,nksd->nkgtd", p_NxKxGxBxS.astype(v_NxKxTxD.dtype), v_NxKxTxD[:, :, :b]))
    out_NxKxGxTxD = jnp.concatenate(outs, axis=3)
    return out_NxKxGxTxD.reshape(N, Q, T, D), (q_NxKxGxTxD, k_NxKxTxD, v_NxKxTxD, out_NxKxGxTxD, probs)


def _backward(scale, block_size, residuals, dout_NxQxTxD):
    q_NxKxGxTxD, k_NxKxTxD, v_NxKxTxD, out_NxKxGxTxD, probs = residuals
    N, K, G, T, D = q_NxKxGxTxD.shape
    dtype = q_NxKxGxTxD.dtype
    dout_NxKxGxTxD = dout_NxQxTxD.reshape(N, K, G, T, D)
    delta_NxKxGxT = jnp.sum(dout_NxKxGxTxD.astype(jnp.float32) * out_NxKxGxTxD.astype(jnp.float32), axis=-1)
    # dK and dV contract over the queries (the scores' leading axes): transpose the small (query, D) operands
    # instead of the (query, key) scores, and accumulate dK^T, dV^T as (D, T)
    qT_NxKxDxGxT = jax.lax.optimization_barrier(q_NxKxGxTxD.transpose(0, 1, 4, 2, 3))
    doT_NxKxDxGxT = jax.lax.optimization_barrier(dout_NxKxGxTxD.transpose(0, 1, 4, 2, 3))
    dq_blocks = []
    dkT_NxKxDxT = jnp.zeros((N, K, D, T), jnp.float32)
    dvT_NxKxDxT = jnp.zeros((N, K, D, T), jnp.float32)
    for (a, b), p_NxKxGxBxS in zip(query_blocks(T, block_size), probs):
        do_NxKxGxBxD = dout_NxKxGxTxD[:, :, :, a:b]
        dvT_NxKxDxT = dvT_NxKxDxT.at[:, :, :, :b].add(
            jnp.einsum("nkdgt,nkgts->nkds", doT_NxKxDxGxT[..., a:b], p_NxKxGxBxS.astype(dtype)).astype(jnp.float32))
        dp_NxKxGxBxS = jnp.einsum("nkgtd,nksd->nkgts", do_NxKxGxBxD, v_NxKxTxD[:, :, :b]).astype(jnp.float32)
        ds_NxKxGxBxS = (p_NxKxGxBxS * (dp_NxKxGxBxS - delta_NxKxGxT[:, :, :, a:b, None]) * scale).astype(dtype)
        dq_blocks.append(jnp.einsum("nkgts,nksd->nkgtd", ds_NxKxGxBxS, k_NxKxTxD[:, :, :b]))
        dkT_NxKxDxT = dkT_NxKxDxT.at[:, :, :, :b].add(
            jnp.einsum("nkdgt,nkgts->nkds", qT_NxKxDxGxT[..., a:b], ds_NxKxGxBxS).astype(jnp.float32))
    dq_NxQxTxD = jnp.concatenate(dq_blocks, axis=3).reshape(N, K * G, T, D)
    dk_NxKxTxD = dkT_NxKxDxT.transpose(0, 1, 3, 2)
    dv_NxKxTxD = dvT_NxKxDxT.transpose(0, 1, 3, 2)
    return dq_NxQxTxD.astype(dtype), dk_NxKxTxD.astype(k_NxKxTxD.dtype), dv_NxKxTxD.astype(v_NxKxTxD.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _blocked_attention(q_NxQxTxD, k_NxKxTxD, v_NxKxTxD, scale, block_size):
    return _forward(q_NxQxTxD, k_NxKxTxD, v_NxKxTxD, scale, block_size)[0]


_blocked_attention.defvjp(_forward, _backward)


def blocked_causal_attention(q_NxQxTxD: jax.Array, k_NxKxTxD: jax.Array, v_NxKxTxD: jax.Array, scale: float,
                             block_size: int = DEFAULT_BLOCK_SIZE) -> jax.Array:
    """Causal attention of (N, Q, T, D) queries over (N, K, T, D) keys and values (heads-first, K divides Q; query
    head h uses kv head h // (Q // K)), by query blocks of ``block_size``. Returns (N, Q, T, D)."""
    if q_NxQxTxD.ndim != 4 or k_NxKxTxD.shape != v_NxKxTxD.shape or k_NxKxTxD.shape[2] != q_NxQxTxD.shape[2]:
        raise ValueError(f"blocked_causal_attention: q (N, Q, T, D) with k, v (N, K, T, D); got {q_NxQxTxD.shape}, "
                         f"{k_NxKxTxD.shape}, {v_NxKxTxD.shape}")
    if q_NxQxTxD.shape[1] % k_NxKxTxD.shape[1]:
        raise ValueError(f"blocked_causal_attention: kv heads {k_NxKxTxD.shape[1]} must divide query heads "
                         f"{q_NxQxTxD.shape[1]}")
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"blocked_causal_attention: block_size must be a positive integer, got {block_size!r}")
    return _blocked_attention(q_NxQxTxD, k_NxKxTxD, v_NxKxTxD, float(scale), block_size)


__all__ = ["DEFAULT_BLOCK_SIZE", "blocked_causal_attention", "query_blocks"]
