"""JAX functions generated from the sympy expressions of :mod:`probsig_jax.theory.derivation`.

Nothing here re-types a formula: each function is ``sympy.lambdify(..., modules="jax")``
of a derived expression, so the write-up, the notebooks and the simulator all
run the same mathematics. Matrix arguments are passed in the order of the
expression's ``MatrixSymbol``s; every function broadcasts over leading axes
where the expression is elementwise.
"""

from __future__ import annotations

import functools
from typing import Callable

import sympy as sp

from probsig_jax.theory import derivation as D


def _lambdify(args, expr) -> Callable:
    return sp.lambdify(args, expr, modules="jax", cse=True)


@functools.lru_cache(maxsize=1)
def compiled_linear_theory() -> dict[str, Callable]:
    """The generated functions, keyed by name.

    - ``gradient_matrix(Y_w, P_w, C) -> G`` (V, F): ``(Y_w - P_w)^T C`` (rows of Y, P pre-scaled by weights).
    - ``flow(U, E, G) -> (dE/dt, dU/dt)``: ``(U^T G, G E^T)``.
    - ``next_order_gradient(M, U, E, Sigma_c, u, one) -> G``: ``M - u (I - u 1 1^T) U E Sigma_c``.
    - ``mode_update(sigma, t, a0, b0) -> (a(t), b(t))``: one singular mode's closed form (elementwise).
    - ``assemble(X0, basis, delta) -> X0 + basis @ delta``: back from mode coordinates.
    - ``expected_mode_gram(sigma, t, eps) -> eps^2 cosh(2 sigma t)``.
    - ``expected_product_amplitude(sigma, t, eps, d) -> eps^2 d sinh(2 sigma t)``.
    - ``escape_time(sigma, eps, d, theta) -> asinh(theta / (eps^2 d)) / (2 sigma)``.
    """
    der = D.derive_linear_flow()
    sig, t, a0, b0 = der.mode_scalars
    return {
        "gradient_matrix": _lambdify((D.Yw, D.Pw, D.C), der.gradient_matrix),
        "flow": _lambdify((D.U, D.E, D.G), (der.flow_E, der.flow_U)),
        "next_order_gradient": _lambdify((D.M, D.U, D.E, D.Sigma, D.u, D.ones), der.next_order_gradient_matrix),
        "mode_update": _lambdify((sig, t, a0, b0), (der.mode_update_a, der.mode_update_b)),
        "assemble": _lambdify((D.A0, D.Qr, D.dA), der.closed_form_assembly_A),
        "expected_mode_gram": _lambdify((sig, t, D.eps), der.expected_mode_gram),
        "expected_product_amplitude": _lambdify((sig, t, D.eps, D.d), der.expected_product_amplitude),
        "escape_time": _lambdify((sig, D.eps, D.d, D.theta), der.escape_time),
    }
