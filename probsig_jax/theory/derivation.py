"""Symbolic derivation (sympy) of the linear model's gradient flow, PAPER section 4.

:func:`derive_linear_flow` builds every expression the theory uses and runs the
symbolic checks that tie them together:

1. the gradient of the softmax cross-entropy loss, differentiated entry by entry
   on an explicit small model, equals the matrix formula ``-U^T (e_y - p) c^T``;
2. the small-initialisation expansion of the softmax around the uniform
   distribution (first and second order) and the resulting next-order gradient matrix;
3. the closed form of the linearised flow: the exponential of one singular mode's
   2x2 block, its ODE check, and a check that the assembled matrix closed form
   solves ``dA/dt = M^T B, dB/dt = M A`` for an explicit rank-2 ``M = P S Q^T``;
4. the expected embedding Gram under isotropic initialisation and the escape time.

Matrix expressions use ``MatrixSymbol`` and are turned into JAX functions by
:mod:`probsig_jax.theory.compiled`; the write-up in ``theory/`` is generated from
the same objects (:mod:`probsig_jax.theory.writeup`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import sympy as sp

# Dimension symbols: N samples, V vocabulary (labels), F input features, d width, r rank.
N, V, F, d, r = sp.symbols("N V F d r", integer=True, positive=True)
t, sigma, eps, theta = sp.symbols("t sigma epsilon theta", positive=True)
u = sp.Symbol("u", positive=True)  # 1 / V

# Matrix symbols with the theory's shapes.
E = sp.MatrixSymbol("E", d, F)          # embedding
U = sp.MatrixSymbol("U", V, d)          # unembedding
G = sp.MatrixSymbol("G", V, F)          # gradient matrix E[(e_Y - p) c^T]
M = sp.MatrixSymbol("M", V, F)          # signature matrix E[(e_Y - u 1) c^T]
Yw = sp.MatrixSymbol("Y_w", N, V)       # one-hot labels, rows scaled by the sample weights
Pw = sp.MatrixSymbol("P_w", N, V)       # softmax probabilities, rows scaled by the sample weights
C = sp.MatrixSymbol("C", N, F)          # feature counts c(x_i)
Sigma = sp.MatrixSymbol("Sigma_c", F, F)  # E[c c^T]
ones = sp.MatrixSymbol("one", V, 1)     # all-ones column
A0 = sp.MatrixSymbol("A_0", F, d)       # E(0)^T
B0 = sp.MatrixSymbol("B_0", V, d)       # U(0)
Qr = sp.MatrixSymbol("Q", F, r)         # right singular vectors of M
Pr = sp.MatrixSymbol("P", V, r)         # left singular vectors of M
dA = sp.MatrixSymbol("Delta_A", r, d)   # change of the mode coordinates Q^T A
dB = sp.MatrixSymbol("Delta_B", r, d)


@dataclass(frozen=True)
class LinearFlowDerivation:
    """Every expression of the linear theory plus the symbolic checks that were run.

    ``checks`` maps a description to True; :func:`derive_linear_flow` raises if
    any check fails, so holding an instance means the derivation went through.
    """

    loss_scalar: sp.Expr
    loss_gradient_E: sp.MatrixExpr
    loss_gradient_U: sp.MatrixExpr
    gradient_matrix: sp.MatrixExpr
    flow_E: sp.MatrixExpr
    flow_U: sp.MatrixExpr
    softmax_first_order: sp.Expr
    softmax_second_order: sp.Expr
    next_order_gradient_matrix: sp.MatrixExpr
    mode_generator: sp.ImmutableMatrix
    mode_propagator: sp.ImmutableMatrix
    mode_update_a: sp.Expr
    mode_update_b: sp.Expr
    closed_form_A: sp.MatrixExpr
    closed_form_B: sp.MatrixExpr
    closed_form_A_matrix: sp.MatrixExpr
    closed_form_assembly_A: sp.MatrixExpr
    closed_form_assembly_B: sp.MatrixExpr
    expected_mode_gram: sp.Expr
    expected_mode_gram_series: sp.Expr
    expected_product_amplitude: sp.Expr
    escape_time: sp.Expr
    mode_scalars: tuple = field(default=())
    checks: dict = field(default_factory=dict)


def _explicit_gradient_check(vocab: int = 3, width: int = 2) -> bool:
    """Differentiate the loss of one sample entry by entry and compare with the matrix formula."""
    Ex = sp.Matrix(width, vocab, lambda i, j: sp.Symbol(f"e_{i}{j}", real=True))
    Ux = sp.Matrix(vocab, width, lambda i, j: sp.Symbol(f"w_{i}{j}", real=True))
    cx = sp.Matrix(vocab, 1, lambda i, _: sp.Symbol(f"c_{i}", real=True))
    ok = True
    for label in range(vocab):
        z = Ux * Ex * cx
        expz = [sp.exp(z[k]) for k in range(vocab)]
        p = sp.Matrix(vocab, 1, [e / sum(expz) for e in expz])
        loss = -sp.log(p[label])
        ey = sp.Matrix(vocab, 1, lambda k, _: 1 if k == label else 0)
        grad_E = -Ux.T * (ey - p) * cx.T
        grad_U = -(ey - p) * (Ex * cx).T
        for i in range(width):
            for j in range(vocab):
                ok &= sp.simplify(sp.diff(loss, Ex[i, j]) - grad_E[i, j]) == 0
                ok &= sp.simplify(sp.diff(loss, Ux[j, i]) - grad_U[j, i]) == 0
    return bool(ok)


def _softmax_expansion_check(vocab: int) -> bool:
    """Series of softmax(eps z) to second order equals u[1 + eps w + eps^2/2 (w^2 - mean w^2)], w = z - mean z."""
    zs = sp.symbols(f"z0:{vocab}", real=True)
    mean = sum(zs) / vocab
    mean_sq = sum((zj - mean) ** 2 for zj in zs) / vocab
    ok = True
    for j in range(vocab):
        p = sp.exp(eps * zs[j]) / sum(sp.exp(eps * zk) for zk in zs)
        series = sp.series(p, eps, 0, 3).removeO()
        w = zs[j] - mean
        predicted = sp.Rational(1, vocab) * (1 + eps * w + eps**2 / 2 * (w**2 - mean_sq))
        ok &= sp.simplify(sp.expand(series - predicted)) == 0
    return bool(ok)


def _closed_form_solves_ode_check() -> bool:
    """Assemble the closed form for an explicit rank-2 M = P S Q^T (rotations P, Q) and check the ODE."""
    al, be = sp.symbols("alpha beta", real=True)
    s1, s2 = sp.symbols("sigma_1 sigma_2", positive=True)
    P = sp.Matrix([[sp.cos(al), -sp.sin(al)], [sp.sin(al), sp.cos(al)]])
    Q = sp.Matrix([[sp.cos(be), -sp.sin(be)], [sp.sin(be), sp.cos(be)]])
    S = sp.diag(s1, s2)
    Mx = P * S * Q.T
    a0 = sp.Matrix(sp.symbols("a1 a2", real=True))
    b0 = sp.Matrix(sp.symbols("b1 b2", real=True))
    Ch = sp.diag(sp.cosh(s1 * t), sp.cosh(s2 * t))
    Sh = sp.diag(sp.sinh(s1 * t), sp.sinh(s2 * t))
    I2 = sp.eye(2)
    A = a0 + Q * (Ch - I2) * Q.T * a0 + Q * Sh * P.T * b0
    B = b0 + P * (Ch - I2) * P.T * b0 + P * Sh * Q.T * a0
    resA = sp.simplify(sp.trigsimp(A.diff(t) - Mx.T * B))
    resB = sp.simplify(sp.trigsimp(B.diff(t) - Mx * A))
    at0 = sp.simplify(A.subs(t, 0) - a0), sp.simplify(B.subs(t, 0) - b0)
    return resA == sp.zeros(2, 1) and resB == sp.zeros(2, 1) and at0 == (sp.zeros(2, 1), sp.zeros(2, 1))


def _softmax_jacobian_coefficients(vocabs: tuple[int, ...] = (3, 5)) -> tuple[sp.Expr, sp.Expr]:
    """``(a, b)`` with ``d softmax(z) / dz |_{z=0} = a u I + b u^2 1 1^T`` (``u = 1 / V``), read off the sympy
    Jacobian of an explicit softmax for each V in ``vocabs`` (they must agree; raises otherwise)."""
    found = set()
    for vocab in vocabs:
        zs = sp.symbols(f"z0:{vocab}", real=True)
        soft = [sp.exp(zj) / sum(sp.exp(zk) for zk in zs) for zj in zs]
        at0 = {z: 0 for z in zs}
        diag, off = (sp.simplify(sp.diff(soft[0], zs[j]).subs(at0)) for j in (0, 1))
        uv = sp.Rational(1, vocab)
        b = sp.simplify(off / uv**2)
        a = sp.simplify((diag - b * uv**2) / uv)
        found.add((a, b))
    if len(found) != 1:
        raise AssertionError(f"softmax Jacobian coefficients differ between vocabularies: {found}")
    return found.pop()


def _next_order_from_softmax_series_check(vocab: int = 3, features: int = 2, width: int = 2) -> bool:
    """The next-order gradient matrix is the softmax series of the exact one, not a typed-in formula.

    On an explicit model with two weighted samples, the exact ``G = sum_i w_i (e_{y_i} - softmax(lam U E c_i))
    c_i^T`` is expanded in the logit scale ``lam`` to first order and compared entry by entry with
    ``next_order_gradient_matrix`` evaluated at ``U -> lam U`` (``M = sum_i w_i (e_{y_i} - u 1) c_i^T``,
    ``Sigma_c = sum_i w_i c_i c_i^T``, ``u = 1 / V``)."""
    lam = sp.Symbol("lambda", positive=True)
    Ex = sp.Matrix(width, features, lambda i, j: sp.Symbol(f"e_{i}{j}", real=True))
    Ux = sp.Matrix(vocab, width, lambda i, j: sp.Symbol(f"w_{i}{j}", real=True))
    samples = [(sp.Matrix(features, 1, lambda k, _: sp.Symbol(f"c{n}_{k}", real=True)), n % vocab,
                sp.Symbol(f"omega_{n}", positive=True)) for n in range(2)]
    one_x = sp.ones(vocab, 1)
    uu = sp.Rational(1, vocab)
    G_exact = sp.zeros(vocab, features)
    M_x = sp.zeros(vocab, features)
    Sigma_x = sp.zeros(features, features)
    for c, label, weight in samples:
        z = lam * Ux * Ex * c
        expz = [sp.exp(z[k]) for k in range(vocab)]
        p = sp.Matrix(vocab, 1, [e / sum(expz) for e in expz])
        ey = sp.Matrix(vocab, 1, lambda k, _: 1 if k == label else 0)
        G_exact += weight * (ey - p) * c.T
        M_x += weight * (ey - uu * one_x) * c.T
        Sigma_x += weight * c * c.T
    G_series = G_exact.applyfunc(lambda g: sp.series(g, lam, 0, 2).removeO())
    nxt = derive_linear_flow().next_order_gradient_matrix.subs(
        {M: M_x, U: lam * Ux, E: Ex, Sigma: Sigma_x, u: uu, ones: one_x}).doit()
    return all(sp.simplify(sp.expand(G_series[i, j] - sp.Matrix(nxt)[i, j])) == 0
               for i in range(vocab) for j in range(features))


@functools.lru_cache(maxsize=1)
def derive_linear_flow() -> LinearFlowDerivation:
    """Build every expression and run the cheap symbolic checks (about a second; cached).

    The expensive checks (explicit gradient, softmax series, closed form against the
    ODE) run in :func:`verify_linear_flow`.
    """
    checks: dict[str, bool] = {}

    # 1. Loss and its gradient. One sample: l = -log softmax(U E c)_y; averaged over the data
    # with weights w_i this gives grad_E L = -U^T G, grad_U L = -G E^T with G = E[(e_Y - p) c^T].
    zy, lse = sp.symbols("z_y logsumexp_z", real=True)
    loss_scalar = -(zy - lse)
    gradient_matrix = (Yw - Pw).T * C
    loss_gradient_E = -U.T * G
    loss_gradient_U = -G * E.T
    flow_E = U.T * G
    flow_U = G * E.T

    # 2. Small initialisation: softmax around uniform.
    zsym, zbar, zsq = sp.symbols("z_j zbar mean_w2", real=True)
    softmax_first_order = u * (1 + (zsym - zbar))
    softmax_second_order = u * (1 + (zsym - zbar) + ((zsym - zbar) ** 2 - zsq) / 2)
    # G = E[(e_Y - u1) c^T] - E[(p - u1) c^T] ~ M - J U E E[c c^T], J = d softmax / dz at z = 0. J is derived
    # here, not typed in: its entries for an explicit V are matched to a u I + b u^2 1 1^T (u = 1 / V).
    jac_identity, jac_ones = _softmax_jacobian_coefficients()
    checks["softmax Jacobian at z = 0 is u I - u^2 1 1^T (entries derived for V = 3 and 5)"] = \
        (jac_identity, jac_ones) == (1, -1)
    X = U * E * Sigma
    next_order_gradient_matrix = M - jac_identity * u * X - jac_ones * u**2 * ones * ones.T * X

    # 3. Closed form of dA/dt = M^T B, dB/dt = M A (A = E^T, B = U). In the SVD basis M = P S Q^T
    # each singular value sigma couples (q^T A, p^T B) through the block [[0, sigma], [sigma, 0]].
    generator = sp.ImmutableMatrix([[0, sigma], [sigma, 0]])
    propagator = sp.ImmutableMatrix(sp.simplify((generator * t).exp().applyfunc(lambda e: e.rewrite(sp.cosh))))
    checks["mode propagator exp(t [[0,s],[s,0]]) = [[cosh st, sinh st], [sinh st, cosh st]]"] = \
        sp.simplify(propagator - sp.Matrix([[sp.cosh(sigma * t), sp.sinh(sigma * t)],
                                            [sp.sinh(sigma * t), sp.cosh(sigma * t)]])) == sp.zeros(2, 2)
    checks["mode propagator solves d/dt Phi = K Phi, Phi(0) = I"] = (
        sp.simplify(propagator.diff(t) - generator * propagator) == sp.zeros(2, 2)
        and propagator.subs(t, 0) == sp.eye(2))
    a0s, b0s = sp.symbols("a_0 b_0", real=True)
    mode_vec = propagator * sp.Matrix([a0s, b0s])
    mode_update_a, mode_update_b = sp.simplify(mode_vec[0]), sp.simplify(mode_vec[1])
    Ch = sp.MatrixSymbol("C_h", r, r)  # diag(cosh(sigma_k t))
    Sh = sp.MatrixSymbol("S_h", r, r)  # diag(sinh(sigma_k t))
    Ir = sp.Identity(r)
    closed_form_A = A0 + Qr * (Ch - Ir) * Qr.T * A0 + Qr * Sh * Pr.T * B0
    closed_form_B = B0 + Pr * (Ch - Ir) * Pr.T * B0 + Pr * Sh * Qr.T * A0
    # The same form, evaluated mode by mode: A(t) = A0 + Q [a(t) - a(0)] with a = Q^T A (cheaper: no V x V products).
    closed_form_assembly_A = A0 + Qr * dA
    closed_form_assembly_B = B0 + Pr * dB
    closed_form_A_matrix = Qr * (Ch - Ir) * Qr.T * A0 + Qr * Sh * Pr.T * B0

    # 4. Isotropic init: entries of A0, B0 i.i.d. N(0, eps^2). Per mode and per width coordinate
    # E[a(t)^2] = eps^2 (cosh^2 + sinh^2) = eps^2 cosh(2 sigma t); so
    # E[A A^T] = eps^2 d [I + Q (cosh(2 S t) - I) Q^T].
    expected_mode_gram = sp.simplify((mode_update_a**2).subs(a0s * b0s, 0).expand()
                                     .subs({a0s**2: eps**2, b0s**2: eps**2}).subs(a0s * b0s, 0))
    expected_mode_gram = sp.simplify(expected_mode_gram.rewrite(sp.exp)).rewrite(sp.cosh)
    checks["E[a(t)^2] = eps^2 cosh(2 sigma t) for independent a0, b0 ~ N(0, eps^2)"] = \
        sp.simplify((expected_mode_gram - eps**2 * sp.cosh(2 * sigma * t)).rewrite(sp.exp)) == 0
    expected_mode_gram_series = sp.series(expected_mode_gram / eps**2, t, 0, 4).removeO()
    # Leading singular value of U E: the mode product a(t).b(t) summed over the d coordinates;
    # its expectation is eps^2 d sinh(2 sigma t). Escape time: when it reaches theta.
    amp = sp.expand(mode_update_a * mode_update_b)
    expected_amp = d * amp.subs(a0s * b0s, 0).subs({a0s**2: eps**2, b0s**2: eps**2})
    expected_amp = sp.simplify(expected_amp.rewrite(sp.exp)).rewrite(sp.sinh)
    checks["E[a(t) . b(t)] = eps^2 d sinh(2 sigma t)"] = \
        sp.simplify((expected_amp - eps**2 * d * sp.sinh(2 * sigma * t)).rewrite(sp.exp)) == 0
    escape = sp.asinh(theta / (eps**2 * d)) / (2 * sigma)
    checks["escape time solves E[a.b](t*) = theta"] = \
        sp.simplify(expected_amp.subs(t, escape) - theta) == 0

    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        raise AssertionError(f"symbolic checks failed: {failed}")
    return LinearFlowDerivation(
        loss_scalar=loss_scalar, loss_gradient_E=loss_gradient_E, loss_gradient_U=loss_gradient_U,
        gradient_matrix=gradient_matrix, flow_E=flow_E, flow_U=flow_U,
        softmax_first_order=softmax_first_order, softmax_second_order=softmax_second_order,
        next_order_gradient_matrix=next_order_gradient_matrix,
        mode_generator=generator, mode_propagator=propagator,
        mode_update_a=mode_update_a, mode_update_b=mode_update_b,
        closed_form_A=closed_form_A, closed_form_B=closed_form_B, closed_form_A_matrix=closed_form_A_matrix,
        closed_form_assembly_A=closed_form_assembly_A, closed_form_assembly_B=closed_form_assembly_B,
        expected_mode_gram=expected_mode_gram, expected_mode_gram_series=expected_mode_gram_series,
        expected_product_amplitude=expected_amp, escape_time=escape,
        mode_scalars=(sigma, t, a0s, b0s), checks=checks)


@functools.lru_cache(maxsize=1)
def verify_linear_flow() -> dict[str, bool]:
    """All symbolic checks of the derivation (about 15 s; cached). Raises AssertionError on failure."""
    checks = dict(derive_linear_flow().checks)
    checks["d loss / dE_ij and d loss / dU_ij equal -U^T (e_y - p) c^T and -(e_y - p) (E c)^T (V=3, d=2)"] = \
        _explicit_gradient_check()
    for vocab in (2, 3, 4):
        checks[f"softmax(eps z) = u[1 + eps w + eps^2 (w^2 - <w^2>)/2] + O(eps^3), V={vocab}"] = \
            _softmax_expansion_check(vocab)
    checks["next-order gradient matrix = first-order softmax series of the exact G (V=3, F=2, d=2, 2 samples)"] = \
        _next_order_from_softmax_series_check()
    checks["closed form A(t), B(t) solves the linearised flow for rank-2 M = P S Q^T, A(0)=A0, B(0)=B0"] = \
        _closed_form_solves_ode_check()
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        raise AssertionError(f"symbolic checks failed: {failed}")
    return checks
