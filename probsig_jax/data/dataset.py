"""The generic data container: a (weighted) set of input sequences and label tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probsig_jax.validation import ConfigError, require


@dataclass(frozen=True)
class Dataset:
    """A distribution over pairs ``(x, y)``: token sequences and one label token each.

    Attributes:
      inputs: int array (N, L), token ids in ``[0, vocab_size)``.
      labels: int array (N,), label token ids in ``[0, vocab_size)``.
      weights: optional float array (N,) of non-negative sample weights. ``None``
        means every row has weight 1. Expectations over the data are weighted
        means, so an exact distribution can be given as unique rows plus their
        probabilities.
      vocab_size: V, the size of the (shared) input and label vocabulary.
      metadata: free-form description (e.g. which tokens are keys); not used in
        any computation.
    """

    inputs: np.ndarray
    labels: np.ndarray
    vocab_size: int
    weights: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        inputs = np.asarray(self.inputs)
        labels = np.asarray(self.labels)
        require(isinstance(self.vocab_size, (int, np.integer)) and self.vocab_size > 0,
                "vocab_size", f"must be a positive integer, got {self.vocab_size!r}")
        require(inputs.ndim == 2, "inputs", f"must be a 2-D int array (N, L), got shape {inputs.shape}")
        require(inputs.shape[0] > 0, "inputs", "data set is empty (N = 0); need at least one sample")
        require(inputs.shape[1] > 0, "inputs", "sequences are empty (L = 0); need L >= 1")
        require(np.issubdtype(inputs.dtype, np.integer), "inputs", f"must hold integers, got dtype {inputs.dtype}")
        require(labels.shape == (inputs.shape[0],), "labels",
                f"must have shape ({inputs.shape[0]},) to match inputs, got {labels.shape}")
        require(np.issubdtype(labels.dtype, np.integer), "labels", f"must hold integers, got dtype {labels.dtype}")
        for name, arr in (("inputs", inputs), ("labels", labels)):
            lo, hi = int(arr.min()), int(arr.max())
            require(lo >= 0 and hi < self.vocab_size, name,
                    f"token ids must be in [0, {self.vocab_size - 1}] (vocab_size={self.vocab_size}), got range [{lo}, {hi}]")
        object.__setattr__(self, "inputs", inputs.astype(np.int32, copy=False))
        object.__setattr__(self, "labels", labels.astype(np.int32, copy=False))
        if self.weights is not None:
            weights = np.asarray(self.weights, dtype=np.float64)
            require(weights.shape == labels.shape, "weights",
                    f"must have shape ({labels.shape[0]},) to match labels, got {weights.shape}")
            require(bool(np.all(np.isfinite(weights))) and bool(np.all(weights >= 0)), "weights",
                    "must be finite and >= 0")
            require(float(weights.sum()) > 0, "weights", "must not all be zero (empty distribution)")
            object.__setattr__(self, "weights", weights)

    @property
    def num_samples(self) -> int:
        """N, the number of rows."""
        return int(self.inputs.shape[0])

    @property
    def seq_len(self) -> int:
        """L, the input length."""
        return int(self.inputs.shape[1])

    def sample_weights(self) -> np.ndarray:
        """Weights (N,) as float64, normalised to sum to 1."""
        w = np.ones(self.num_samples) if self.weights is None else self.weights
        return w / w.sum()

    def concatenate(self, other: "Dataset") -> "Dataset":
        """Rows of ``self`` then ``other``; unweighted rows count with weight 1."""
        if other.vocab_size != self.vocab_size or other.seq_len != self.seq_len:
            raise ConfigError("other", "datasets must share vocab_size and seq_len to be concatenated")
        w = None
        if self.weights is not None or other.weights is not None:
            w = np.concatenate([
                np.ones(self.num_samples) if self.weights is None else self.weights,
                np.ones(other.num_samples) if other.weights is None else other.weights,
            ])
        return Dataset(np.concatenate([self.inputs, other.inputs]), np.concatenate([self.labels, other.labels]),
                       self.vocab_size, w, dict(self.metadata))
