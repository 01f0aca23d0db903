"""Gradient-flow theory: sympy derivation (:mod:`.derivation`), generated JAX functions
(:mod:`.compiled`) and the linear model's closed form and flows (:mod:`.linear`)."""

from probsig_jax.theory import linear
from probsig_jax.theory import corpus
from probsig_jax.theory.corpus import max_modes, predicted_similarity, time_for_growth, truncated_signature_modes
from probsig_jax.theory.derivation import derive_linear_flow, verify_linear_flow
from probsig_jax.theory.writeup import render_linear_flow_markdown

__all__ = ["derive_linear_flow", "linear", "render_linear_flow_markdown", "verify_linear_flow"]
__all__ += ["corpus", "max_modes", "predicted_similarity", "time_for_growth", "truncated_signature_modes"]
