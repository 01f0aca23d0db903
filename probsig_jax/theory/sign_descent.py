"""Early Adam as sign descent: the small-initialisation prediction of embedding similarity (issue: the theory
under the optimizer it does not model).

Setting: the linear model ``logits = U E e_s`` (or any model whose input embedding ``E`` receives the gradient
``-U^T m_s`` at small initialisation), with ``M`` the signature matrix (columns ``m_s``). At small init the
gradient of embedding ``s`` is ``g_s = U0^T m_s`` (PAPER section 4), a ``d``-vector. For ``U0`` with i.i.d.
``N(0, sigma_U^2)`` entries, its coordinates ``g_s[i] = sum_y U0[y, i] m_s[y]`` are, across ``i``, i.i.d.
Gaussian with ``Cov(g_s[i], g_s'[i]) = sigma_U^2 m_s . m_s'``, i.e. correlation ``rho = cos(m_s, m_s')``.

- **Gradient flow / GD** moves ``E_s`` along ``g_s``: for large ``d`` the cosine of two updates is ``rho``
  (the signature cosine; :func:`gradient_flow_update_cosine`).
- **Sign descent** (Adam's first step exactly, ``m / sqrt(v) = g / |g|``; early Adam approximately) moves each
  coordinate by ``-eta sign(g)``. For a bivariate normal pair with correlation ``rho``,
  ``E[sign(X) sign(Y)] = (2 / pi) arcsin(rho)`` (Sheppard 1899, Van Vleck's arcsine law), so the cosine of two
  sign updates is ``(2 / pi) arcsin(rho)`` (:func:`sign_update_cosine`): the same ordering of pairs as
  ``rho``, but every similarity shrunk toward 0 (``0.5 -> 0.333``, ``0.9 -> 0.713``).
- **Time course** while ``U`` is still about ``U0`` (``eta t`` small against ``sigma_U``): ``E_s(t) = E0_s -
  eta t sign(g_s)``, with ``E0`` i.i.d. ``N(0, sigma_E^2)`` independent of the signs, so the expected cosine is
  ``a (eta t)^2 / ((eta t)^2 + sigma_E^2)`` with ``a`` the update cosine (:func:`sign_descent_embedding_cosine`;
  the gradient-flow analogue has ``|g_s|^2 t^2`` in place of ``d (eta t)^2``).

These are large-``d`` expectations; at finite ``d`` a cosine of sign vectors fluctuates by about ``1 / sqrt(d)``.
They are checked by Monte Carlo in ``tests/test_sign_descent.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from probsig_jax.analysis.metrics import cosine_similarity_matrix
from probsig_jax.validation import require, require_float


def sign_update_cosine(rho: Any) -> np.ndarray:
    """``(2 / pi) arcsin(rho)``, elementwise: the expected cosine of ``sign(X)`` and ``sign(Y)`` for standard
    bivariate normal coordinates with correlation ``rho`` in [-1, 1]."""
    r = np.asarray(rho, dtype=np.float64)
    require(bool(np.all(np.abs(r) <= 1 + 1e-12)), "rho", "correlations must lie in [-1, 1]")
    return (2.0 / np.pi) * np.arcsin(np.clip(r, -1.0, 1.0))


def gradient_flow_update_cosine(M_VxF: Any) -> np.ndarray:
    """(F, F) the cosine of the columns of ``M``: the large-``d`` cosine of two tokens' small-init gradient
    updates ``U0^T m_s`` (and so of their embeddings under gradient flow, once the updates dominate the init)."""
    M = np.asarray(M_VxF, dtype=np.float64)
    require(M.ndim == 2, "M", f"must be a (V, F) matrix, got shape {M.shape}")
    return cosine_similarity_matrix(M.T)


def sign_descent_update_cosine(M_VxF: Any) -> np.ndarray:
    """(F, F) the large-``d`` cosine of two tokens' sign-descent updates: :func:`sign_update_cosine` of the
    columns' cosine (unit diagonal)."""
    return sign_update_cosine(gradient_flow_update_cosine(M_VxF))


def sign_descent_embedding_cosine(M_VxF: Any, eta_t: Any, init_std: float) -> np.ndarray:
    """(T, F, F) expected embedding cosines after ``eta_t = eta * t`` (one value per entry of the 1-D ``eta_t``)
    of sign descent from ``E0`` with i.i.d. ``N(0, init_std^2)`` entries, while ``U`` is about ``U0``:
    ``a (eta t)^2 / ((eta t)^2 + init_std^2)`` off the diagonal, 1 on it (module docstring)."""
    init_std = require_float(init_std, "init_std", minimum=0.0)
    steps = np.atleast_1d(np.asarray(eta_t, dtype=np.float64))
    require(steps.ndim == 1 and bool(np.all(steps >= 0)), "eta_t", "must be a non-negative scalar or 1-D array")
    a = sign_descent_update_cosine(M_VxF)
    share = steps**2 / np.maximum(steps**2 + init_std**2, 1e-300)
    out = share[:, None, None] * a[None]
    idx = np.arange(a.shape[0])
    out[:, idx, idx] = 1.0
    return out
