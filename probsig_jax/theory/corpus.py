"""Linear-theory prediction of embedding geometry at LLM scale (PAPER sections 4 and 7).

The dense closed form (:mod:`probsig_jax.theory.linear`) needs the full SVD of M; for a
corpus M is (V, V) with V ~ 152k, sparse plus rank one (:func:`probsig_jax.signatures.corpus.
signature_matrix_operator`). Here we keep its k leading singular modes ``M ~ P diag(S) Q^T``
(ARPACK or a randomized range finder, both matrix-free) and predict the expected Gram of the
embeddings from i.i.d. N(0, eps^2) initialisation,

    E[E(t)^T E(t)] = eps^2 d [I + Q (cosh(2 S t) - I) Q^T]      (embedding, token side, Q = right vectors)
    E[U(t) U(t)^T] = eps^2 d [I + P (cosh(2 S t) - I) P^T]      (unembedding, label side, P = left vectors)

restricted to a token set. Approximation: modes beyond k are treated as not growing (their
cosh(2 sigma t) - 1 is dropped); the error is small while ``sigma_{k+1} t`` is small, i.e. the
neglected singular values are small next to the kept ones at the times of interest.

Names: Q = right singular vectors of M (token side; built from the Q_s = phi_next signatures),
P = left singular vectors (label side; the R_y = phi_pre signatures). Host-side numpy float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.linalg
from scipy.sparse.linalg import LinearOperator, svds

from probsig_jax.signatures.corpus import CorpusPairCounts
from probsig_jax.theory.modes import SignatureModes
from probsig_jax.validation import require, require_float, require_int, require_seed

Method = Literal["arpack", "randomized"]


@dataclass(frozen=True, eq=False)
class _CompressedM:
    """M restricted to the tokens that occur, exactly: same nonzero singular values, modes re-expanded.

    Columns of M for tokens that never occur as context are zero (f_s = 0), so Q vanishes there.
    Rows for labels that never occur all equal ``r = -u f / (n - 1)``; their block ``1_m r^T``
    has the singular structure of the single row ``sqrt(m) r^T``. The compressed matrix is
    ``[M[labels, tokens]; sqrt(m) r[tokens]^T]`` of shape (|labels| + (m > 0), |tokens|),
    typically ~5x smaller than V at LLM scale, which is what the SVD's cost scales with.
    """

    operator: LinearOperator
    labels: np.ndarray        # active label ids
    tokens: np.ndarray        # active context-token ids
    num_inactive_labels: int  # m
    vocab_size: int

    @classmethod
    def build(cls, pc: CorpusPairCounts) -> "_CompressedM":
        V = pc.vocab_size
        f_all = pc.context_weights
        tokens = np.flatnonzero(f_all > 0)
        labels = np.flatnonzero(pc.label_counts > 0)
        m = V - labels.size
        extra = 1 if m > 0 else 0
        NT = pc.counts_by_label[labels][:, tokens].astype(np.float64).tocsr()
        N = NT.T.tocsr()
        f = f_all[tokens].astype(np.float64)
        u, scale, root_m = 1.0 / V, 1.0 / pc.num_positions, float(np.sqrt(m))
        La = labels.size

        def mat(X):
            X = np.asarray(X, dtype=np.float64)
            fx = np.expand_dims(f @ X, 0)
            out = NT @ X - u * fx
            if extra:
                out = np.concatenate((out, -root_m * u * fx), axis=0)
            return out * scale

        def rmat(Y):
            Y = np.asarray(Y, dtype=np.float64)
            total = Y[:La].sum(axis=0) + (root_m * Y[La] if extra else 0.0)
            return (N @ Y[:La] - u * (np.multiply.outer(f, total) if Y.ndim == 2 else f * total)) * scale

        op = LinearOperator((La + extra, tokens.size), matvec=mat, rmatvec=rmat, matmat=mat, rmatmat=rmat,
                            dtype=np.float64)
        return cls(op, labels, tokens, m, V)

    def expand(self, Pc: np.ndarray, Qc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Full (V, k) P and Q from the compressed singular vectors."""
        k = Pc.shape[1]
        P = np.zeros((self.vocab_size, k))
        Q = np.zeros((self.vocab_size, k))
        Q[self.tokens] = Qc
        P[self.labels] = Pc[:self.labels.size]
        if self.num_inactive_labels:
            inactive = np.setdiff1d(np.arange(self.vocab_size), self.labels, assume_unique=True)
            P[inactive] = Pc[self.labels.size] / np.sqrt(self.num_inactive_labels)
        return P, Q


