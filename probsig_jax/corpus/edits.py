"""Named, seeded edits of a token stream, applied before counting and training (E4's "edit the data, predict the
geometry").

* ``transplant`` (``tokens = (A, B)``): a fraction ``f`` of the occurrences of ``A`` get their successor redrawn
  from ``B``'s next-token distribution (the empirical ``phi_next[B]`` of the unedited stream), so ``A``'s
  ``phi_next`` moves to ``(1 - f) phi_next[A] + f phi_next[B]`` in expectation.
* ``cluster`` (``tokens = (t_1, ..., t_k)``): a fraction ``f`` of the occurrences of each ``t_i`` get their
  successor drawn from one shared distribution, uniform over ``targets`` tokens chosen by the seed among the
  tokens of mid frequency (quartiles 2-3 of the occurring tokens) outside the cluster: a planted cluster.
* ``swap`` (``tokens = (A, B)``): in the last fraction ``f`` of the stream ``A`` and ``B`` exchange identities.

Only the successor of an edited position changes (transplant, cluster), so the counts that change are those of
the edited contexts' rows and, necessarily, of the replaced and the new successor tokens as contexts of the next
position; every other context's next-token counts are unchanged (tested). Positions whose successor is the last
token of the stream or whose successor is itself an edited context are skipped, so one edit never rewrites
another's context. The same stream, edit and seed give the same edited stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from probsig_jax.config_base import Config
from probsig_jax.validation import require, require_float, require_int, require_seed

KINDS = ("none", "transplant", "cluster", "swap")


@dataclass(frozen=True)
class CorpusEdit(Config):
    """One edit of a token stream (module docstring)."""

    kind: Literal["none", "transplant", "cluster", "swap"] = "none"
    """The edit; ``none`` leaves the stream as it is (the default of an experiment's ``edit`` field)."""
    tokens: tuple[int, ...] = ()
    """Token ids (of the stream): (A, B) for transplant and swap, the cluster's tokens for cluster."""
    fraction: float = 1.0
    """f in [0, 1]: the share of occurrences edited (transplant, cluster) or of the stream swapped (swap)."""
    targets: int = 8
    """cluster: the number of tokens the shared successor distribution is uniform over."""
    target_ranks: tuple[int, ...] = ()
    """cluster: the frequency ranks [lo, hi) the targets are drawn from (rank 0 = the most frequent token, the
    cluster's tokens not ranked); empty: the tokens of mid frequency (quartiles 2-3 of the occurring tokens)."""
    seed: int = 0
    """Seed of the edited positions and of the draws."""

    def _check(self) -> None:
        require(self.kind in KINDS, "kind", f"must be one of {', '.join(KINDS)}, got {self.kind!r}")
        require(isinstance(self.tokens, tuple) and all(isinstance(t, (int, np.integer)) and t >= 0
                                                       for t in self.tokens), "tokens",
                f"must be a tuple of non-negative token ids, got {self.tokens!r}")
        require(len(set(self.tokens)) == len(self.tokens), "tokens", f"must be distinct, got {self.tokens!r}")
        if self.kind == "none":
            require(len(self.tokens) == 0, "tokens", f"kind 'none' takes no tokens, got {self.tokens!r}")
        elif self.kind in ("transplant", "swap"):
            require(len(self.tokens) == 2, "tokens", f"{self.kind} takes two tokens (A, B), got {len(self.tokens)}")
        else:
            require(len(self.tokens) >= 2, "tokens", f"cluster takes at least two tokens, got {len(self.tokens)}")
        require_float(self.fraction, "fraction", minimum=0.0, maximum=1.0)
        require_int(self.targets, "targets", minimum=1, maximum=1_000_000)
        require(len(self.target_ranks) in (0, 2) and (not self.target_ranks or
                                                     0 <= self.target_ranks[0] < self.target_ranks[1]),
                "target_ranks", f"must be empty or two ranks lo,hi with 0 <= lo < hi, got {self.target_ranks}")
        require_seed(self.seed)

    def describe(self) -> str:
        """One line, e.g. ``transplant 40 <- 17 (f = 0.3, seed 0)``."""
        t = self.tokens
        if self.kind == "none":
            return "no edit"
        if self.kind == "transplant":
            return f"transplant: successors of {t[0]} redrawn from those of {t[1]} (f = {self.fraction:g}, seed {self.seed})"
        if self.kind == "swap":
            return f"swap: {t[0]} <-> {t[1]} in the last {self.fraction:g} of the stream (seed {self.seed})"
        return (f"cluster: {len(t)} tokens get a shared successor distribution over {self.targets} tokens "
                f"(f = {self.fraction:g}, seed {self.seed})")


@dataclass(frozen=True)
class EditedStream:
    """The result of :func:`apply_corpus_edit`.

    Attributes:
      tokens: the edited stream (same dtype and length as the input).
      edit: the (validated) edit.
      affected: int64 ids whose own next-token distribution the edit targets (A, or the cluster's tokens, or
        A and B for swap).
      positions: int64 indices of the stream that were rewritten.
      details: JSON-able facts of the edit (e.g. the cluster's target tokens, counts of edited positions).
    """

    tokens: np.ndarray
    edit: CorpusEdit
    affected: np.ndarray
    positions: np.ndarray
    details: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """What a run writes about its edit: the config, its description, the affected tokens and the details."""
        return {"edit": {"kind": self.edit.kind, "tokens": list(map(int, self.edit.tokens)),
                         "fraction": self.edit.fraction, "targets": self.edit.targets,
                         "target_ranks": list(self.edit.target_ranks), "seed": self.edit.seed},
                "description": self.edit.describe(), "affected_tokens": self.affected.tolist(),
                "edited_positions": int(self.positions.size), **self.details}


def _occurrences(stream: np.ndarray, token: int, protected: np.ndarray) -> np.ndarray:
    """Positions ``i`` of ``token`` whose successor exists, is not the stream's last token and is not a protected
    (edited) context, so rewriting ``stream[i + 1]`` touches no other edited context."""
    i = np.flatnonzero(stream[:-2] == token)
    return i[~protected[i + 1]]


def _ranked_tokens(stream: np.ndarray, exclude: Any = ()) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, counts)`` of the tokens of ``stream`` not in ``exclude``, most frequent first (ties: smaller id)."""
    ids, counts = np.unique(stream, return_counts=True)
    keep = ~np.isin(ids, np.asarray(list(exclude), dtype=ids.dtype))
    ids, counts = ids[keep], counts[keep]
    order = np.lexsort((ids, -counts))
    return ids[order], counts[order]


def _target_candidates(stream: np.ndarray, exclude: np.ndarray, ranks: tuple[int, ...]) -> np.ndarray:
    """The cluster's candidate successors, in id order: the frequency ranks ``ranks``, or the middle quartiles."""
    ids, counts = _ranked_tokens(stream, exclude)
    if ranks:
        return np.sort(ids[ranks[0]:ranks[1]])
    lo, hi = np.quantile(counts, [0.25, 0.75])
    return np.sort(ids[(counts >= lo) & (counts <= hi)])


