"""Symbolic derivation (sympy) of the two-input MLP's small-initialisation flow (MODADD sections 3-4).

Model ``z(a, b) = W sigma(h)``, ``h = U e_a + V e_b`` (layout of :class:`~probsig_jax.models.two_input_mlp.TwoInputMLP`),
``sigma(h) = c1 h + c2 h^2 / 2 + c3 h^3 / 6 + ...``, every weight at scale ``eps``, loss
``E[-log softmax(z)_Z] + (lambda / 2) |theta|^2``.

1. **Loss around uniform logits** (P classes): ``-log softmax(z)_y = log P - (e_y - 1/P)^T z + z^T Pi z / (2P) + O(z^3)``,
   ``Pi = I - 1 1^T / P`` (checked by sympy's series for P = 3).
2. **The truncated potential.** Keeping what contributes to the flow up to ``O(eps^3)``,
   ``-loss + log P = Psi(theta) + ...`` with
   ``Psi = E[(e_Z - 1/P)^T W (c1 h + (c2/2) h o h)] - (c1^2 / 2P) E[h^T W^T Pi W h]``,
   and the Proposition-1 field is ``grad Psi - lambda theta``. Its column ``U^x`` is MODADD's
   ``r_x {c1 W^T[(phi_a[x] - 1/P) - (c1/P) Pi W (U^x + V psi_a[x])] + c2[U^x o W^T phi_a[x]
   - (1/P)(U^x + V psi_a[x]) o W^T 1 + diag(V Phi_a[x] W)]}``: the joint signature enters through the cross
   term of ``h o h``. Checked on an explicit network (P = 3, D = 1, a fixed rational distribution): the
   series in ``eps`` of the true gradient (softmax to first order in z, step 1) agrees with ``grad Psi`` at
   orders ``eps^1`` and ``eps^2``; at ``eps^3`` they differ only by terms with ``c3`` (so the residual is
   ``O(eps^3)``, and ``O(eps^4)`` for GELU, ``x^2`` and the identity, whose ``c3 = 0``).
3. **Theorem 1** (all conditionals uniform, e.g. the full clean table): the ``c1`` terms vanish or are
   ``O(eps^3)``, leaving ``dU^x/dt = -lambda U^x + c2 r_x [diag(V Phi_a[x] W) - mean(V) o mean(W)]``.
4. **Fourier modes** (addition mod P on the full table, ``r_x = 1/P``): the DFT diagonalises the shifts and each
   unit's frequency-r triple obeys ``du/dt = C conj(v) w - lambda u`` (and cyclically, ``dw/dt = C u v - lambda w``)
   with ``C = c2 / P^2``. Undamped, in ``s = C t``: ``|u|^2 - |v|^2``, ``|u|^2 - |w|^2`` and ``Im(u v conj w)`` are
   conserved and ``x = |u|^2`` obeys ``dx/ds = 2 Re(u v conj w)`` with ``Re(.)^2 = x (x - A)(x - B) - I^2``, so the
   blow-up time is a one-dimensional integral (checked symbolically here, numerically in the tests).
   With weight decay, ``s = (C / lambda)(1 - exp(-lambda t))`` maps the damped system onto the undamped one
   (checked here), so a mode blows up iff its ``s* < C / lambda`` (Proposition 2).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import sympy as sp

from probsig_jax.validation import ConfigError

h_sym = sp.Symbol("h", real=True)
c1, c2, c3 = sp.symbols("c_1 c_2 c_3", real=True)
eps = sp.Symbol("epsilon", positive=True)
lam = sp.Symbol("lambda", positive=True)
P_sym = sp.Symbol("P", integer=True, positive=True)
s_sym, t_sym = sp.symbols("s t", positive=True)

#: The activations of :mod:`probsig_jax.models.two_input_mlp` as sympy expressions (GELU: the exact erf form).
ACTIVATION_EXPRESSIONS = {
    "gelu": h_sym / 2 * (1 + sp.erf(h_sym / sp.sqrt(2))),
    "identity": h_sym,
    "square": h_sym**2,
    "tanh": sp.tanh(h_sym),
}
NON_SMOOTH_ACTIVATIONS = {"relu": "ReLU has no Taylor series at 0 (sigma'' is a delta)"}

#: Coefficients of the truncated potential Psi: linear, curvature, softmax-curvature terms (step 2).
POTENTIAL_COEFFICIENTS = (c1, c2 / 2, -c1**2 / (2 * P_sym))


def activation_coefficients(activation: str) -> tuple[float, float, float]:
    """``(c1, c2, c3) = (sigma'(0), sigma''(0), sigma'''(0))`` from sympy's series, as floats.

    Raises ConfigError(``activation``) for ReLU (not smooth at 0) or an unknown name."""
    if activation in NON_SMOOTH_ACTIVATIONS:
        raise ConfigError("activation", f"{activation!r} is not smooth at 0 ({NON_SMOOTH_ACTIVATIONS[activation]}); "
                                        f"the small-initialisation theory needs one of {', '.join(ACTIVATION_EXPRESSIONS)}")
    if activation not in ACTIVATION_EXPRESSIONS:
        raise ConfigError("activation", f"must be one of {', '.join(ACTIVATION_EXPRESSIONS)}, got {activation!r}")
    return tuple(float(c) for c in _symbolic_coefficients(activation))


@functools.lru_cache(maxsize=None)
def _symbolic_coefficients(activation: str) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    series = sp.series(ACTIVATION_EXPRESSIONS[activation], h_sym, 0, 4).removeO()
    coeffs = [sp.nsimplify(sp.simplify(series.coeff(h_sym, n) * sp.factorial(n))) for n in range(4)]
    if coeffs[0] != 0:
        raise ConfigError("activation", f"{activation!r} has sigma(0) = {coeffs[0]} != 0")
    return coeffs[1], coeffs[2], coeffs[3]


@dataclass(frozen=True)
class TwoInputFlowDerivation:
    """The derived expressions and the checks that were run (``checks`` maps a description to True)."""

    potential_coefficients: tuple        # (k_lin, k_curv, k_soft) of Psi
    mode_field: tuple                    # (du/ds, dv/ds, dw/ds) of one Fourier mode, undamped
    conserved: tuple                     # the three conserved quantities, in u, v, w and conjugates
    growth_law: sp.Expr                  # Re(u v conj w)^2 as a cubic in x = |u|^2
    checks: dict = field(default_factory=dict)


def _loss_expansion_check(P: int = 3) -> bool:
    """Step 1 for an explicit P: the series of -log softmax(lam z)_0 to second order in lam."""
    scale = sp.Symbol("mu", positive=True)
    zs = sp.Matrix(sp.symbols(f"z0:{P}", real=True))
    loss = -sp.log(sp.exp(scale * zs[0]) / sum(sp.exp(scale * zj) for zj in zs))
    series = sp.series(loss, scale, 0, 3).removeO()
    e0 = sp.Matrix([int(j == 0) for j in range(P)])
    Pi = sp.eye(P) - sp.ones(P, P) / P
    predicted = (sp.log(P) - scale * ((e0 - sp.ones(P, 1) / P).T * zs)[0]
                 + scale**2 * (zs.T * Pi * zs)[0] / (2 * P))
    return sp.simplify(sp.expand(sp.expand_log(series - predicted, force=True))) == 0


def _rational_distribution(P: int) -> dict:
    """A fixed, non-uniform distribution over (x, y, z) in {0..P-1}^3 with rational probabilities."""
    weights = {(x, y, z): 1 + (3 * x + 5 * y + 7 * z + x * y * z) % 4 for x in range(P) for y in range(P)
               for z in range(P)}
    total = sum(weights.values())
    return {key: sp.Rational(w, total) for key, w in weights.items()}


def _explicit_parts(P: int = 3):
    U = sp.Matrix(1, P, sp.symbols(f"u0:{P}", real=True))
    V = sp.Matrix(1, P, sp.symbols(f"v0:{P}", real=True))
    W = sp.Matrix(P, 1, sp.symbols(f"w0:{P}", real=True))
    return U, V, W


def _gradient_series_check(P: int = 3) -> dict[str, bool]:
    """Step 2: true gradient (softmax to first order) vs grad Psi, order by order in eps (P = 3, D = 1)."""
    U, V, W = _explicit_parts(P)
    params = list(U) + list(V) + list(W)
    # Terms of sigma beyond h^3 and of z beyond eps^3 in the softmax-curvature term reach the flow only at eps^4,
    # past the orders compared here; leaving them out keeps the expansion to a few seconds.
    sigma = c1 * h_sym + c2 * h_sym**2 / 2 + c3 * h_sym**3 / 6
    sigma_2 = c1 * h_sym + c2 * h_sym**2 / 2
    dist = _rational_distribution(P)
    Pi = sp.eye(P) - sp.ones(P, P) / P
    k_lin, k_curv, k_soft = (c.subs(P_sym, P) for c in POTENTIAL_COEFFICIENTS)
    # True flow -dL/dtheta with softmax(z) = u + Pi z / P (step 1): E[(dz/dtheta)^T (e_Z - u - Pi z / P)].
    # Psi as the same expectation.
    loss_surrogate, potential = 0, 0
    for (x, y, z), p in dist.items():
        h = U[0, x] + V[0, y]
        logits, logits_2 = W * sigma.subs(h_sym, h), W * sigma_2.subs(h_sym, h)
        e = sp.Matrix([int(k == z) - sp.Rational(1, P) for k in range(P)])
        # -L up to the softmax's first order: (e_Z - u)^T z - z^T Pi z / (2P); its gradient is the flow.
        loss_surrogate += p * ((e.T * logits)[0] - (logits_2.T * Pi * logits_2)[0] / (2 * P))
        potential += p * ((e.T * W)[0] * (k_lin * h + k_curv * h**2) + k_soft * h**2 * (W.T * Pi * W)[0])
    scaled = {q: eps * q for q in params}
    checks = {}
    residual_orders = []
    for q in params:
        true = sp.expand(sp.diff(loss_surrogate, q).subs(scaled, simultaneous=True))
        approx = sp.expand(sp.diff(potential, q).subs(scaled, simultaneous=True))
        diff = sp.expand(true - approx)
        residual_orders.append(all(sp.expand(diff.coeff(eps, n)) == 0 for n in (0, 1, 2)))
        residual_orders.append(sp.expand(diff.coeff(eps, 3).subs(c3, 0)) == 0)
    checks["grad Psi = true flow at orders eps^1, eps^2 (P = 3, D = 1, non-uniform distribution)"] = \
        all(residual_orders[0::2])
    checks["the eps^3 residual has only c3 terms (O(eps^4) for c3 = 0)"] = all(residual_orders[1::2])
    return checks


def _column_formula_check(P: int = 3) -> bool:
    """grad_U Psi matches MODADD's Proposition-1 column formula through phi_a, psi_a, Phi_a (D = 1)."""
    U, V, W = _explicit_parts(P)
    dist = _rational_distribution(P)
    k_lin, k_curv, k_soft = (c.subs(P_sym, P) for c in POTENTIAL_COEFFICIENTS)
    Pi = sp.eye(P) - sp.ones(P, P) / P
    potential = 0
    for (x, y, z), p in dist.items():
        h = U[0, x] + V[0, y]
        e = sp.Matrix([int(k == z) - sp.Rational(1, P) for k in range(P)])
        potential += p * ((e.T * W)[0] * (k_lin * h + k_curv * h**2) + k_soft * h**2 * (W.T * Pi * W)[0])
    ok = True
    ones = sp.ones(P, 1)
    for x in range(P):
        r_x = sum(p for (xx, _, _), p in dist.items() if xx == x)
        phi = sp.Matrix([sum(p for (xx, _, zz), p in dist.items() if xx == x and zz == z) / r_x for z in range(P)])
        psi = sp.Matrix([sum(p for (xx, yy, _), p in dist.items() if xx == x and yy == y) / r_x for y in range(P)])
        Phi = sp.Matrix(P, P, lambda y, z: dist[(x, y, z)] / r_x)
        h_bar = U[0, x] + (V * psi)[0]
        formula = r_x * (c1 * ((W.T * (phi - ones / P))[0] - c1 / P * (W.T * Pi * W)[0] * h_bar)
                         + c2 * (U[0, x] * (W.T * phi)[0] - h_bar * (W.T * ones)[0] / P + (V * Phi * W)[0]))
        ok &= sp.expand(sp.diff(potential, U[0, x]) - formula) == 0
    return bool(ok)