def _orient(P: np.ndarray, S: np.ndarray, Q: np.ndarray) -> SignatureModes:
    """Sort descending and fix signs (largest |entry| of each Q column positive) for reproducibility."""
    order = np.argsort(-S, kind="stable")
    P, S, Q = P[:, order], S[order], Q[:, order]
    idx = np.argmax(np.abs(Q), axis=0)
    sign = np.where(Q[idx, np.arange(Q.shape[1])] < 0, -1.0, 1.0)
    return SignatureModes(np.ascontiguousarray(P * sign), np.ascontiguousarray(S),
                          np.ascontiguousarray(Q * sign))


def _randomized_svd(op, k: int, oversample: int, power_iterations: int, seed: int):
    """Halko-Martinsson-Tropp range finder with power iterations, using only matmat / rmatmat."""
    V_out, V_in = op.shape
    ell = min(k + oversample, V_out, V_in)
    rng = np.random.default_rng(seed)
    Y = op.matmat(rng.standard_normal((V_in, ell)))
    basis = scipy.linalg.qr(Y, mode="economic")[0]
    for _ in range(power_iterations):
        Z = scipy.linalg.qr(op.rmatmat(basis), mode="economic")[0]
        basis = scipy.linalg.qr(op.matmat(Z), mode="economic")[0]
    B = op.rmatmat(basis).T                                      # (ell, V_in) = basis^T M
    Ub, S, Vt = scipy.linalg.svd(B, full_matrices=False)
    return basis @ Ub[:, :k], S[:k], Vt[:k].T


def max_modes(pc: CorpusPairCounts, method: Method = "arpack") -> int:
    """Largest k :func:`truncated_signature_modes` accepts for ``pc`` (at most V - 1).

    M has at most ``min(#distinct label rows, #context tokens)`` nonzero modes (label rows of
    labels that never occur are all equal); ARPACK needs one fewer.
    """
    require(method in ("arpack", "randomized"), "method", f"must be 'arpack' or 'randomized', got {method!r}")
    V = pc.vocab_size
    active_labels = int(np.count_nonzero(pc.label_counts))
    rows = active_labels + (1 if active_labels < V else 0)
    bound = min(rows, int(np.count_nonzero(pc.context_weights)))
    return max(0, min(V - 1, bound - 1 if method == "arpack" else bound))


