"""The two-input MLP of the modular-arithmetic work (MODADD section 2), as a Flax NNX module.

``logits(a, b) = W sigma(U e_a + V e_b)`` with one-hot inputs ``e_a, e_b``, no biases:

- ``U``, ``V``: (D, P_in), one column per input token (``U[:, a]`` is token a's first-position embedding);
- ``W``: (P_out, D), one row per class;
- D hidden units; unit d is the triple (row ``U[d]``, row ``V[d]``, column ``W[:, d]``).

Initialisation: every entry i.i.d. ``N(0, init_std^2)``; the paper's ``N(0, D^(-2 gamma))`` is
``init_std = D^(-gamma)`` (:func:`init_std_for_gamma`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from probsig_jax.validation import require, require_float, require_float_dtype, require_int

#: The activations of MODADD section 2. GELU is the exact (erf) form, PyTorch's default.
TWO_INPUT_ACTIVATIONS = {
    "gelu": lambda h: jax.nn.gelu(h, approximate=False),
    "identity": lambda h: h,
    "square": jnp.square,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
}


def init_std_for_gamma(width: int, gamma: float) -> float:
    """``D^(-gamma)``: the standard deviation of the paper's ``N(0, D^(-2 gamma))`` initialisation."""
    require_int(width, "width", minimum=1)
    require_float(gamma, "gamma", minimum=0.0, maximum=4.0)
    return float(width) ** (-gamma)


def activate(activation: str, h: jax.Array) -> jax.Array:
    """``sigma(h)`` for an activation name of :data:`TWO_INPUT_ACTIVATIONS`."""
    require(activation in TWO_INPUT_ACTIVATIONS, "activation",
            f"must be one of {', '.join(TWO_INPUT_ACTIVATIONS)}, got {activation!r}")
    return TWO_INPUT_ACTIVATIONS[activation](h)


def two_input_logits(params: dict, a_N: jax.Array, b_N: jax.Array, activation: str) -> jax.Array:
    """Logits (N, P_out) of ``params = {"U": (D, P_in), "V": (D, P_in), "W": (P_out, D)}`` at inputs (N,), (N,).

    The pure function the module and the theory (:mod:`probsig_jax.theory.modular`) share."""
    h_NxD = params["U"].T[a_N] + params["V"].T[b_N]
    return activate(activation, h_NxD) @ params["W"].T


class TwoInputMLP(nnx.Module):
    """``W sigma(U e_a + V e_b)``.

    Args:
      num_inputs: P_in, the input alphabet (columns of U and V).
      num_classes: P_out, the label alphabet (rows of W).
      width: D, the number of hidden units.
      activation: one of :data:`TWO_INPUT_ACTIVATIONS`.
      init_std: standard deviation of every weight (> 0).
      dtype: float32 or float64.
      rngs: NNX random streams (uses ``params``); U, V, W are drawn in that order.
    """

    def __init__(self, num_inputs: int, num_classes: int, width: int, *, activation: str = "gelu",
                 init_std: float = 1.0, dtype=jnp.float32, rngs: nnx.Rngs):
        require_int(num_inputs, "num_inputs", minimum=2)
        require_int(num_classes, "num_classes", minimum=2)
        require_int(width, "width", minimum=1)
        require(activation in TWO_INPUT_ACTIVATIONS, "activation",
                f"must be one of {', '.join(TWO_INPUT_ACTIVATIONS)}, got {activation!r}")
        require_float(init_std, "init_std", minimum=0.0, strict_minimum=True)
        dtype = require_float_dtype(dtype)
        self.num_inputs, self.num_classes, self.width, self.activation = num_inputs, num_classes, width, activation

        def normal(shape):
            return init_std * jax.random.normal(rngs.params(), shape, dtype)

        self.U = nnx.Param(normal((width, num_inputs)))
        self.V = nnx.Param(normal((width, num_inputs)))
        self.W = nnx.Param(normal((num_classes, width)))

    @property
    def vocab_size(self) -> int:
        """The larger alphabet (what the supervised trainer checks labels against)."""
        return max(self.num_inputs, self.num_classes)

    def params(self) -> dict[str, jax.Array]:
        """``{"U": (D, P_in), "V": (D, P_in), "W": (P_out, D)}`` (arrays, not variables)."""
        return {"U": self.U[...], "V": self.V[...], "W": self.W[...]}

    def weights(self) -> dict[str, jax.Array]:
        """What a training run records: the three matrices."""
        return self.params()

    def input_embeddings(self) -> jax.Array:
        """(P_in, 2 D) token rows: token x's first- and second-position embeddings ``[U[:, x], V[:, x]]``."""
        return jnp.concatenate([self.U[...].T, self.V[...].T], axis=1)

    def output_embeddings(self) -> jax.Array:
        """(P_out, D) class rows of W."""
        return self.W[...]

    def __call__(self, inputs_Nx2: jax.Array) -> jax.Array:
        """Logits (N, P_out) for int inputs (N, 2) = (a, b)."""
        return two_input_logits(self.params(), inputs_Nx2[:, 0], inputs_Nx2[:, 1], self.activation)
