"""Input featurisation c(x) of the linear model (PAPER section 2)."""

from __future__ import annotations

import numpy as np


def num_features(vocab_size: int, seq_len: int, positional: bool) -> int:
    """F: V for token counts, L * V for one feature per (position, token)."""
    return vocab_size * seq_len if positional else vocab_size


def count_features(inputs: np.ndarray, vocab_size: int, positional: bool = False) -> np.ndarray:
    """Feature vectors c(x).

    Args:
      inputs: int array (N, L) of token ids.
      vocab_size: V.
      positional: if True, feature ``l * V + t`` is 1 when position ``l`` holds token ``t``;
        otherwise feature ``t`` counts the occurrences of token ``t`` in x.

    Returns:
      float64 array (N, F) with F = V or L * V.
    """
    inputs = np.asarray(inputs)
    n, seq_len = inputs.shape
    feats = np.zeros((n, num_features(vocab_size, seq_len, positional)))
    rows = np.repeat(np.arange(n), seq_len)
    cols = inputs.reshape(-1) + (np.tile(np.arange(seq_len), n) * vocab_size if positional else 0)
    np.add.at(feats, (rows, cols), 1.0)
    return feats
