"""The counts of an edited token stream from the counts of the original: an incremental update.

An edit (:mod:`probsig_jax.corpus.edits`) rewrites some positions of a stream. Only the (context, label) pairs whose
label position or context window holds a rewritten position change, so :func:`update_context_pairs` recounts just
those, in both streams, as sorted integer pair codes ``s * V + y`` and merges the difference into the baseline's CSR
counts. It equals :func:`~probsig_jax.signatures.pair_counts.count_context_pairs` of the edited stream exactly
(tests/test_corpus_edits.py); ``benchmarks/corpus_edit.py`` times it against that recount.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from probsig_jax.signatures.pair_counts import CorpusPairCounts
from probsig_jax.validation import require


def _code_dtype(V: int) -> type:
    """The narrowest integer dtype that holds every pair code ``s * V + y`` (int32 sorts about 2x faster)."""
    return np.int32 if V * V <= np.iinfo(np.int32).max else np.int64


def _run_sums(codes: np.ndarray, values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distinct sorted codes and, per code, the number of occurrences (``values is None``) or the sum of ``values``."""
    order = None if values is None else np.argsort(codes, kind="stable")
    codes = np.sort(codes) if order is None else codes[order]
    start = np.flatnonzero(np.concatenate(([True], codes[1:] != codes[:-1]))) if codes.size else np.zeros(0, np.intp)
    if values is None:
        sums = np.diff(np.append(start, codes.size)).astype(np.int64)
    else:
        sums = np.add.reduceat(values[order], start) if codes.size else np.zeros(0, np.int64)
    return codes[start], sums


def _sorted_distinct(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer array (a sort, cheaper here than numpy's hash-based ``unique``)."""
    if x.size < 2 or bool(np.all(x[1:] > x[:-1])):      # already sorted and distinct (an edit's positions are)
        return x
    return _run_sums(x)[0]


def _label_positions(changed: np.ndarray, window: int) -> np.ndarray:
    """Sorted positions ``i >= 1`` whose label or context window holds a changed position (``changed``: (n,) bool)."""
    mark = changed.copy()
    for k in range(1, window + 1):
        mark[k:] |= changed[:-k]
    mark[0] = False
    return np.flatnonzero(mark)


def _pair_codes(stream: np.ndarray, labels: np.ndarray, window: int, V: int, dtype) -> np.ndarray:
    """Codes ``stream[i - k] * V + stream[i]`` of every (context, label) pair at the label positions ``labels``."""
    parts = []
    for k in range(1, window + 1):
        at = labels[labels >= k]
        parts.append(stream[at - k].astype(dtype) * dtype(V) + stream[at].astype(dtype))
    return np.concatenate(parts)


def _codes_to_csr(codes: np.ndarray, values: np.ndarray, V: int) -> sp.csr_matrix:
    """The (V, V) CSR matrix holding ``values`` at the sorted distinct pair ``codes`` (``s * V + y``), built in
    canonical form directly (no COO conversion, no duplicate summing, no index sort)."""
    dtype = codes.dtype.type
    rows = codes // dtype(V)
    indptr = np.zeros(V + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=V), out=indptr[1:])
    out = sp.csr_matrix((values, (codes - rows * dtype(V)).astype(np.int64), indptr), shape=(V, V))
    out.has_canonical_format = True
    return out


def update_context_pairs(pc: CorpusPairCounts, old_stream: np.ndarray, new_stream: np.ndarray,
                         positions: np.ndarray) -> CorpusPairCounts:
    """The counts of ``new_stream`` from those of ``old_stream`` (``pc``), where the two streams differ only at
    ``positions``: an incremental update that touches only the pairs whose label or context is a changed token.

    Cost: sorts of the O(|positions| w) changed pair codes, one merge with the baseline's sorted codes (O(nnz))
    and one pass comparing the streams (the check that ``positions`` lists every change), instead of a count of the
    stream; equal to :func:`count_context_pairs` of ``new_stream`` exactly (tested). Both
    streams are one 1-D array each (not shards), of the same length, with ids in ``[0, V)``; ``positions`` may list
    unchanged positions too (they cancel).
    """
    old, new = np.asarray(old_stream), np.asarray(new_stream)
    require(old.ndim == 1 and old.shape == new.shape and old.size == pc.num_positions + 1, "new_stream",
            f"must be a 1-D stream of the counted length {pc.num_positions + 1}, got {new.shape} (old {old.shape})")
    pos = _sorted_distinct(np.asarray(positions, dtype=np.int64).ravel())
    require(pos.size == 0 or (pos[0] >= 0 and pos[-1] < old.size), "positions",
            f"must be indices in [0, {old.size - 1}]")
    new_at = new[pos]
    require(pos.size == 0 or (int(new_at.max()) < pc.vocab_size and int(new_at.min()) >= 0), "new_stream",
            f"ids must be in [0, {pc.vocab_size - 1}]")
    listed = np.zeros(old.size, dtype=bool)
    listed[pos] = True
    require(bool(listed[np.flatnonzero(old != new)].all()), "positions",
            "must include every position where the streams differ")
    V, w = pc.vocab_size, pc.window
    counts = pc.counts
    labels = _label_positions(listed, w)
    if labels.size:
        dtype = _code_dtype(V)
        added = _run_sums(_pair_codes(new, labels, w, V, dtype))
        removed = _run_sums(_pair_codes(old, labels, w, V, dtype))
        codes, delta = _run_sums(np.concatenate((added[0], removed[0])), np.concatenate((added[1], -removed[1])))
        nonzero = delta != 0
        counts = counts + _codes_to_csr(codes[nonzero], delta[nonzero], V)   # scipy's merge of sorted rows
        counts.eliminate_zeros()
        require(counts.nnz == 0 or int(counts.data.min()) > 0, "old_stream",
                "must be the stream the counts were made from (the update would leave negative counts)")
    label_counts = pc.label_counts.copy()
    is_label = pos >= 1                                   # t_0 is never a label
    label_counts += np.bincount(new_at[is_label], minlength=V) - np.bincount(old[pos[is_label]], minlength=V)
    return CorpusPairCounts(counts.astype(np.int64, copy=False), w, V, pc.num_positions, label_counts, int(new[0]))


__all__ = ["update_context_pairs"]
