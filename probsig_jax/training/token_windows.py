"""Next-token training batches from a token stream (packed documents, no padding).

A batch is ``batch_size`` windows of ``seq_len`` consecutive tokens. Training windows start at positions
drawn from ``numpy.random.default_rng((seed, step))``: the batch of a step depends only on the seed and the
step number, so a run resumed from a checkpoint sees exactly the batches the uninterrupted run would have
seen, with no data-loader state to save. Evaluation windows are fixed, evenly spaced and non-overlapping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probsig_jax.validation import require, require_float, require_int, require_seed


@dataclass(frozen=True)
class TokenWindows:
    """Windows of one token stream.

    Attributes:
      tokens: (n,) integer token ids (the model's ids, i.e. compact ids after vocabulary compaction).
      seq_len: window length T (>= 2: the loss predicts tokens 1..T-1 from their prefixes).
    """

    tokens: np.ndarray
    seq_len: int

    def __post_init__(self) -> None:
        tokens = np.asarray(self.tokens)
        require(tokens.ndim == 1, "tokens", f"must be a 1-D token stream, got shape {tokens.shape}")
        require(np.issubdtype(tokens.dtype, np.integer), "tokens", f"must hold integer ids, got {tokens.dtype}")
        require_int(self.seq_len, "seq_len", minimum=2)
        require(tokens.size >= self.seq_len, "seq_len",
                f"must be <= the number of tokens in the stream ({tokens.size}), got {self.seq_len}")
        object.__setattr__(self, "tokens", tokens)

    @property
    def num_windows(self) -> int:
        """Number of distinct window starts, ``n - T + 1``."""
        return int(self.tokens.size - self.seq_len + 1)

    def window_starts(self, step: int, batch_size: int, seed: int) -> np.ndarray:
        """(batch_size,) start positions of the training batch of ``step`` (uniform, with replacement)."""
        require_int(step, "step", minimum=0)
        require_int(batch_size, "batch_size", minimum=1)
        require_seed(seed)
        return np.random.default_rng((seed, step)).integers(0, self.num_windows, size=batch_size)

    def batch(self, starts: np.ndarray) -> np.ndarray:
        """(N, T) int32 windows starting at ``starts``."""
        offsets = np.arange(self.seq_len)
        return self.tokens[np.asarray(starts)[:, None] + offsets[None, :]].astype(np.int32)

    def train_batch(self, step: int, batch_size: int, seed: int) -> np.ndarray:
        """The (N, T) int32 training batch of ``step``: a function of (seed, step) only."""
        return self.batch(self.window_starts(step, batch_size, seed))

    def eval_batches(self, num_batches: int, batch_size: int) -> list[np.ndarray]:
        """``num_batches`` fixed (N, T) batches of non-overlapping windows spread evenly over the stream
        (fewer if the stream is short: at least one window)."""
        require_int(num_batches, "eval_batches", minimum=1)
        require_int(batch_size, "batch_size", minimum=1)
        wanted = num_batches * batch_size
        available = max(1, self.tokens.size // self.seq_len)
        count = min(wanted, available)
        starts = np.linspace(0, self.num_windows - 1, count).astype(np.int64)
        return [self.batch(starts[i:i + batch_size]) for i in range(0, count, batch_size)]


def split_stream(tokens: np.ndarray, eval_fraction: float, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, eval)``: the last ``eval_fraction`` of the stream (at least one window) is held out.

    ``eval_fraction`` in [0, 0.5]; 0 gives an empty evaluation stream.
    """
    tokens = np.asarray(tokens)
    require_float(eval_fraction, "eval_fraction", minimum=0.0, maximum=0.5)
    require_int(seq_len, "seq_len", minimum=2)
    if eval_fraction == 0:
        return tokens, tokens[:0]
    n_eval = max(seq_len, int(round(tokens.size * eval_fraction)))
    require(tokens.size - n_eval >= seq_len, "eval_fraction",
            f"leaves fewer than seq_len ({seq_len}) training tokens out of {tokens.size}")
    return tokens[:-n_eval], tokens[-n_eval:]
