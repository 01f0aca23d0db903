"""Vocabulary compaction: the token ids a corpus uses, mapped to a dense range ``0 .. V_c - 1``.

A from-scratch experiment on a small corpus touches a few tens of thousands of the tokenizer's 151,665 ids;
training with the full 151,936-row embedding would spend almost all of its time and memory on rows that
never receive a gradient. :class:`VocabularyMap` keeps the used ids (sorted, so the map is the same for the
same corpus) and translates token streams both ways; it is saved next to a run's results so embeddings can
be matched to tokenizer ids again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from probsig_jax.runs import write_json
from probsig_jax.validation import ConfigError, require, require_int


@dataclass(frozen=True)
class VocabularyMap:
    """A bijection between used tokenizer ids and compact ids.

    Attributes:
      original_ids: (V_c,) int64, strictly increasing; compact id ``i`` stands for tokenizer id ``original_ids[i]``.
      original_vocab_size: size of the tokenizer's id space (every original id is below it).
    """

    original_ids: np.ndarray
    original_vocab_size: int

    def __post_init__(self) -> None:
        ids = np.asarray(self.original_ids, dtype=np.int64)
        size = require_int(self.original_vocab_size, "original_vocab_size", minimum=1)
        require(ids.ndim == 1 and ids.size >= 1, "original_ids", f"must be a non-empty 1-D array, got shape {ids.shape}")
        require(bool(np.all(np.diff(ids) > 0)), "original_ids", "must be strictly increasing (sorted, no repeats)")
        require(int(ids[0]) >= 0 and int(ids[-1]) < size, "original_ids",
                f"must lie in [0, {size - 1}], got [{int(ids[0])}, {int(ids[-1])}]")
        ids.setflags(write=False)
        lookup = np.full(size, -1, dtype=np.int64)
        lookup[ids] = np.arange(ids.size)
        lookup.setflags(write=False)
        object.__setattr__(self, "original_ids", ids)
        object.__setattr__(self, "_lookup", lookup)

    @property
    def size(self) -> int:
        """V_c, the number of compact ids."""
        return int(self.original_ids.size)

    @classmethod
    def identity(cls, vocab_size: int) -> "VocabularyMap":
        """No compaction: every id maps to itself."""
        return cls(np.arange(require_int(vocab_size, "vocab_size", minimum=1)), vocab_size)

    @classmethod
    def from_token_counts(cls, counts: Any, *, always_keep: Iterable[int] = ()) -> "VocabularyMap":
        """The ids with a nonzero count in ``counts`` ((V,) per-id counts) plus ``always_keep`` (e.g. EOS)."""
        counts = np.asarray(counts)
        require(counts.ndim == 1 and counts.size >= 1, "counts", f"must be a non-empty (V,) array, got {counts.shape}")
        used = counts > 0
        for token in always_keep:
            require(0 <= int(token) < counts.size, "always_keep", f"ids must lie in [0, {counts.size - 1}], got {token}")
            used[int(token)] = True
        require(bool(used.any()), "counts", "no token occurs: nothing to keep")
        return cls(np.flatnonzero(used), counts.size)

    @classmethod
    def from_tokens(cls, token_arrays: Iterable[np.ndarray], vocab_size: int, *,
                    always_keep: Iterable[int] = ()) -> "VocabularyMap":
        """The ids that occur in a stream of token arrays (each with ids < ``vocab_size``)."""
        counts = np.zeros(require_int(vocab_size, "vocab_size", minimum=1), dtype=np.int64)
        for array in token_arrays:
            array = np.asarray(array)
            if array.size:
                require(int(array.max()) < vocab_size, "tokens",
                        f"ids must be < vocab_size {vocab_size}, got {int(array.max())}")
                counts += np.bincount(array, minlength=vocab_size)
        return cls.from_token_counts(counts, always_keep=always_keep)

    def to_compact(self, original: Any) -> np.ndarray:
        """Tokenizer ids (any shape) -> compact ids (int32, same shape); unknown ids are an error."""
        original = np.asarray(original)
        if original.size == 0:
            return original.astype(np.int32)
        bad = (original < 0) | (original >= self.original_vocab_size)
        require(not bool(bad.any()), "tokens", f"ids must lie in [0, {self.original_vocab_size - 1}]")
        compact = self._lookup[original]  # type: ignore[attr-defined]
        if bool((compact < 0).any()):
            missing = np.unique(original[compact < 0])[:10].tolist()
            raise ConfigError("tokens", f"ids not in the compact vocabulary (first ones: {missing})")
        return compact.astype(np.int32)

    def to_original(self, compact: Any) -> np.ndarray:
        """Compact ids (any shape) -> tokenizer ids (int64)."""
        compact = np.asarray(compact)
        require(compact.size == 0 or (int(compact.min()) >= 0 and int(compact.max()) < self.size), "compact_ids",
                f"must lie in [0, {self.size - 1}]")
        return self.original_ids[compact]

    def contains(self, original: Any) -> np.ndarray:
        """Boolean mask: which tokenizer ids have a compact id."""
        original = np.asarray(original)
        inside = (original >= 0) & (original < self.original_vocab_size)
        out = np.zeros(original.shape, dtype=bool)
        out[inside] = self._lookup[original[inside]] >= 0  # type: ignore[attr-defined]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"original_vocab_size": self.original_vocab_size, "original_ids": self.original_ids.tolist()}

    def save(self, path: str | Path) -> Path:
        """Write the map as JSON (atomically)."""
        return write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "VocabularyMap":
        path = Path(path)
        require(path.is_file(), "vocab_map", f"no vocabulary map at {path}")
        try:
            data = json.loads(path.read_text())
            ids, size = data["original_ids"], data["original_vocab_size"]
            if not (isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)):
                raise ValueError("original_ids must be a list of integer token ids")
            if isinstance(size, bool) or not isinstance(size, int):
                raise ValueError(f"original_vocab_size must be an integer, got {size!r}")
            return cls(np.asarray(ids, dtype=np.int64), size)
        except ConfigError as err:
            raise ConfigError("vocab_map", f"{path}: {err}") from None
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError("vocab_map", f"{path} is not a valid vocabulary map: {err}") from None
