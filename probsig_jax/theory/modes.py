"""The singular modes of the signature matrix, ``M = P diag(S) Q^T``: the basis of the linear theory's closed
form (:mod:`probsig_jax.theory.linear`) and of its corpus-scale truncation (:mod:`probsig_jax.theory.corpus`).
Plain JAX; no sympy or diffrax."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class SignatureModes:
    """Compact SVD ``M = P diag(S) Q^T``: P (V, r), S (r,) descending, Q (F, r)."""

    P: jax.Array
    S: jax.Array
    Q: jax.Array


def signature_modes(M, rtol: float = 1e-10) -> SignatureModes:
    """Compact SVD of M, dropping singular values below ``rtol * S[0]``."""
    M = jnp.asarray(M)
    P, S, Qt = jnp.linalg.svd(M, full_matrices=False)
    r = max(1, int(jnp.sum(S > rtol * S[0])))
    return SignatureModes(P[:, :r], S[:r], Qt[:r].T)