def truncated_signature_modes(pc: CorpusPairCounts, k: int, *, method: Method = "arpack", seed: int = 0,
                              oversample: int = 10, power_iterations: int = 4) -> SignatureModes:
    """The k leading singular modes of the corpus signature matrix M (V_label, V_token).

    Args:
      pc: windowed pair counts (:func:`probsig_jax.signatures.corpus.count_context_pairs`).
      k: number of modes, 1 <= k <= :func:`max_modes` (< V: M has rank <= V - 1 since 1^T M = 0).
      method: "arpack" (``scipy.sparse.linalg.svds`` on the LinearOperator; accurate to ~1e-12) or
        "randomized" (Halko-Martinsson-Tropp range finder with ``k + oversample`` columns and
        ``power_iterations`` power iterations, using only matmat / rmatmat; the leading modes are
        as accurate as ARPACK's, the trailing ones depend on the spectral gap: on a 3M-token Zipf
        stream with k = 64 the defaults gave S_64 to 1.5e-2 relative, oversample=32,
        power_iterations=8 to 6e-6).
      seed: start vector / test matrix seed.
      oversample, power_iterations: randomized method only.

    Both methods work on M restricted to the tokens that occur (exact, see ``_CompressedM``),
    so the cost scales with the number of distinct tokens rather than V.

    Returns:
      :class:`SignatureModes` with numpy float64 arrays P (V, k), S (k,) descending, Q (V, k);
      each Q column has its largest-magnitude entry positive.
    """
    V = pc.vocab_size
    require(V >= 2, "pc", f"vocab_size must be >= 2 for an SVD, got {V}")
    k = require_int(k, "k", minimum=1, maximum=V - 1)
    require(method in ("arpack", "randomized"), "method", f"must be 'arpack' or 'randomized', got {method!r}")
    require_seed(seed)
    require_int(oversample, "oversample", minimum=0)
    require_int(power_iterations, "power_iterations", minimum=0)
    comp = _CompressedM.build(pc)
    op = comp.operator
    rank_bound = min(op.shape)
    k_max = rank_bound - 1 if method == "arpack" else rank_bound      # ARPACK needs k < min(shape)
    require(k <= k_max, "k",
            f"must be in [1, {k_max}] for method {method!r} here: only {comp.tokens.size} tokens occur as "
            f"context and M has {op.shape[0]} distinct label rows, so it has at most {rank_bound} modes; got {k}")
    if method == "arpack":
        v0 = np.random.default_rng(seed).standard_normal(rank_bound)
        Pc, S, Qct = svds(op, k=k, solver="arpack", v0=v0, random_state=seed)
        Qc = Qct.T
    else:
        Pc, S, Qc = _randomized_svd(op, k, oversample, power_iterations, seed)
    P, Q = comp.expand(Pc, Qc)
    return _orient(P, S, Q)


