"""The linear embedding model of PAPER section 4, as a Flax NNX module.

``h = E c(x)`` (sum of token embeddings, or one embedding per (position, token)
with ``positional=True``), logits ``z = U h``; no bias, no nonlinearity.
Parameter layout follows the theory: ``embedding`` E is (d, F), ``unembedding`` U is (V, d).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from probsig_jax.validation import require, require_float, require_float_dtype, require_int


def feature_index(inputs_NxL: jax.Array, vocab_size: int, positional: bool) -> jax.Array:
    """Feature ids (N, L) of the tokens: ``token`` or ``position * V + token``."""
    if not positional:
        return inputs_NxL
    return inputs_NxL + vocab_size * jnp.arange(inputs_NxL.shape[1], dtype=inputs_NxL.dtype)[None, :]


def token_rows(E_DxF, vocab_size: int, positional: bool):
    """The embedding as token rows (V, d), or (V, L * d) with positional features (a token's per-position
    columns side by side): the layout every alignment comparison uses (:mod:`probsig_jax.analysis.alignment`).
    Works on numpy and JAX arrays."""
    if not positional:
        return E_DxF.T
    L = E_DxF.shape[1] // vocab_size
    return _concat([E_DxF[:, l * vocab_size:(l + 1) * vocab_size].T for l in range(L)])


def token_gram(gram_FxF, vocab_size: int, positional: bool):
    """The (V, V) Gram matrix of :func:`token_rows` from the (F, F) Gram matrix of the feature columns
    (positional: the sum of the per-position diagonal blocks)."""
    if not positional:
        return gram_FxF
    L = gram_FxF.shape[0] // vocab_size
    return sum(gram_FxF[l * vocab_size:(l + 1) * vocab_size, l * vocab_size:(l + 1) * vocab_size] for l in range(L))


def _concat(blocks):
    import numpy as np

    return np.concatenate(blocks, axis=1) if isinstance(blocks[0], np.ndarray) else jnp.concatenate(blocks, axis=1)


class LinearEmbeddingModel(nnx.Module):
    """Linear model ``logits = U E c(x)``.

    Args:
      vocab_size: V (tokens and labels share one vocabulary).
      dim: d, the embedding width.
      seq_len: L; only needed for ``positional=True`` (F = L * V features).
      positional: one feature per (position, token) instead of token counts.
      init_scale: standard deviation eps of the i.i.d. normal initialisation of E and U.
      dtype: parameter dtype (float32 or float64; float64 needs ``jax_enable_x64``).
      rngs: NNX random streams (uses ``params``).
    """

    def __init__(self, vocab_size: int, dim: int, *, seq_len: int = 1, positional: bool = False,
                 init_scale: float = 1e-3, dtype=jnp.float32, rngs: nnx.Rngs):
        require_int(vocab_size, "vocab_size", minimum=2)
        require_int(dim, "dim", minimum=1)
        require_int(seq_len, "seq_len", minimum=1)
        require_float(init_scale, "init_scale", minimum=0.0, strict_minimum=True)
        dtype = require_float_dtype(dtype)
        self.vocab_size = vocab_size
        self.positional = positional
        num_features = vocab_size * seq_len if positional else vocab_size
        self.embedding = nnx.Param(init_scale * jax.random.normal(rngs.params(), (dim, num_features), dtype))
        self.unembedding = nnx.Param(init_scale * jax.random.normal(rngs.params(), (vocab_size, dim), dtype))

    def __call__(self, inputs_NxL: jax.Array) -> jax.Array:
        """Logits (N, V) for int token ids (N, L)."""
        idx_NxL = feature_index(inputs_NxL, self.vocab_size, self.positional)
        h_NxD = jnp.take(self.embedding[...].T, idx_NxL, axis=0).sum(axis=1)
        return h_NxD @ self.unembedding[...].T

    def weights(self) -> dict[str, jax.Array]:
        """The matrices the theory tracks: ``E`` (d, F) and ``U`` (V, d)."""
        return {"E": self.embedding[...], "U": self.unembedding[...]}

    def input_embeddings(self) -> jax.Array:
        """(V, d) token rows of E ((V, L d) with positional features; :func:`token_rows`)."""
        return token_rows(self.embedding[...], self.vocab_size, self.positional)

    def output_embeddings(self) -> jax.Array:
        """(V, d) unembedding rows."""
        return self.unembedding[...]

    @classmethod
    def from_weights(cls, E_DxF: jax.Array, U_VxD: jax.Array, *, positional: bool = False) -> "LinearEmbeddingModel":
        """A model holding exactly the given matrices (e.g. a shared E0, U0 for theory and training)."""
        E_DxF, U_VxD = jnp.asarray(E_DxF), jnp.asarray(U_VxD)
        require(E_DxF.ndim == 2, "E", f"must be a (d, F) matrix, got shape {E_DxF.shape}")
        require(U_VxD.ndim == 2 and U_VxD.shape[1] == E_DxF.shape[0], "U",
                f"must be a (V, d) matrix with d = {E_DxF.shape[0]} to match E, got shape {U_VxD.shape}")
        vocab_size, dim = U_VxD.shape
        if positional:
            require(vocab_size > 0 and E_DxF.shape[1] % vocab_size == 0 and E_DxF.shape[1] > 0, "E",
                    f"positional features need F = seq_len * V with V = {vocab_size}, got F = {E_DxF.shape[1]}")
        else:
            require(E_DxF.shape[1] == vocab_size, "E",
                    f"must have F = V = {vocab_size} columns (token counts), got F = {E_DxF.shape[1]}")
        seq_len = E_DxF.shape[1] // vocab_size if positional else 1
        model = cls(vocab_size, dim, seq_len=seq_len, positional=positional, dtype=E_DxF.dtype, rngs=nnx.Rngs(0))
        model.embedding[...] = jnp.asarray(E_DxF)
        model.unembedding[...] = jnp.asarray(U_VxD)
        return model
