"""The feed-forward ("Emb-MLP") model of PAPER section 6, as a Flax NNX module.

``h_0 = sum_l E[:, x_l]`` (or the per-position embeddings concatenated), then
``h_k = sigma(W_k h_{k-1} + b_k)`` for each hidden layer, logits ``z = U h_K``.
Parameter layout matches :class:`~probsig_jax.models.linear.LinearEmbeddingModel`:
``embedding`` E is (d, V) (one column per token), ``unembedding`` U is (V, width).

Initialisation (``init_convention``):

- ``"absolute"``: every weight matrix i.i.d. ``N(0, init_scale^2)``, the convention of the linear model
  (:class:`~probsig_jax.models.linear.LinearEmbeddingModel`) and of the small-initialisation theory
  (:mod:`probsig_jax.theory.ffn`: "all weights at scale eps"); PAPER's ``N(0, d_in^(-2 gamma))`` is
  ``init_scale = d_in^(-gamma)``.
- ``"lecun"``: ``N(0, (init_scale / sqrt(fan_in))^2)`` with the embedding's fan-in taken as 1 (a one-hot
  lookup), so ``init_scale = 1`` is the standard LeCun scale.

``init_scale << 1`` is the small-initialisation regime where the theory applies. Biases (``bias=True``) start
at 0; the theory's model has none (``bias=False``).
"""

from __future__ import annotations

from typing import Literal, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from probsig_jax.validation import require, require_float, require_float_dtype, require_int

ACTIVATIONS = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "tanh": jnp.tanh}
INIT_CONVENTIONS = ("lecun", "absolute")
Combine = Literal["sum", "concat"]


class FeedForwardModel(nnx.Module):
    """Token embeddings -> hidden layers -> unembedding.

    Args:
      vocab_size: V (tokens and labels share one vocabulary).
      dim: d, the embedding width.
      seq_len: L, the input length (needed for ``combine="concat"``).
      hidden: widths of the hidden layers (at least one), e.g. ``(256,)`` or ``(256, 256)``.
      activation: "relu", "gelu" or "tanh" (tanh and GELU have sigma(0) = 0, sigma'(0) = 1
        as the small-initialisation theory assumes; ReLU is an option).
      combine: "sum" of the token embeddings, or "concat" of the per-position embeddings (L * d).
      init_scale: the weights' standard deviation ("absolute") or its multiplier of 1/sqrt(fan_in) ("lecun").
      init_convention: "lecun" or "absolute" (see the module docstring).
      bias: whether the hidden layers have biases.
      dtype: parameter dtype (float32 or float64).
      rngs: NNX random streams (uses ``params``).
    """

    def __init__(self, vocab_size: int, dim: int, *, seq_len: int, hidden: Sequence[int] = (256,),
                 activation: str = "gelu", combine: Combine = "sum", init_scale: float = 1e-3,
                 init_convention: str = "lecun", bias: bool = True, dtype=jnp.float32, rngs: nnx.Rngs):
        require_int(vocab_size, "vocab_size", minimum=2)
        require_int(dim, "dim", minimum=1)
        require_int(seq_len, "seq_len", minimum=1)
        require(isinstance(hidden, (list, tuple)), "hidden",
                f"must be a sequence of layer widths such as (256,) or (256, 256), got {hidden!r}")
        hidden = tuple(hidden)
        require(len(hidden) >= 1, "hidden", "needs at least one hidden layer width")
        for width in hidden:
            require_int(width, "hidden", minimum=1)
        require(activation in ACTIVATIONS, "activation", f"must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        require(combine in ("sum", "concat"), "combine", f"must be 'sum' or 'concat', got {combine!r}")
        require_float(init_scale, "init_scale", minimum=0.0, strict_minimum=True)
        require(init_convention in INIT_CONVENTIONS, "init_convention",
                f"must be one of {', '.join(INIT_CONVENTIONS)}, got {init_convention!r}")
        require(isinstance(bias, bool), "bias", f"must be True or False, got {bias!r}")
        dtype = require_float_dtype(dtype)
        self.vocab_size, self.seq_len, self.combine, self.activation = vocab_size, seq_len, combine, activation
        self.bias = bias

        def normal(shape, fan_in):
            std = init_scale / jnp.sqrt(float(fan_in)) if init_convention == "lecun" else init_scale
            return std * jax.random.normal(rngs.params(), shape, dtype)

        self.embedding = nnx.Param(normal((dim, vocab_size), 1))
        widths = ((dim * seq_len if combine == "concat" else dim),) + hidden
        self.hidden_weights = nnx.List([nnx.Param(normal((n_in, n_out), n_in))
                                        for n_in, n_out in zip(widths[:-1], widths[1:])])
        self.hidden_biases = nnx.List([nnx.Param(jnp.zeros((n_out,), dtype)) for n_out in widths[1:]] if bias else [])
        self.unembedding = nnx.Param(normal((vocab_size, widths[-1]), widths[-1]))

    def embed(self, inputs_NxL: jax.Array) -> jax.Array:
        """(N, d) summed or (N, L d) concatenated token embeddings."""
        h_NxLxD = jnp.take(self.embedding[...].T, inputs_NxL, axis=0)
        if self.combine == "sum":
            return h_NxLxD.sum(axis=1)
        return h_NxLxD.reshape(h_NxLxD.shape[0], -1)

    def hidden_features(self, inputs_NxL: jax.Array) -> jax.Array:
        """(N, width) activations of the last hidden layer."""
        act = ACTIVATIONS[self.activation]
        h = self.embed(inputs_NxL)
        for i, W in enumerate(self.hidden_weights):
            h = h @ W[...]
            h = act(h + self.hidden_biases[i][...] if self.bias else h)
        return h

    def __call__(self, inputs_NxL: jax.Array) -> jax.Array:
        """Logits (N, V) for int inputs (N, L)."""
        return self.hidden_features(inputs_NxL) @ self.unembedding[...].T

    def weights(self) -> dict[str, jax.Array]:
        """The matrices the signature analysis compares: E (d, V) and U (V, width)."""
        return {"E": self.embedding[...], "U": self.unembedding[...]}

    def weight_tree(self) -> dict:
        """``{"E": (d, V), "W": ((d, n_1), ..., (n_{k-1}, n_k)), "U": (V, n_k)}``: the parameters of
        :mod:`probsig_jax.theory.ffn` (biases, if any, are not part of it)."""
        return {"E": self.embedding[...], "W": tuple(W[...] for W in self.hidden_weights), "U": self.unembedding[...]}

    def input_embeddings(self) -> jax.Array:
        """(V, d) token rows of the embedding."""
        return self.embedding[...].T

    def output_embeddings(self) -> jax.Array:
        """(V, width) unembedding rows."""
        return self.unembedding[...]