def _check_modes(modes: SignatureModes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    P, S, Q = (np.asarray(x, dtype=np.float64) for x in (modes.P, modes.S, modes.Q))
    require(S.ndim == 1 and S.size >= 1, "modes", f"S must be a non-empty 1-D array, got shape {S.shape}")
    require(P.ndim == 2 and P.shape[1] == S.size and Q.ndim == 2 and Q.shape[1] == S.size, "modes",
            f"P (V, k) and Q (V, k) must have k = {S.size} columns, got {P.shape} and {Q.shape}")
    return P, S, Q


def time_for_growth(modes: SignatureModes, growth: float) -> float:
    """Flow time t at which the leading mode's expected squared norm factor cosh(2 S_1 t) equals growth**2.

    I.e. the leading mode's amplitude has grown by the factor ``growth`` (>= 1):
    ``t = arccosh(growth^2) / (2 S_1)``. Units of t: flow time (gradient-descent steps x learning rate).
    """
    _, S, _ = _check_modes(modes)
    g = require_float(growth, "growth", minimum=1.0)
    s1 = float(S.max())
    require(s1 > 0, "modes", "the leading singular value is 0: nothing grows")
    return float(np.arccosh(g * g) / (2.0 * s1))


def predicted_similarity(modes: SignatureModes, tokens, t: float,
                         side: Literal["embedding", "unembedding"] = "embedding", *,
                         include_init: bool = True) -> np.ndarray:
    """(|T|, |T|) float64 cosine similarity of the predicted Gram restricted to ``tokens``.

    ``G_T = I + X_T diag(cosh(2 S t) - 1) X_T^T`` with X = Q (embedding side: input embeddings,
    compared with phi_next) or X = P (unembedding side: compared with phi_pre); the eps^2 d
    factor of the expected Gram cancels in the cosine. Modes beyond k are taken as not growing.
    ``cosh(2x) - 1`` is evaluated as ``2 sinh(x)^2`` (accurate for tiny t).
    ``include_init=False`` drops the ``I`` of the initialisation and keeps the learned part
    ``X_T diag(cosh(2 S t) - 1) X_T^T`` alone: the geometry once the displacement dominates the initial
    noise (its cosine at small t is the cosine of the projected signature columns, whatever t); tokens
    with no weight on the k modes get similarity 0 to the others.
    """
    P, S, Q = _check_modes(modes)
    require(side in ("embedding", "unembedding"), "side", f"must be 'embedding' or 'unembedding', got {side!r}")
    t = require_float(t, "t", minimum=0.0)
    X = Q if side == "embedding" else P
    tok = np.asarray(tokens)
    require(tok.ndim == 1 and tok.size > 0 and np.issubdtype(tok.dtype, np.integer), "tokens",
            f"must be a non-empty 1-D array of integer ids, got shape {tok.shape} dtype {tok.dtype}")
    bad = tok[(tok < 0) | (tok >= X.shape[0])]
    require(bad.size == 0, "tokens", f"ids must be in [0, {X.shape[0] - 1}], got {bad[:10].tolist()}")
    growth = 2.0 * np.sinh(S * t) ** 2
    XT = X[tok]
    G = (XT * growth) @ XT.T
    if include_init:
        G = G + (tok[:, None] == tok[None, :]).astype(np.float64)
    d = np.sqrt(np.diag(G))
    d = np.where(d > 0, d, 1.0)
    C = np.clip(G / np.outer(d, d), -1.0, 1.0)
    np.fill_diagonal(C, 1.0)
    return C


__all__ = ["max_modes", "predicted_similarity", "predicted_similarity_change", "signature_modes_for_rank",
           "time_for_growth", "truncated_signature_modes"]


def signature_modes_for_rank(pc: CorpusPairCounts, rank: int, *, method: Method = "arpack", seed: int = 0
                             ) -> SignatureModes:
    """:func:`truncated_signature_modes` with ``rank`` capped at what the counts support (:func:`max_modes`)."""
    k = min(int(rank), max_modes(pc, method))
    require(k >= 1, "rank", f"the counts support no singular mode (vocabulary {pc.vocab_size})")
    return truncated_signature_modes(pc, k, method=method, seed=seed)


def predicted_similarity_change(pc_base: CorpusPairCounts, pc_edited: CorpusPairCounts, tokens, *, rank: int,
                                growth: float, side: Literal["embedding", "unembedding"] = "embedding",
                                include_init: bool = False, method: Method = "arpack", seed: int = 0,
                                modes: tuple[SignatureModes, SignatureModes] | None = None) -> np.ndarray:
    """(|T|, |T|) the change of predicted similarity an edit of the corpus causes, from the counts alone (before any
    training): :func:`predicted_similarity` of the edited counts minus that of the baseline counts, each from its own
    ``rank`` leading modes at the time its leading mode has grown ``growth``-fold (:func:`time_for_growth`).

    ``pc_base`` and ``pc_edited`` must share the vocabulary (the same ids); ``tokens`` are ids of it. The diagonal
    is 0. Compare with the measured change ``S(trained on edited) - S(trained on baseline)`` of two models from one
    initialisation and batch order; pairs the edit does not touch give the null. ``modes``: the two streams' modes
    from :func:`signature_modes_for_rank` when already computed (one SVD per stream for both sides and every edit).
    """
    require(pc_base.vocab_size == pc_edited.vocab_size, "pc_edited",
            f"must share the baseline's vocabulary ({pc_base.vocab_size}), got {pc_edited.vocab_size}")
    if modes is None:
        modes = tuple(signature_modes_for_rank(pc, rank, method=method, seed=seed) for pc in (pc_base, pc_edited))
    out = [predicted_similarity(m, tokens, time_for_growth(m, growth), side=side, include_init=include_init)
           for m in modes]
    return np.asarray(out[1]) - np.asarray(out[0])
