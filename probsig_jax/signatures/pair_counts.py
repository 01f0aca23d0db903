"""Streaming windowed (context token, next token) counts of a token stream, stored sparse.

A corpus is one token stream ``t_0 .. t_{n-1}``, possibly split into shards (consecutive
parts of the stream, each a 1-D integer array). The label of position ``i = 0 .. n-2`` is
the next token ``y = t_{i+1}``; its context window is ``{t_j : max(0, i-w+1) <= j <= i}``.
Counts keep multiplicity (the paper's c_s(X) counts occurrences)::

    N[s, y] = #{(i, j) : t_{i+1} = y, t_j = s, j in window(i)}     (V, V), rows = context token s

N is a ``scipy.sparse.csr_matrix`` of int64: memory stays proportional to the number of distinct
(context, label) pairs, never V x V. :func:`count_context_pairs` is the fast path (one sorted integer
code per pair, counted in runs); :func:`count_context_pairs_counter` the plain ``collections.Counter``
reference. The signatures built from these counts are in :mod:`probsig_jax.signatures.corpus`.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from probsig_jax.progress import progress_bar
from probsig_jax.signatures.dense import SignatureCounts
from probsig_jax.validation import require, require_int

MAX_DENSE_ENTRIES = 1 << 25
"""Largest (V x |T|) dense joint matrix :meth:`CorpusPairCounts.to_signature_counts` builds (256 MiB float64)."""


# ----------------------------------------------------------------------------- the counts

@dataclass(frozen=True, eq=False)
class CorpusPairCounts:
    """Windowed (context token, next token) counts of a token stream (compared by identity).

    Attributes:
      counts: ``csr_matrix`` (V, V) int64, ``N[s, y]`` (rows = context token s, columns = label y);
        the paper's N_{x,nu} (transposed: ours is token x label).
      window: w >= 1, the context length (w = 1: bigram counts, the paper's phi_next / phi_pre).
      vocab_size: V.
      num_positions: n - 1, the number of labelled positions (the normaliser of M).
      label_counts: (V,) int64, ``n_y`` = number of positions with label y.
      first_token: t_0, the only token of the stream that is never a label.
    """

    counts: sp.csr_matrix
    window: int
    vocab_size: int
    num_positions: int
    label_counts: np.ndarray
    first_token: int

    def __post_init__(self) -> None:
        V = require_int(self.vocab_size, "vocab_size", minimum=1)
        require_int(self.window, "window", minimum=1)
        require_int(self.num_positions, "num_positions", minimum=1)
        require(sp.issparse(self.counts) and self.counts.format == "csr", "counts",
                f"must be a scipy.sparse csr matrix, got {type(self.counts).__name__}")
        require(self.counts.shape == (V, V), "counts", f"must have shape ({V}, {V}), got {self.counts.shape}")
        labels = np.asarray(self.label_counts)
        require(labels.shape == (V,), "label_counts", f"must have shape ({V},), got {labels.shape}")
        require(int(labels.sum()) == self.num_positions, "label_counts",
                f"must sum to num_positions = {self.num_positions}, got {int(labels.sum())}")
        require_int(self.first_token, "first_token", minimum=0, maximum=V - 1)
        object.__setattr__(self, "label_counts", labels.astype(np.int64, copy=False))

    @property
    def context_weights(self) -> np.ndarray:
        """(V,) int64 ``f_s = sum_y N[s, y]``: the paper's N_x^in (occurrences as context, with multiplicity)."""
        return np.asarray(self.counts.sum(axis=1), dtype=np.int64).ravel()

    @property
    def token_frequencies(self) -> np.ndarray:
        """(V,) int64 unigram counts of the whole stream (labels plus the first token)."""
        freq = self.label_counts.copy()
        freq[self.first_token] += 1
        return freq

    @property
    def num_pairs(self) -> int:
        """Number of distinct (context, label) pairs, the nnz of ``counts``."""
        return int(self.counts.nnz)

    @functools.cached_property
    def counts_by_label(self) -> sp.csr_matrix:
        """``N^T`` as csr (V_label, V_token): fast row access for the output side."""
        return self.counts.T.tocsr()

    def to_signature_counts(self, tokens: Sequence[int] | np.ndarray | None = None) -> SignatureCounts:
        """Bridge to the dense :class:`SignatureCounts` (joint = N^T as (V_label, |T|)).

        ``tokens`` restricts the features (columns of joint) to a token set; M, Q and R
        entries of those tokens are unchanged by the restriction (u = 1/V stays). Refuses
        more than :data:`MAX_DENSE_ENTRIES` dense entries. total_weight = num_positions,
        seq_len = window.
        """
        cols = np.arange(self.vocab_size) if tokens is None else check_token_ids(self, tokens)
        size = self.vocab_size * len(cols)
        require(size <= MAX_DENSE_ENTRIES, "tokens",
                f"a dense (V, |T|) = ({self.vocab_size}, {len(cols)}) joint has {size} entries, "
                f"more than {MAX_DENSE_ENTRIES}; pass a smaller token set")
        joint = self.counts[cols].T.toarray().astype(np.float64)
        return SignatureCounts(joint, self.label_counts.astype(np.float64), float(self.num_positions), self.window)


    def pooled(self, tokens: Sequence[int] | np.ndarray) -> SignatureCounts:
        """The counts over a top-``K`` vocabulary with every other token pooled into one class, on both sides:
        :class:`SignatureCounts` with ``V = F = K + 1`` (ids ``0..K-1`` are ``tokens`` in order, ``K`` is "other"),
        ``joint[y, s]`` the pair counts of the pooled ids, total weight ``num_positions`` and ``seq_len`` 1.

        This is the exact data of a bigram model over the pooled vocabulary (``window`` must be 1): its full-batch
        loss is a sum over the ``(K + 1)^2`` cells, whatever the corpus length. ``tokens``: distinct ids.
        """
        require(self.window == 1, "window", f"pooled bigram counts need window 1, got {self.window}")
        ids = check_token_ids(self, tokens)
        require(len(np.unique(ids)) == len(ids), "tokens", "must be distinct")
        K = len(ids)
        pool = np.full(self.vocab_size, K, dtype=np.int64)
        pool[ids] = np.arange(K)
        coo = self.counts.tocoo()
        joint = np.zeros((K + 1, K + 1))
        np.add.at(joint, (pool[coo.col], pool[coo.row]), coo.data.astype(np.float64))
        labels = np.bincount(pool, weights=self.label_counts.astype(np.float64), minlength=K + 1)
        return SignatureCounts(joint, labels, float(self.num_positions), 1)


def check_token_ids(pc: CorpusPairCounts, tokens) -> np.ndarray:
    """``tokens`` as a non-empty 1-D int64 array of ids in ``[0, V)``, else ``ConfigError("tokens", ...)``."""
    arr = np.asarray(tokens)
    require(arr.ndim == 1 and arr.size > 0, "tokens", f"must be a non-empty 1-D list of ids, got shape {arr.shape}")
    require(np.issubdtype(arr.dtype, np.integer), "tokens", f"must hold integer ids, got dtype {arr.dtype}")
    bad = arr[(arr < 0) | (arr >= pc.vocab_size)]
    require(bad.size == 0, "tokens", f"ids must be in [0, {pc.vocab_size - 1}], got {bad[:10].tolist()}")
    return arr.astype(np.int64)


# ----------------------------------------------------------------------------- streaming count

def _shards(arrays: Iterable[np.ndarray] | np.ndarray) -> Iterator[np.ndarray]:
    if isinstance(arrays, np.ndarray):
        yield arrays
        return
    yield from arrays


def _check_shard(shard, vocab_size: int, index: int) -> np.ndarray:
    arr = np.asarray(shard)
    require(arr.ndim == 1, "tokens", f"shard {index} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.uint32)
    require(np.issubdtype(arr.dtype, np.integer), "tokens",
            f"shard {index} must hold integer token ids, got dtype {arr.dtype}")
    top = int(arr.max())
    require(top < vocab_size, "tokens",
            f"ids must be in [0, {vocab_size - 1}] (vocab_size = {vocab_size}); shard {index} has max id {top}")
    if np.issubdtype(arr.dtype, np.signedinteger):
        low = int(arr.min())
        require(low >= 0, "tokens", f"ids must be >= 0; shard {index} has min id {low}")
    return arr


def _chunks(arrays, vocab_size: int, chunk_tokens: int) -> Iterator[np.ndarray]:
    """Validated slices of at most ``chunk_tokens`` tokens of the concatenated stream."""
    for k, shard in enumerate(_shards(arrays)):
        arr = _check_shard(shard, vocab_size, k)
        for start in range(0, arr.size, chunk_tokens):
            yield arr[start:start + chunk_tokens]


def _total_tokens(arrays) -> int | None:
    if isinstance(arrays, np.ndarray):
        return int(arrays.size)
    if isinstance(arrays, (list, tuple)):
        return int(sum(np.asarray(a).size for a in arrays))
    return None


def _chunk_pair_counts(ext: np.ndarray, n_carry: int, window: int, V: int, ids: np.ndarray) -> sp.csr_matrix:
    """Counts of the labels ``ext[n_carry:]`` with their windows inside ``ext``, as canonical csr.

    ``ids`` (sorted) are the distinct ids of ``ext``.

    Pair codes ``s * D + y`` for every offset k = 1..w are sorted (numpy's vectorised sort) and
    run-length counted; sorted unique codes are already in csr order. Ids are first compacted
    to the D distinct ids of the chunk (order-preserving), so the codes fit uint32 (twice as
    fast to sort) whenever D^2 <= 2^32; otherwise uint64 codes over the full vocabulary.
    """
    n = ext.size
    if ids.size * ids.size <= (1 << 32):
        remap = np.zeros(V, dtype=np.uint32)
        remap[ids] = np.arange(ids.size, dtype=np.uint32)
        keys, base = remap[ext], np.uint32(ids.size)
    else:
        keys, base, ids = ext.astype(np.uint64), np.uint64(V), None
    parts = []
    for k in range(1, window + 1):
        lo = max(n_carry, k)
        if lo < n:
            parts.append(keys[lo - k:n - k] * base + keys[lo:])
    if not parts:
        return sp.csr_matrix((V, V), dtype=np.int64)
    codes = parts[0] if len(parts) == 1 else np.concatenate(parts)
    codes.sort()
    starts = np.flatnonzero(np.concatenate(([True], codes[1:] != codes[:-1])))
    data = np.diff(np.append(starts, codes.size)).astype(np.int64)
    uniq = codes[starts]
    rows = uniq // base
    cols = uniq - rows * base
    if ids is not None:
        rows, cols = ids[rows], ids[cols]
    indptr = np.zeros(V + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows.astype(np.int64), minlength=V), out=indptr[1:])
    out = sp.csr_matrix((data, cols.astype(np.int32), indptr), shape=(V, V))
    out.has_canonical_format = True
    return out


class _PartialSums:
    """Sum of sparse partial counts with balanced merges (amortised O(total nnz log chunks))."""

    def __init__(self, V: int):
        self._V = V
        self._stack: list[sp.csr_matrix] = []

    def add(self, part: sp.csr_matrix) -> None:
        self._stack.append(part)
        while len(self._stack) > 1 and self._stack[-2].nnz <= 2 * self._stack[-1].nnz:
            top = self._stack.pop()
            self._stack[-1] = (self._stack[-1] + top).tocsr()

    def total(self) -> sp.csr_matrix:
        if not self._stack:
            return sp.csr_matrix((self._V, self._V), dtype=np.int64)
        out = self._stack[-1]
        for part in reversed(self._stack[:-1]):
            out = (out + part).tocsr()
        return out


def _finish(counts: sp.csr_matrix, label_counts: np.ndarray, first: int | None, n_tokens: int,
            window: int, V: int) -> CorpusPairCounts:
    require(n_tokens >= 2 and first is not None, "tokens",
            f"the stream needs at least 2 tokens (one labelled position), got {n_tokens}")
    return CorpusPairCounts(counts, window, V, n_tokens - 1, label_counts, int(first))


def count_context_pairs(arrays: Iterable[np.ndarray] | np.ndarray, vocab_size: int, window: int = 1, *,
                        chunk_tokens: int = 1 << 22, quiet: bool = True) -> CorpusPairCounts:
    """Windowed (context token, next token) counts of a token stream, streamed in chunks.

    Args:
      arrays: the stream, one 1-D integer array or an iterable of them (shards: consecutive
        parts of one stream; the last w tokens are carried across chunk and shard boundaries,
        so the result equals that of the concatenated array exactly).
      vocab_size: V; every id must be in [0, V).
      window: w >= 1 context tokens per label (w = 1: bigram, the paper's phi_next).
      chunk_tokens: tokens per chunk; peak memory ~ 8 * w * chunk_tokens bytes of pair codes
        plus the sparse partial sums.
      quiet: hide the progress bar (tokens/s).

    Returns:
      :class:`CorpusPairCounts` with N as csr int64 (V, V).
    """
    V = require_int(vocab_size, "vocab_size", minimum=1, maximum=(1 << 31) - 1)
    w = require_int(window, "window", minimum=1)
    chunk = require_int(chunk_tokens, "chunk_tokens", minimum=1)
    sums = _PartialSums(V)
    label_counts = np.zeros(V, dtype=np.int64)
    carry = np.zeros(0, dtype=np.uint32)
    first: int | None = None
    n_tokens = 0
    with progress_bar(_total_tokens(arrays), "counting pairs", quiet=quiet, unit="tok") as bar:
        for piece in _chunks(arrays, V, chunk):
            if piece.size == 0:
                continue
            if first is None:
                first = int(piece[0])
            piece = piece.astype(np.uint32, copy=False)            # ids < V < 2^31 were checked
            piece_counts = np.bincount(piece, minlength=V)
            label_counts += piece_counts
            present = piece_counts > 0
            present[carry] = True
            ext = np.concatenate((carry, piece))
            sums.add(_chunk_pair_counts(ext, carry.size, w, V, np.flatnonzero(present)))
            carry = ext[-w:].copy()
            n_tokens += piece.size
            bar.update(piece.size)
    if first is not None:
        label_counts[first] -= 1                               # t_0 is never a label
    return _finish(sums.total(), label_counts, first, n_tokens, w, V)


def count_context_pairs_counter(arrays: Iterable[np.ndarray] | np.ndarray, vocab_size: int, window: int = 1, *,
                                quiet: bool = True) -> CorpusPairCounts:
    """Reference implementation: a pure-Python loop over the stream with a ``collections.Counter``.

    Same arguments and result as :func:`count_context_pairs` (without chunking): each token y
    after the first adds ``(s, y)`` for the up to w previous tokens s. Slow (~1-2M pairs/s); the
    benchmark baseline and a test oracle.
    """
    V = require_int(vocab_size, "vocab_size", minimum=1, maximum=(1 << 31) - 1)
    w = require_int(window, "window", minimum=1)
    pairs: Counter = Counter()
    labels: Counter = Counter()
    history: list[int] = []
    first: int | None = None
    n_tokens = 0
    with progress_bar(_total_tokens(arrays), "counting pairs (Counter)", quiet=quiet, unit="tok") as bar:
        for k, shard in enumerate(_shards(arrays)):
            for y in _check_shard(shard, V, k).tolist():
                if first is None:
                    first = y
                else:
                    labels[y] += 1
                for s in history:
                    pairs[(s, y)] += 1
                history.append(y)
                if len(history) > w:
                    history.pop(0)
                n_tokens += 1
            bar.update(np.asarray(shard).size)
    rows = np.fromiter((s for s, _ in pairs), dtype=np.int64, count=len(pairs))
    cols = np.fromiter((y for _, y in pairs), dtype=np.int64, count=len(pairs))
    vals = np.fromiter(pairs.values(), dtype=np.int64, count=len(pairs))
    counts = sp.coo_matrix((vals, (rows, cols)), shape=(V, V)).tocsr()
    label_counts = np.zeros(V, dtype=np.int64)
    for y, c in labels.items():
        label_counts[y] = c
    return _finish(counts, label_counts, first, n_tokens, w, V)


__all__ = ["CorpusPairCounts", "MAX_DENSE_ENTRIES", "check_token_ids", "count_context_pairs", "count_context_pairs_counter"]
