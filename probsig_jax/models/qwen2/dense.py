"""``x @ w`` with a backward pass laid out for XLA:CPU (the decoder's ``dense_impl="explicit_transpose"``).

The weight gradient of ``y = x @ w`` is ``x^T @ dy``: a product that contracts the *leading* (token) axis of
both operands. XLA:CPU's matrix-product kernels take row-major operands contracted on the last axis of the
left one, so XLA transposes one of them first, and left to itself it picks the gradient ``dy`` and writes the
transpose inside the elementwise fusion that produces ``dy`` (e.g. the SwiGLU backward). Such a fusion writes
column by column and ran several times slower than the same fusion written row by row (``benchmarks/
qwen2_step_profile.py`` shows it per operation). :func:`dense` instead transposes the *smaller* of ``x`` and
``dy`` on its own (behind ``lax.optimization_barrier``, so XLA cannot fold the transpose back into the
product) and leaves every elementwise fusion row-major. The input gradient ``dy @ w^T`` needs nothing.

Same values as ``x @ w`` and the same gradients up to float rounding (``tests/test_qwen2_kernels.py`` checks
them against JAX's own differentiation). A ``jax.custom_vjp`` function has no forward-mode derivative
(``jax.jvp``); use ``dense_impl="einsum"`` for that.
"""

from __future__ import annotations

import jax
from jax import lax


def _transposed(x_MxK: jax.Array) -> jax.Array:
    """``x.T`` materialised in row-major order (not folded into the next product's dimension numbers)."""
    return lax.optimization_barrier(x_MxK.T)


@jax.custom_vjp
def matmul(x_MxK: jax.Array, w_KxN: jax.Array) -> jax.Array:
    """``x @ w`` for 2-d operands, (M, K) @ (K, N) -> (M, N), with the backward pass described above."""
    return x_MxK @ w_KxN


def _matmul_forward(x_MxK, w_KxN):
    return x_MxK @ w_KxN, (x_MxK, w_KxN)


def _matmul_backward(residuals, dy_MxN):
    x_MxK, w_KxN = residuals
    dx_MxK = dy_MxN @ w_KxN.T
    K, N = w_KxN.shape
    if K <= N:   # transpose x (M x K), the smaller operand
        dw_KxN = _transposed(x_MxK) @ dy_MxN
    else:        # transpose dy (M x N), then the small (N, K) result
        dw_KxN = (_transposed(dy_MxN) @ x_MxK).T
    return dx_MxK.astype(x_MxK.dtype), dw_KxN.astype(w_KxN.dtype)


matmul.defvjp(_matmul_forward, _matmul_backward)


def dense(x_BxK: jax.Array, w_KxN: jax.Array) -> jax.Array:
    """``x @ w`` over the last axis of ``x`` (any leading shape B), by :func:`matmul` on the flattened rows."""
    K = x_BxK.shape[-1]
    y_MxN = matmul(x_BxK.reshape(-1, K), w_KxN)
    return y_MxN.reshape(*x_BxK.shape[:-1], w_KxN.shape[1])


__all__ = ["dense", "matmul"]
