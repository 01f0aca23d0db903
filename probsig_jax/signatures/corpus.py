"""Corpus-scale probability signatures from a token stream (PAPER sections 3 and 7), sparse.

A corpus is one token stream ``t_0 .. t_{n-1}``, possibly split into shards (consecutive
parts of the stream, each a 1-D integer array). The label of position ``i = 0 .. n-2`` is
the next token ``y = t_{i+1}``; its context window is ``{t_j : max(0, i-w+1) <= j <= i}``.
Counts keep multiplicity (the paper's c_s(X) counts occurrences)::

    N[s, y] = #{(i, j) : t_{i+1} = y, t_j = s, j in window(i)}     (V, V), rows = context token s

Ours / the paper's names: N before centering ~ N_{x,nu}; f_s = sum_y N[s, y] ~ N_x^in;
Q_s = N[s, :] / f_s = phi_x^y (w = 1: phi_next, the bigram next-token distribution);
R_y(s) = N[s, y] / (w n_y) = psi_nu^X (w = 1: phi_pre, the previous-token distribution);
M = (N^T - u 1 f^T) / (n - 1) with u = 1/V (label x token), the signature matrix.

The counts come from :mod:`probsig_jax.signatures.pair_counts` (re-exported here, so this module is
the one import for corpus-scale signatures). Nothing here allocates a V x V dense array: N is a ``scipy.sparse.csr_matrix`` of int64 and
memory stays proportional to the number of distinct (context, label) pairs. Host-side numpy /
scipy in float64.

Near the start of the stream the window is shorter (position i < w-1 has i+1 context tokens).
We keep the paper's normalisation by the nominal window length L = w: ``R_y`` sums to
``1 - (short-window deficit) / (w n_y)`` for labels seen in the first w-1 positions (at most
w-1 positions of the whole stream), exactly what the dense :func:`probsig_jax.signatures.dense.
output_signatures` gives with ``seq_len = w``. Where a distribution is required (Hellinger) the
rows are renormalised to sum to 1.

Tokens whose conditional does not exist (a context token that never precedes a label, a label
that never occurs) raise :class:`ConfigError` naming them: callers select token sets by
frequency (:func:`top_tokens`), so a silent NaN row would only hide a bad selection.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator

from probsig_jax.signatures.pair_count_update import update_context_pairs
from probsig_jax.signatures.pair_counts import (MAX_DENSE_ENTRIES, CorpusPairCounts, check_token_ids,
                                                count_context_pairs, count_context_pairs_counter)
from probsig_jax.validation import require, require_int

Side = Literal["input", "output"]
Kind = Literal["M", "cosine", "hellinger"]


# ----------------------------------------------------------------------------- token sets

def _require_present(weights: np.ndarray, tokens: np.ndarray, what: str) -> None:
    missing = tokens[weights[tokens] == 0]
    require(missing.size == 0, "tokens",
            f"{missing.size} token(s) never occur {what}, so their signature is undefined: "
            f"{missing[:10].tolist()}{' ...' if missing.size > 10 else ''}")


def top_tokens(pc: CorpusPairCounts, n: int, exclude: Iterable[int] = ()) -> np.ndarray:
    """(min(n, #occurring),) int64 ids of the n most frequent tokens by unigram frequency.

    Ties are broken by the smaller id. ``exclude`` drops ids (e.g. special tokens) before
    ranking. Only tokens that occur are ranked, so a small corpus returns fewer than n ids
    (callers check the size); a stream's last token may occur without being a context token.
    """
    n = require_int(n, "n", minimum=1)
    freq = pc.token_frequencies.copy()
    excl = np.asarray(list(exclude), dtype=np.int64)
    if excl.size:
        excl = excl[(excl >= 0) & (excl < pc.vocab_size)]
        freq[excl] = 0
    available = int(np.count_nonzero(freq))
    order = np.lexsort((np.arange(pc.vocab_size), -freq))
    return order[:min(n, available)].astype(np.int64)


# ----------------------------------------------------------------------------- signatures

def input_signatures(pc: CorpusPairCounts, tokens) -> sp.csr_matrix:
    """csr (|T|, V) float64: row i is ``Q_s = N[s, :] / f_s`` for s = tokens[i] (the paper's phi_x^y / phi_next)."""
    tok = check_token_ids(pc, tokens)
    f = pc.context_weights
    _require_present(f, tok, "as context (f_s = 0)")
    rows = pc.counts[tok].astype(np.float64)
    return sp.csr_matrix(sp.diags(1.0 / f[tok]) @ rows)


def output_signatures(pc: CorpusPairCounts, tokens) -> sp.csr_matrix:
    """csr (|T|, V) float64: row i is ``R_y(s) = N[s, y] / (w n_y)`` for y = tokens[i] (psi_nu^X / phi_pre).

    Normalised by the nominal window w (see the module docstring for the stream start).
    """
    tok = check_token_ids(pc, tokens)
    _require_present(pc.label_counts, tok, "as labels (n_y = 0)")
    rows = pc.counts_by_label[tok].astype(np.float64)
    return sp.csr_matrix(sp.diags(1.0 / (pc.window * pc.label_counts[tok])) @ rows)


def signature_matrix_operator(pc: CorpusPairCounts) -> LinearOperator:
    """M (V_label, V_token) = (N^T - u 1 f^T) / (n - 1), u = 1/V, as a LinearOperator (sparse plus rank one).

    ``matvec(x)`` (x over tokens) = (N^T x - u (f . x) 1) / (n - 1); ``rmatvec(y)`` (y over labels)
    = (N y - u (1 . y) f) / (n - 1); matmat / rmatmat apply the same to (V, k) blocks. Column s is
    ``f_s / (n - 1) * (Q_s - u)``, the PAPER's ``E[c_s(X)] (Q_s - u)``; it equals the dense
    ``signature_matrix`` of :meth:`CorpusPairCounts.to_signature_counts`. Float64.
    """
    V = pc.vocab_size
    scale = 1.0 / pc.num_positions
    u = 1.0 / V
    N = pc.counts.astype(np.float64)
    NT = pc.counts_by_label.astype(np.float64)
    f = pc.context_weights.astype(np.float64)

    def mat(X):
        X = np.asarray(X, dtype=np.float64)
        return (NT @ X - u * np.expand_dims(f @ X, 0)) * scale

    def rmat(Y):
        Y = np.asarray(Y, dtype=np.float64)
        s = Y.sum(axis=0)
        return (N @ Y - u * (np.multiply.outer(f, s) if Y.ndim == 2 else f * s)) * scale

    return LinearOperator((V, V), matvec=mat, rmatvec=rmat, matmat=mat, rmatmat=rmat, dtype=np.float64)


def _cosine_from_gram(G: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.clip(np.diag(G), 0.0, None))
    denom = np.outer(d, d)
    out = np.divide(G, denom, out=np.zeros_like(G), where=denom > 0)
    return np.clip(out, -1.0, 1.0)


def _row_gram(A: sp.csr_matrix) -> np.ndarray:
    return np.asarray((A @ A.T).toarray(), dtype=np.float64)


def signature_similarity(pc: CorpusPairCounts, tokens, side: Side = "input", kind: Kind = "M") -> np.ndarray:
    """(|T|, |T|) float64 similarity of the tokens' signatures, computed sparsely.

    side: "input" (embedding side: columns M_s of M, conditionals Q_s = phi_next) or
      "output" (unembedding side: rows M_y of M, conditionals R_y = phi_pre).
    kind: "M" = cosine of the columns / rows of M (what the linear theory predicts), via
      ``<M_s, M_s'> ∝ N_s . N_s' - u f_s f_s'`` (input) and
      ``<M_y, M_y'> ∝ N^T_y . N^T_y' - u (b_y + b_y') + u^2 |f|^2`` with b = N^T f (output);
      "cosine" = cosine of the raw conditionals; "hellinger" = 1 - Hellinger distance
      (``1 - sqrt(1 - sum sqrt(p q))``) of the conditionals (renormalised to sum 1).
    Raises ConfigError("tokens") for tokens without a signature on that side.
    """
    tok = check_token_ids(pc, tokens)
    require(side in ("input", "output"), "side", f"must be 'input' or 'output', got {side!r}")
    require(kind in ("M", "cosine", "hellinger"), "kind", f"must be one of 'M', 'cosine', 'hellinger', got {kind!r}")
    f = pc.context_weights
    if side == "input":
        _require_present(f, tok, "as context (f_s = 0)")
        A = pc.counts[tok].astype(np.float64)
    else:
        _require_present(pc.label_counts, tok, "as labels (n_y = 0)")
        A = pc.counts_by_label[tok].astype(np.float64)
    u = 1.0 / pc.vocab_size
    if kind == "M":
        G = _row_gram(A)
        if side == "input":
            ft = f[tok].astype(np.float64)
            G -= u * np.outer(ft, ft)
        else:
            ff = f.astype(np.float64)
            b = A @ ff
            G += -u * (b[:, None] + b[None, :]) + u * u * float(ff @ ff)
        return _cosine_from_gram(G)
    if kind == "cosine":
        return _cosine_from_gram(_row_gram(A))
    totals = np.asarray(A.sum(axis=1)).ravel()
    P = sp.csr_matrix(sp.diags(1.0 / totals) @ A)
    P.data = np.sqrt(P.data)
    bc = np.clip(_row_gram(P), 0.0, 1.0)
    return 1.0 - np.sqrt(1.0 - bc)


__all__ = [
    "CorpusPairCounts",
    "MAX_DENSE_ENTRIES",
    "count_context_pairs",
    "count_context_pairs_counter",
    "input_signatures",
    "output_signatures",
    "signature_matrix_operator",
    "signature_similarity",
    "top_tokens",
    "update_context_pairs",
]