def apply_corpus_edit(stream: Any, edit: CorpusEdit) -> EditedStream:
    """Apply ``edit`` to a 1-D token stream (module docstring); the input is not modified."""
    edit = edit.validate()
    tokens = np.asarray(stream)
    if edit.kind == "none":
        return EditedStream(tokens.copy(), edit, np.zeros(0, np.int64), np.zeros(0, np.int64), {})
    require(tokens.ndim == 1 and tokens.size >= 3 and np.issubdtype(tokens.dtype, np.integer), "stream",
            f"must be a 1-D integer token stream of length >= 3, got shape {tokens.shape} dtype {tokens.dtype}")
    present = set(np.unique(tokens).tolist())
    missing = [t for t in edit.tokens if t not in present]
    require(not missing, "tokens", f"do not occur in the stream: {missing}")
    rng = np.random.default_rng(edit.seed)
    out = tokens.copy()
    details: dict[str, Any] = {}
    if edit.kind == "swap":
        a, b = edit.tokens
        start = int(round((1.0 - edit.fraction) * tokens.size))
        part = out[start:]
        pos = np.flatnonzero((part == a) | (part == b)) + start
        out[pos] = np.where(tokens[pos] == a, b, a)
        details["swap_start"] = start
        return EditedStream(out, edit, np.asarray(edit.tokens, np.int64), pos.astype(np.int64), details)

    contexts = np.asarray(edit.tokens[:1] if edit.kind == "transplant" else edit.tokens, np.int64)
    protected = np.isin(tokens, contexts)
    if edit.kind == "transplant":
        source = edit.tokens[1]
        pool = tokens[np.flatnonzero(tokens[:-1] == source) + 1]       # phi_next[B] as a multiset
        require(pool.size > 0, "tokens", f"token {source} has no successor in the stream")
        samplers = {contexts[0]: pool}
    else:
        candidates = _target_candidates(tokens, contexts, edit.target_ranks)
        require(candidates.size >= edit.targets, "targets",
                f"only {candidates.size} candidate tokens outside the cluster (target_ranks "
                f"{edit.target_ranks or 'mid frequency'}), fewer than targets={edit.targets}")
        targets = np.sort(rng.choice(candidates, size=edit.targets, replace=False))
        details["cluster_targets"] = targets.tolist()
        samplers = {c: targets for c in contexts}
    positions, per_token = [], {}
    for c in contexts:
        occ = _occurrences(tokens, int(c), protected)
        m = int(round(edit.fraction * occ.size))
        chosen = np.sort(rng.choice(occ, size=m, replace=False)) if m else np.zeros(0, np.int64)
        out[chosen + 1] = rng.choice(samplers[c], size=m, replace=True).astype(tokens.dtype)
        positions.append(chosen + 1)
        per_token[int(c)] = {"occurrences": int(occ.size), "edited": m}
    details["per_token"] = per_token
    return EditedStream(out, edit, contexts, np.sort(np.concatenate(positions)).astype(np.int64), details)


def choose_cluster_tokens(stream: Any, size: int, ranks: tuple[int, int], seed: int, *,
                          exclude: Any = ()) -> tuple[int, ...]:
    """``size`` distinct token ids for a planted cluster, drawn by ``seed`` among the tokens of frequency rank
    ``ranks[0] <= r < ranks[1]`` of ``stream`` (rank 0 = the most frequent; ``exclude`` is not ranked, e.g. the
    end-of-text token), sorted. Mid-frequency ranks give tokens common enough to be trained and unrelated to one
    another by construction of the draw."""
    size = require_int(size, "cluster_size", minimum=2, maximum=100_000)
    lo, hi = (require_int(r, "cluster_ranks", minimum=0) for r in ranks)
    require(hi - lo >= size, "cluster_ranks", f"must span at least cluster_size={size} ranks, got {ranks}")
    order, _ = _ranked_tokens(np.asarray(stream), list(exclude))
    require(order.size >= hi, "cluster_ranks", f"the stream has only {order.size} distinct tokens, fewer than "
            f"the upper rank {hi}")
    chosen = np.random.default_rng(require_seed(seed)).choice(order[lo:hi], size=size, replace=False)
    return tuple(int(t) for t in np.sort(chosen))
