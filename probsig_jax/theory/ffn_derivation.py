"""Symbolic derivation (sympy) of the Emb-MLP's small-initialisation gradient flow (PAPER section 6).

Model with ``k`` hidden layers and no biases (weights in the layout of :class:`~probsig_jax.models.ffn.FeedForwardModel`,
``E`` (d, F), ``W_l`` (n_{l-1}, n_l), ``U`` (V, n_k))::

    z(c) = U sigma(W_k^T ... sigma(W_1^T E c)),     loss = E[-log softmax(z(c(X)))_Y]

with a smooth activation ``sigma(a) = c1 a + c2 a^2 / 2 + c3 a^3 / 6 + ...`` and every weight at scale ``eps``.
The derivation goes in three steps, each checked here:

1. **Loss around uniform logits.** ``-log softmax(z)_y = log V - (e_y - u 1)^T z + O(|z|^2)``, so with
   ``z = O(eps^(k+2))`` the flow ``d theta / dt = -grad loss`` equals ``grad Phi`` up to a relative
   ``O(eps^(k+2))``, where ``Phi(theta) = E[(e_Y - u 1)^T z(c(X))]`` (the signature potential).
2. **Activation series.** To first order in the curvature ``c2`` the network output is
   ``z = c1^k U B_k c + sum_l (c2 / 2) c1^(k+l-2) U_{>l} (B_l c)^{o2}`` with ``B_l = W_l^T ... W_1^T E``
   (n_l, F), ``U_{>l} = U W_k^T ... W_{l+1}^T`` (V, n_l) and ``o2`` the elementwise square: checked on explicit
   networks of depth 1 and 2 (sympy polynomials), together with the order in ``eps`` of every term.
3. **The two potentials.** The data enter only through moments: the leading term through the signature matrix
   ``M = E[(e_Y - u 1) c^T]`` (``Phi_1 = c1^k tr(M^T U B_k)``, a product of ``k + 2`` linear factors), the
   second-order term through the third moment ``T[s, r, y] = E[c_s c_r (1{Y=y} - u)] = f_s (J_s (I - u 1 1^T))[r, y]``
   with the joint signature ``J_s(r, y) = P(r in X, Y = y | s in X)`` (PAPER's phi_x^{X|y}), i.e.
   ``Phi_2 = sum_l (c2 / 2) c1^(k+l-2) sum_{j,s,r,y} T[s, r, y] B_l[j, s] B_l[j, r] U_{>l}[y, j]``.
   The leading fields ``grad Phi_1`` are derived here by sympy's matrix calculus (for the write-up and for
   :mod:`probsig_jax.theory.ffn`, which lambdifies them); ``grad Phi_2`` is the JAX gradient of the
   contraction, with the coefficients lambdified from here.

The escape time of the plateau follows from the homogeneity of ``Phi_1``: its field is homogeneous of degree
``k + 1`` in the weights, so under ``theta = eps theta~`` and ``tau = c1^k sigma_1 eps^k t`` the leading flow
does not depend on ``eps``: ``t* = kappa / (c1^k sigma_1 eps^k)`` for ``k >= 1`` (``kappa`` fixed by the
normalised initialisation; for balanced aligned factors of amplitude ``a0`` it is ``1 / (k a0^k)``), against
``log(1 / eps) / sigma_1`` for the two-factor linear model (``k = 0``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import sympy as sp

from probsig_jax.validation import ConfigError

x_act = sp.Symbol("a", real=True)          # activation argument
c1, c2, c3 = sp.symbols("c_1 c_2 c_3", real=True)
eps = sp.Symbol("epsilon", positive=True)
t, tau, K, a0 = sp.symbols("t tau K a_0", positive=True)
layer = sp.Symbol("l", integer=True, positive=True)
depth = sp.Symbol("k", integer=True, nonnegative=True)
n_factors = sp.Symbol("D", integer=True, positive=True)   # linear factors of the leading product

#: The activations of :mod:`probsig_jax.models.ffn` as sympy expressions (GELU is JAX's default tanh form).
ACTIVATION_EXPRESSIONS = {
    "tanh": sp.tanh(x_act),
    "gelu": x_act / 2 * (1 + sp.tanh(sp.sqrt(2 / sp.pi) * (x_act + sp.Rational(44715, 1000000) * x_act**3))),
}
NON_SMOOTH_ACTIVATIONS = {"relu": "ReLU has no Taylor series at 0 (sigma'' is a delta)"}

#: Coefficient of the layer-l curvature term in z (derived and checked in :func:`derive_ffn_flow`).
second_order_coefficient = c2 / 2 * c1 ** (depth + layer - 2)
#: Coefficient of the leading (k + 2)-factor product.
leading_coefficient = c1**depth


def activation_coefficients(activation: str) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    """``(c1, c2, c3)``: the Taylor coefficients ``sigma^(n)(0)`` of ``activation``, from sympy's series.

    Raises ConfigError(``activation``) for a non-smooth activation or one with ``sigma(0) != 0``."""
    if activation in NON_SMOOTH_ACTIVATIONS:
        raise ConfigError("activation", f"{activation!r} is not smooth at 0 ({NON_SMOOTH_ACTIVATIONS[activation]}); "
                                        f"the small-initialisation theory needs one of {', '.join(ACTIVATION_EXPRESSIONS)}")
    if activation not in ACTIVATION_EXPRESSIONS:
        raise ConfigError("activation", f"must be one of {', '.join(ACTIVATION_EXPRESSIONS)}, got {activation!r}")
    series = sp.series(ACTIVATION_EXPRESSIONS[activation], x_act, 0, 4).removeO()
    coeffs = [sp.nsimplify(sp.simplify(series.coeff(x_act, n) * sp.factorial(n))) for n in range(4)]
    if coeffs[0] != 0:
        raise ConfigError("activation", f"{activation!r} has sigma(0) = {coeffs[0]} != 0")
    return coeffs[1], coeffs[2], coeffs[3]


def _matrix_symbols(k: int):
    """MatrixSymbols of a depth-k Emb-MLP: E (d, F), W_1..W_k, U (V, n_k), M (V, F)."""
    F, V, d = sp.symbols("F V d", integer=True, positive=True)
    widths = [d] + [sp.Symbol(f"n_{i}", integer=True, positive=True) for i in range(1, k + 1)]
    E = sp.MatrixSymbol("E", d, F)
    Ws = [sp.MatrixSymbol(f"W_{i}", widths[i - 1], widths[i]) for i in range(1, k + 1)]
    U = sp.MatrixSymbol("U", V, widths[-1])
    M = sp.MatrixSymbol("M", V, F)
    return E, Ws, U, M


def _product(U, Ws, E):
    """U W_k^T ... W_1^T E (V, F)."""
    out = U
    for W in reversed(Ws):
        out = out * W.T
    return out * E


@dataclass(frozen=True)
class FFNFlowDerivation:
    """The depth-k expressions and the checks that were run (``checks`` maps a description to True)."""

    depth: int
    symbols: tuple                      # (E, (W_1..W_k), U, M)
    leading_potential: sp.Expr          # c1^k tr(M^T U B_k)
    leading_field: tuple                # (dE/dt, dW_1/dt, ..., dU/dt)
    second_order_coefficients: tuple    # coefficient of layer l's curvature term, l = 1..k
    field_orders: dict                  # term -> order in eps of its contribution to d theta / dt
    checks: dict = field(default_factory=dict)


def _explicit_network(k: int, width: int = 2, features: int = 2, vocab: int = 2):
    """An explicit depth-k network with symbolic entries and sigma(a) = c1 a + c2 a^2 / 2 + c3 a^3 / 6."""
    def mat(name, rows, cols):
        return sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"{name}_{i}{j}", real=True))

    E = mat("e", width, features)
    Ws = [mat(f"w{i}", width, width) for i in range(1, k + 1)]
    U = mat("v", vocab, width)
    c = sp.Matrix(features, 1, lambda i, _: sp.Symbol(f"x_{i}", real=True))
    return E, Ws, U, c


def _network_parts(E, Ws, U, c):
    """``(z_0, dz/dc2, dz/dc3)`` at ``c2 = c3 = 0`` of the network with ``sigma(a) = c1 a + c2 a^2/2 + c3 a^3/6``.

    Forward-mode in the coefficients (each layer carries the value and its two derivatives), so no
    polynomial of the full composition is ever expanded."""
    h, dh2, dh3 = E * c, sp.zeros(E.shape[0], 1), sp.zeros(E.shape[0], 1)
    for W in Ws:
        a, da2, da3 = W.T * h, W.T * dh2, W.T * dh3
        h = c1 * a
        dh2 = c1 * da2 + a.applyfunc(lambda v: v**2 / 2)
        dh3 = c1 * da3 + a.applyfunc(lambda v: v**3 / 6)
    return tuple((U * v).applyfunc(sp.expand) for v in (h, dh2, dh3))


def _activation_expansion_check(k: int) -> tuple[bool, dict]:
    """z at first order in c2 equals the leading product plus the layer sum; returns (ok, orders in eps).

    The orders are the total degree in the weight entries (every weight scaled by eps)."""
    E, Ws, U, c = _explicit_network(k)
    z0, z2, z3 = _network_parts(E, Ws, U, c)
    lead = (c1**k * _product(U, Ws, E) * c).applyfunc(sp.expand)
    predicted2 = sp.zeros(*z0.shape)
    for ell in range(1, k + 1):
        B = E
        for W in Ws[:ell]:
            B = W.T * B
        U_after = U
        for W in reversed(Ws[ell:]):
            U_after = U_after * W.T
        coef = (second_order_coefficient / c2).subs({depth: k, layer: ell})
        predicted2 += coef * U_after * (B * c).applyfunc(lambda v: v**2)
    ok = (z0 - lead).applyfunc(sp.expand) == sp.zeros(*z0.shape) and \
        (z2 - predicted2).applyfunc(sp.expand) == sp.zeros(*z0.shape)
    weights = [s for X in (E, *Ws, U) for s in X]
    scaled = {w: eps * w for w in weights}
    orders = {name: min(sp.Poly(sp.expand(v.subs(scaled)), eps).monoms()[-1][0] for v in part if v != 0)
              for name, part in (("leading", z0), ("second", z2), ("third", z3))}
    return bool(ok), orders


def _loss_expansion_check(vocab: int = 3) -> bool:
    """-log softmax(lam z)_0 = log V - lam (e_0 - u 1)^T z + O(lam^2) for an explicit V."""
    lam = sp.Symbol("lambda", positive=True)
    zs = sp.symbols(f"z0:{vocab}", real=True)
    loss = -sp.log(sp.exp(lam * zs[0]) / sum(sp.exp(lam * zj) for zj in zs))
    series = sp.series(loss, lam, 0, 2).removeO()
    predicted = sp.log(vocab) - lam * sum((int(j == 0) - sp.Rational(1, vocab)) * zs[j] for j in range(vocab))
    return sp.simplify(sp.expand_log(series - predicted, force=True)) == 0


def escape_law(D: int) -> tuple[sp.Expr, sp.Expr | None]:
    """``(a(t), t_blow)`` of balanced aligned factors ``a' = K a^(D-1)``, ``a(0) = a0`` (sympy ``dsolve``).

    ``D`` is the number of linear factors (2 for the linear model, k + 2 for the FFN); ``t_blow`` is where
    ``1 / a^(D-2)`` vanishes (None for D = 2, which grows exponentially and never blows up)."""
    a = sp.Function("a")
    sol = sp.dsolve(sp.Eq(a(t).diff(t), K * a(t) ** (D - 1)), a(t), ics={a(0): a0})
    sols = sol if isinstance(sol, list) else [sol]
    # The branch that starts at +a0 and grows (dsolve may return the sign-flipped one too).
    probe = {t: sp.Rational(1, 10), K: 1, a0: 1}
    rhs = next(s.rhs for s in sols if sp.N(s.rhs.subs(probe)).is_real and sp.N(s.rhs.subs(probe)) > 1)
    if D == 2:
        return rhs, None
    roots = sp.solve(sp.Eq(1 / rhs ** (D - 2), 0), t)
    if len(roots) != 1:
        raise AssertionError(f"D = {D}: expected one blow-up time, got {roots}")
    return rhs, roots[0]


#: The blow-up time the derivation states for D >= 3 linear factors (checked against :func:`escape_law`).
blow_up_time = 1 / ((n_factors - 2) * K * a0 ** (n_factors - 2))


sigma_1, kappa, a_norm = sp.symbols("sigma_1 kappa atilde", positive=True)
#: The FFN's escape time from the homogeneity of the leading field (degree k + 1): kappa is set by the
#: initialisation normalised to unit scale, sigma_1 is the top singular value of M.
ffn_escape_time = kappa / (c1**depth * sigma_1 * eps**depth)
#: Balanced aligned factors (amplitude eps * atilde, K = c1^k sigma_1): the blow-up time of D = k + 2 factors.
balanced_escape_time = blow_up_time.subs({n_factors: depth + 2, K: c1**depth * sigma_1, a0: eps * a_norm})


def second_order_potential_expression() -> sp.Expr:
    """``Phi_2`` as an indexed sum over layers ``l``, units ``j``, features ``s, r`` and labels ``y``: the
    contraction :func:`probsig_jax.theory.ffn.second_order_potential_from_joint` evaluates, with
    ``T[s, r, y] = f_s (J_s (I - u 1 1^T))[r, y]``, ``B_l = W_l^T ... W_1^T E`` and
    ``Utilde_l = U W_k^T ... W_(l+1)^T``."""
    j, s, r, y = sp.symbols("j s r y", integer=True, positive=True)
    F, V, n_l = sp.symbols("F V n_l", integer=True, positive=True)
    T, B, Ut = sp.IndexedBase("T"), sp.IndexedBase("B_l"), sp.IndexedBase("Utilde_l")   # LaTeX: \tilde{U}_{l}
    inner = sp.Sum(T[s, r, y] * B[j, s] * B[j, r] * Ut[y, j], (j, 1, n_l), (s, 1, F), (r, 1, F), (y, 1, V))
    return sp.Sum(second_order_coefficient * inner, (layer, 1, depth))


def _escape_constant_check() -> bool:
    """The balanced-factor blow-up time is the power law with kappa = 1 / (k atilde^k)."""
    return sp.simplify(balanced_escape_time - ffn_escape_time.subs(kappa, 1 / (depth * a_norm**depth))) == 0


def _escape_law_check() -> dict[str, bool]:
    """D = 2: exponential; D >= 3: blow-up at 1 / ((D-2) K a0^(D-2))."""
    out = {}
    for D in (2, 3, 4):
        rhs, t_blow = escape_law(D)
        if D == 2:
            out["D = 2 (linear model): a(t) = a0 exp(K t), no finite-time blow-up"] = \
                sp.simplify(rhs - a0 * sp.exp(K * t)) == 0
            continue
        expected = blow_up_time.subs(n_factors, D)
        out[f"D = {D}: a(t) = a0 (1 - (D-2) K a0^(D-2) t)^(-1/(D-2)) blows up at t = 1 / ((D-2) K a0^(D-2))"] = (
            sp.simplify(t_blow - expected) == 0
            and sp.simplify(rhs.subs(t, 0) - a0) == 0
            and sp.simplify(rhs.diff(t) - K * rhs ** (D - 1)) == 0)
    return out


@functools.lru_cache(maxsize=4)
def derive_ffn_flow(k: int) -> FFNFlowDerivation:
    """Leading potential and field for depth ``k >= 1`` (sympy matrix calculus) and the cheap checks (cached)."""
    if not isinstance(k, int) or k < 1 or k > 4:
        raise ConfigError("hidden", f"the derivation covers 1 to 4 hidden layers, got {k!r}")
    E, Ws, U, M = _matrix_symbols(k)
    potential = leading_coefficient.subs(depth, k) * sp.Trace(M.T * _product(U, Ws, E))
    fields = tuple(potential.diff(X) for X in (E, *Ws, U))
    checks: dict[str, bool] = {}
    # Field of the leading potential, checked entry by entry on explicit matrices against sympy.diff.
    Ex, Wxs, Ux, _ = _explicit_network(k)
    Mx = sp.Matrix(2, 2, lambda i, j: sp.Symbol(f"m_{i}{j}", real=True))
    subs = {E: Ex, U: Ux, M: Mx, **dict(zip(Ws, Wxs))}
    phi_x = sp.expand((c1**k * Mx.T * _product(Ux, Wxs, Ex)).trace())
    ok = True
    for X, Xx, fld in zip((E, *Ws, U), (Ex, *Wxs, Ux), fields):
        fx = sp.Matrix(fld.subs(subs).doit())
        ok &= all(sp.expand(sp.diff(phi_x, Xx[i, j]) - fx[i, j]) == 0
                  for i in range(Xx.shape[0]) for j in range(Xx.shape[1]))
    checks[f"depth {k}: matrix-calculus field of c1^k tr(M^T U W^T E) = entrywise derivatives"] = bool(ok)
    expansion_ok, orders = _activation_expansion_check(k)
    checks[f"depth {k}: z = c1^k U B_k c + sum_l (c2/2) c1^(k+l-2) U_(>l) (B_l c)^2 + O(c2^2, c3)"] = expansion_ok
    field_orders = {"leading": orders["leading"] - 1, "second_order": orders["second"] - 1,
                    "third_order": orders["third"] - 1, "softmax": 2 * orders["leading"] - 1}
    checks[f"depth {k}: orders in eps of the field: leading {k + 1}, curvature {k + 3}, softmax {2 * k + 3}"] = (
        field_orders["leading"] == k + 1 and field_orders["second_order"] == k + 3
        and field_orders["softmax"] == 2 * k + 3)
    failed = [name for name, good in checks.items() if not good]
    if failed:
        raise AssertionError(f"symbolic checks failed: {failed}")
    coefficients = tuple(second_order_coefficient.subs({depth: k, layer: ell}) for ell in range(1, k + 1))
    return FFNFlowDerivation(depth=k, symbols=(E, tuple(Ws), U, M), leading_potential=potential,
                             leading_field=fields, second_order_coefficients=coefficients,
                             field_orders=field_orders, checks=checks)


@functools.lru_cache(maxsize=1)
def verify_ffn_flow() -> dict[str, bool]:
    """Every symbolic check for depths 1 and 2 plus the loss expansion and the escape laws (a few seconds)."""
    checks: dict[str, bool] = {}
    for k in (1, 2):
        checks.update(derive_ffn_flow(k).checks)
    for vocab in (2, 3):
        checks[f"-log softmax(lam z)_y = log V - lam (e_y - u 1)^T z + O(lam^2), V = {vocab}"] = \
            _loss_expansion_check(vocab)
    checks.update(_escape_law_check())
    checks["t* = kappa / (c1^k sigma_1 eps^k); balanced aligned factors: kappa = 1 / (k atilde^k)"] = \
        _escape_constant_check()
    for name in ACTIVATION_EXPRESSIONS:
        k1, k2, _ = activation_coefficients(name)
        checks[f"{name}: sigma(0) = 0 and c1 = {k1}, c2 = {k2}"] = True
    failed = [name for name, good in checks.items() if not good]
    if failed:
        raise AssertionError(f"symbolic checks failed: {failed}")
    return checks
