"""Competing predictors of embedding similarity from corpus counts: what a reader asks the signatures to beat.

* :func:`frequency_similarity`: ``-|log f_s - log f_t|``, frequency alone (embeddings of frequent tokens are
  known to cluster; a signature effect must not be a frequency effect);
* :func:`ppmi_similarity`: the classical count-based word vectors (Levy & Goldberg 2014): the positive
  pointwise mutual information of (token, neighbour) counts, optionally shifted by ``log k`` (SPPMI, the
  matrix skip-gram with ``k`` negative samples factorises), cut to ``rank`` by a truncated SVD, token
  vectors ``U_r S_r^(1/2)``, cosine similarity. ``side="input"`` uses a token's row (what follows it, the
  phi_next side), ``side="output"`` its column (what precedes it, the phi_pre side).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from probsig_jax.signatures.pair_counts import CorpusPairCounts
from probsig_jax.validation import require, require_float, require_int

Side = Literal["input", "output"]
DENSE_SVD_MAX = 1000
"""Vocabularies up to this size take a dense SVD (ARPACK fails on small, rank-deficient PPMI matrices)."""


def frequency_similarity(pc: CorpusPairCounts, tokens) -> np.ndarray:
    """(n, n) ``-|log f_s - log f_t|`` with ``f`` the tokens' counts as contexts (rows of the counts)."""
    tokens = np.asarray(tokens)
    f = np.asarray(pc.counts.sum(axis=1)).ravel()[tokens].astype(np.float64)
    require(bool(np.all(f > 0)), "tokens", "every token must occur as a context")
    log_f = np.log(f)
    return -np.abs(log_f[:, None] - log_f[None, :])


def ppmi_matrix(pc: CorpusPairCounts, shift: float = 1.0) -> sp.csr_matrix:
    """(V, V) sparse ``max(0, log(N[s, y] N / (N[s, .] N[., y])) - log shift)`` of the pair counts."""
    shift = require_float(shift, "shift", minimum=1.0)
    N = pc.counts.tocoo()
    total = float(N.sum())
    rows = np.asarray(pc.counts.sum(axis=1)).ravel().astype(np.float64)
    cols = np.asarray(pc.counts.sum(axis=0)).ravel().astype(np.float64)
    pmi = np.log(N.data * total / (rows[N.row] * cols[N.col])) - np.log(shift)
    keep = pmi > 0
    return sp.csr_matrix((pmi[keep], (N.row[keep], N.col[keep])), shape=N.shape)


def ppmi_vectors(pc: CorpusPairCounts, *, side: Side = "input", rank: int = 64, shift: float = 1.0,
                 seed: int = 0) -> np.ndarray:
    """(V, r) rank-``r`` (S)PPMI token vectors ``U_r S_r^(1/2)`` (``r = min(rank, V - 2)``)."""
    require(side in ("input", "output"), "side", f"must be input or output, got {side!r}")
    X = ppmi_matrix(pc, shift)
    if side == "output":
        X = X.T.tocsr()
    rank = min(require_int(rank, "rank", minimum=1), min(X.shape) - 2)
    require(rank >= 1, "rank", f"the vocabulary ({X.shape[0]}) is too small for an SVD")
    if min(X.shape) <= DENSE_SVD_MAX:          # ARPACK is unreliable (and no faster) on small matrices
        U, S, _ = np.linalg.svd(X.toarray(), full_matrices=False)
        U, S = U[:, :rank], S[:rank]
    else:
        v0 = np.random.default_rng(seed).standard_normal(min(X.shape))
        U, S, _ = svds(X.astype(np.float64), k=rank, v0=v0)
    return U * np.sqrt(S)


def ppmi_similarity(pc: CorpusPairCounts, tokens, *, side: Side = "input", rank: int = 64, shift: float = 1.0,
                    seed: int = 0, vectors: np.ndarray | None = None) -> np.ndarray:
    """(n, n) cosine similarity of the tokens' (S)PPMI vectors (``vectors``: precomputed
    :func:`ppmi_vectors`, shared by several token sets)."""
    if vectors is None:
        vectors = ppmi_vectors(pc, side=side, rank=rank, shift=shift, seed=seed)
    vectors = np.asarray(vectors)[np.asarray(tokens)]
    norms = np.linalg.norm(vectors, axis=1)
    unit = vectors / np.where(norms > 0, norms, 1.0)[:, None]
    return np.clip(unit @ unit.T, -1.0, 1.0)
