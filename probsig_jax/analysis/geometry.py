"""Geometry of token vectors for display: a fixed-basis PCA projection and a similarity-based token order."""

from __future__ import annotations

from typing import Any

import numpy as np

from probsig_jax.analysis.metrics import _as_float_array
from probsig_jax.validation import require

__all__ = ["pca_projection", "cluster_order"]


def pca_projection(
    vectors: Any,
    n_components: int = 2,
    *,
    basis_from: Any | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Project vectors on the top principal components.

    The mean and the principal axes are computed from ``basis_from`` when given
    (so that snapshots over training time can be shown in one fixed basis), else
    from ``vectors`` itself.  Each axis's sign is fixed so that its largest-magnitude
    loading is positive (ties: first such coordinate), making the output deterministic.

    Args:
        vectors: ``(n, d)`` array to project.
        n_components: number of components ``c``, ``1 <= c <= min(m, d)`` where ``m``
            is the number of rows used to fit the basis.
        basis_from: optional ``(m, d)`` array used to fit the mean and axes.

    Returns:
        ``(projected, explained_ratio)``: ``projected`` is ``(n, c)``;
        ``explained_ratio`` is ``(c,)``, the fraction of the fitting data's total
        variance along each axis (all zeros if that data has zero variance).
    """
    v = _as_float_array(vectors, "vectors", 2)
    require(v.shape[0] >= 1 and v.shape[1] >= 1, "vectors", f"must be (n, d) with n, d >= 1, got {v.shape}")
    if basis_from is None:
        fit = v
    else:
        fit = _as_float_array(basis_from, "basis_from", 2)
        require(fit.shape[0] >= 1, "basis_from", f"must be (m, d) with m >= 1, got {fit.shape}")
        require(
            fit.shape[1] == v.shape[1],
            "basis_from",
            f"must have the same number of columns as vectors (d = {v.shape[1]}), got shape {fit.shape}",
        )
    max_c = min(fit.shape)
    ok_type = isinstance(n_components, (int, np.integer)) and not isinstance(n_components, bool)
    require(
        ok_type and 1 <= int(n_components) <= max_c,
        "n_components",
        f"must be an integer in [1, {max_c}], got {n_components!r}",
    )
    c = int(n_components)

    mean = fit.mean(axis=0)
    centered = fit - mean
    _, sing, vt = np.linalg.svd(centered, full_matrices=False)
    axes = vt[:c].copy()
    lead = np.argmax(np.abs(axes), axis=1)
    signs = np.where(axes[np.arange(c), lead] < 0.0, -1.0, 1.0)
    axes *= signs[:, None]

    var = sing**2
    total = var.sum()
    ratio = var[:c] / total if total > 0.0 else np.zeros(c)
    projected = (v - mean) @ axes.T
    return projected, ratio


def cluster_order(similarity: Any) -> np.ndarray:
    """A token order that puts similar tokens next to each other: the leaves of an average-linkage
    clustering on ``1 - similarity`` of an ``(n, n)`` similarity matrix (deterministic)."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    distance = np.clip(1.0 - np.asarray(similarity, dtype=np.float64), 0.0, 2.0)
    distance = (distance + distance.T) / 2
    np.fill_diagonal(distance, 0.0)
    return leaves_list(linkage(squareform(distance, checks=False), method="average"))