def _complex_mode():
    """Real and imaginary parts of one mode's (u, v, w)."""
    ur, ui, vr, vi, wr, wi = sp.symbols("u_r u_i v_r v_i w_r w_i", real=True)
    return (ur + sp.I * ui, vr + sp.I * vi, wr + sp.I * wi), (ur, ui, vr, vi, wr, wi)


def _mode_checks() -> tuple[tuple, tuple, sp.Expr, dict[str, bool]]:
    (u, v, w), reals = _complex_mode()
    field_uvw = (sp.conjugate(v) * w, sp.conjugate(u) * w, u * v)
    ur, ui, vr, vi, wr, wi = reals
    # d/ds of a real function of (u, v, w) along the field, through the real and imaginary parts.
    def rate(expr):
        parts = [(ur, sp.re(field_uvw[0])), (ui, sp.im(field_uvw[0])), (vr, sp.re(field_uvw[1])),
                 (vi, sp.im(field_uvw[1])), (wr, sp.re(field_uvw[2])), (wi, sp.im(field_uvw[2]))]
        return sp.expand(sum(sp.diff(expr, q) * sp.expand(f) for q, f in parts))

    abs2 = lambda q: sp.expand(q * sp.conjugate(q))  # noqa: E731
    Q = sp.expand(u * v * sp.conjugate(w))
    conserved = (abs2(u) - abs2(v), abs2(u) - abs2(w), sp.im(Q))
    x, A, B, I_ = sp.symbols("x A B I", real=True)
    growth_law = x * (x - A) * (x - B) - I_**2
    checks = {
        "|u|^2 - |v|^2, |u|^2 - |w|^2, Im(u v conj w) are conserved": all(
            sp.simplify(rate(sp.expand(sp.re(c) if c.has(sp.I) else c))) == 0 for c in conserved),
        "d|u|^2/ds = d|v|^2/ds = d|w|^2/ds = 2 Re(u v conj w)": all(
            sp.simplify(rate(abs2(q)) - 2 * sp.re(Q)) == 0 for q in (u, v, w)),
        "Re(u v conj w)^2 = x (x - A)(x - B) - I^2 with x = |u|^2": sp.simplify(
            sp.expand(sp.re(Q)**2 - growth_law.subs({x: abs2(u), A: conserved[0], B: conserved[1],
                                                     I_: conserved[2]}))) == 0,
    }
    # Weight decay: u = exp(-lambda t) u~ with u~ undamped in s = (C/lambda)(1 - exp(-lambda t)).
    C = sp.Symbol("C", positive=True)
    s_of_t = C / lam * (1 - sp.exp(-lam * t_sym))
    checks["ds/dt = C exp(-lambda t) turns the damped mode into the undamped one"] = (
        sp.simplify(sp.diff(s_of_t, t_sym) - C * sp.exp(-lam * t_sym)) == 0
        and sp.limit(s_of_t, t_sym, sp.oo) == C / lam)
    return field_uvw, conserved, growth_law, checks


@functools.lru_cache(maxsize=1)
def derive_two_input_flow() -> TwoInputFlowDerivation:
    """Run the derivation and its checks (a few seconds of sympy)."""
    checks = {"-log softmax(z)_y = log P - (e_y - 1/P)^T z + z^T Pi z / (2P) + O(z^3) (P = 3)": _loss_expansion_check(),
              "grad_U Psi = MODADD's Proposition-1 column formula (phi_a, psi_a, Phi_a)": _column_formula_check()}
    checks.update(_gradient_series_check())
    mode_field, conserved, growth_law, mode_checks = _mode_checks()
    checks.update(mode_checks)
    return TwoInputFlowDerivation(POTENTIAL_COEFFICIENTS, mode_field, conserved, growth_law, checks)


def verify_two_input_flow() -> dict[str, bool]:
    """``{check: passed}`` of :func:`derive_two_input_flow`."""
    return dict(derive_two_input_flow().checks)
