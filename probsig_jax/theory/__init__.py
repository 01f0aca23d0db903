"""Gradient-flow theory.

==================  ===================================================================================
module              what it holds
==================  ===================================================================================
``derivation``      the sympy derivation of the linear model's flow and its symbolic checks (sympy)
``compiled``        the derived expressions lambdified to JAX (sympy)
``writeup``         the Markdown + LaTeX write-up generated from the derivation (sympy)
``modes``           ``SignatureModes``, ``signature_modes``: the SVD basis of M (plain JAX)
``linear``          ``closed_form``, ``integrate_flow`` (diffrax), ``predicted_embedding_gram``,
                    ``escape_time``, ... for composite addition tasks
``ffn_derivation``  the sympy derivation of the Emb-MLP's small-init flow (leading, curvature/joint-signature
                    term, eps orders, escape laws) and its checks (sympy)
``ffn``             the FFN's exact, leading and second-order flows, escape time, field cosines (sympy, diffrax)
``ode``             the shared diffrax solve (diffrax)
``two_input_derivation``  the sympy derivation of the two-input MLP's flow (modular arithmetic): truncated
                    potential, Theorem 1, the Fourier modes' conserved quantities (sympy)
``two_input``       its Proposition-1 / Theorem-1 / Theorem-2 fields, Fourier modes, blow-up times s*,
                    Proposition 2's per-unit frequency prediction (sympy, diffrax for the ODE check)
``corpus``          corpus-scale prediction from a truncated SVD of the sparse M (scipy; no sympy/diffrax)
==================  ===================================================================================

Names are imported on first use: ``import probsig_jax.theory.corpus`` loads neither sympy nor diffrax.
"""

from probsig_jax._lazy import lazy_exports

_EXPORTS = {
    "derivation": "probsig_jax.theory.derivation",
    "compiled": "probsig_jax.theory.compiled",
    "writeup": "probsig_jax.theory.writeup",
    "modes": "probsig_jax.theory.modes",
    "linear": "probsig_jax.theory.linear",
    "corpus": "probsig_jax.theory.corpus",
    "ffn": "probsig_jax.theory.ffn",
    "ffn_derivation": "probsig_jax.theory.ffn_derivation",
    "ode": "probsig_jax.theory.ode",
    "two_input": "probsig_jax.theory.two_input",
    "two_input_derivation": "probsig_jax.theory.two_input_derivation",
    "derive_linear_flow": "probsig_jax.theory.derivation",
    "verify_linear_flow": "probsig_jax.theory.derivation",
    "render_linear_flow_markdown": "probsig_jax.theory.writeup",
    "SignatureModes": "probsig_jax.theory.modes",
    "signature_modes": "probsig_jax.theory.modes",
    "closed_form": "probsig_jax.theory.linear",
    "integrate_flow": "probsig_jax.theory.linear",
    "predicted_embedding_gram": "probsig_jax.theory.linear",
    "escape_time": "probsig_jax.theory.linear",
    "max_modes": "probsig_jax.theory.corpus",
    "predicted_similarity": "probsig_jax.theory.corpus",
    "time_for_growth": "probsig_jax.theory.corpus",
    "truncated_signature_modes": "probsig_jax.theory.corpus",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
