"""The two-input MLP's small-initialisation flow as JAX functions (derivation: :mod:`.two_input_derivation`).

Parameters are ``{"U": (D, P_in), "V": (D, P_in), "W": (P_out, D)}`` (:meth:`TwoInputMLP.params`); flows are
``d theta / dt = field(theta)`` with ``t = steps x lr`` for full-batch gradient descent, weight decay ``lambda``
the coupled L2 of :class:`~probsig_jax.training.supervised.TrainConfig`.

- :func:`exact_field`: ``-grad (loss + lambda |theta|^2 / 2)`` (autodiff of the real network);
- :func:`proposition1_field`: ``grad Psi - lambda theta``, Psi the truncated potential with the derived
  coefficients, evaluated as an expectation over the rows (never forming a P^3 tensor);
- :func:`theorem1_field`: the dominant field through the joint signatures ``Phi_a, Phi_b, Psi``
  (``-lambda theta + c2 r [diag(V Phi W) - mean o mean]``), from any :class:`TwoInputSignatures`;
  :func:`theorem2_field` is the same with the full clean table's signatures and a factor ``1 - alpha``.

Fourier modes (addition mod P on the full table): :func:`mode_coefficient` gives ``C = c2 / P^2``,
:func:`blow_up_times` the undamped blow-up time ``s*`` of every (unit, frequency) mode from the conserved
quantities (a 1-D integral), :func:`blow_up_times_ode` the same by integrating the 3-variable system (the
independent check), :func:`predict_unit_frequencies` MODADD's Proposition 2.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from probsig_jax.data.dataset import Dataset
from probsig_jax.models.two_input_mlp import two_input_logits
from probsig_jax.signatures.two_input import TwoInputSignatures
from probsig_jax.theory import two_input_derivation as TD
from probsig_jax.training.losses import weighted_cross_entropy
from probsig_jax.validation import require, require_float


@functools.partial(jax.tree_util.register_dataclass, data_fields=["a", "b", "z", "weights", "c1", "c2",
                                                                  "weight_decay"],
                   meta_fields=["num_inputs", "num_classes", "activation"])
@dataclass(frozen=True)
class TwoInputTheory:
    """A data set as the flows use it (a pytree: jit-compiled functions take it as an argument).

    Attributes:
      a, b, z: (N,) int rows; weights: (N,) summing to 1; c1, c2: the activation's Taylor coefficients
      (derived by sympy); weight_decay: lambda; num_inputs, num_classes: P_in, P_out; activation: its name.
    """

    a: jax.Array
    b: jax.Array
    z: jax.Array
    weights: jax.Array
    c1: jax.Array
    c2: jax.Array
    weight_decay: jax.Array
    num_inputs: int
    num_classes: int
    activation: str

    @classmethod
    def from_dataset(cls, dataset: Dataset, num_inputs: int, num_classes: int, *, activation: str,
                     weight_decay: float = 0.0, dtype=jnp.float64) -> "TwoInputTheory":
        """Raises ConfigError(``activation``) for ReLU: the expansion needs sigma smooth at 0."""
        require(dataset.seq_len == 2, "dataset", f"needs inputs (N, 2), got length {dataset.seq_len}")
        require_float(weight_decay, "weight_decay", minimum=0.0)
        c1, c2, _ = TD.activation_coefficients(activation)
        return cls(jnp.asarray(dataset.inputs[:, 0]), jnp.asarray(dataset.inputs[:, 1]),
                   jnp.asarray(dataset.labels), jnp.asarray(dataset.sample_weights(), dtype),
                   jnp.asarray(c1, dtype), jnp.asarray(c2, dtype), jnp.asarray(weight_decay, dtype),
                   int(num_inputs), int(num_classes), activation)


def _decay(theory: TwoInputTheory, params):
    return jax.tree.map(lambda p: -theory.weight_decay * p, params)


def _add(a, b):
    return jax.tree.map(jnp.add, a, b)


def exact_loss(theory: TwoInputTheory, params) -> jax.Array:
    """Weighted cross-entropy of the network (without the L2 term)."""
    return weighted_cross_entropy(two_input_logits(params, theory.a, theory.b, theory.activation), theory.z,
                                  theory.weights)


@jax.jit
def exact_field(theory: TwoInputTheory, params):
    """``-grad loss - lambda theta``: the gradient-descent flow."""
    return _add(jax.tree.map(jnp.negative, jax.grad(exact_loss, argnums=1)(theory, params)), _decay(theory, params))


@functools.lru_cache(maxsize=4)
def _potential_coefficients():
    return sp.lambdify((TD.c1, TD.c2, TD.P_sym), TD.POTENTIAL_COEFFICIENTS, modules="jax")


def truncated_potential(theory: TwoInputTheory, params) -> jax.Array:
    """Psi = E[(e_Z - 1/P)^T W (k1 h + k2 h o h)] + k3 E[h^T W^T Pi W h] (coefficients from the derivation)."""
    k_lin, k_curv, k_soft = _potential_coefficients()(theory.c1, theory.c2, theory.num_classes)
    h_NxD = params["U"].T[theory.a] + params["V"].T[theory.b]
    feat_NxD = k_lin * h_NxD + k_curv * h_NxD**2
    Wf_NxP = feat_NxD @ params["W"].T
    label_term = jnp.take_along_axis(Wf_NxP, theory.z[:, None], axis=1)[:, 0] - Wf_NxP.mean(axis=1)
    Wh_NxP = h_NxD @ params["W"].T
    soft_term = jnp.sum(Wh_NxP**2, axis=1) - Wh_NxP.sum(axis=1) ** 2 / theory.num_classes   # h^T W^T Pi W h
    return jnp.sum(theory.weights * (label_term + k_soft * soft_term))


@jax.jit
def proposition1_field(theory: TwoInputTheory, params):
    """MODADD's Proposition 1: ``grad Psi - lambda theta`` (the flow up to O(eps^3))."""
    return _add(jax.grad(truncated_potential, argnums=1)(theory, params), _decay(theory, params))


def _dominant_field(sig: TwoInputSignatures, params, c2: float, weight_decay: float, factor: float = 1.0):
    U, V, W = params["U"], params["V"], params["W"]
    f = jnp.asarray
    mean_U, mean_V, mean_W = U.mean(axis=1), V.mean(axis=1), W.mean(axis=0)            # (D,)
    dU = f(sig.r_a) * (jnp.einsum("dy,xyz,zd->dx", V, f(sig.Phi_a), W) - (mean_V * mean_W)[:, None])
    dV = f(sig.r_b) * (jnp.einsum("dy,xyz,zd->dx", U, f(sig.Phi_b), W) - (mean_U * mean_W)[:, None])
    dW = f(sig.r_z)[:, None] * (jnp.einsum("dx,zxy,dy->zd", U, f(sig.Psi), V) - (mean_U * mean_V)[None, :])
    k = factor * c2
    return {"U": k * dU - weight_decay * U, "V": k * dV - weight_decay * V, "W": k * dW - weight_decay * W}


def theorem1_field(sig: TwoInputSignatures, params, c2: float, weight_decay: float = 0.0):
    """MODADD's Theorem 1 with the signatures ``sig`` of the training set (exact where every conditional is
    uniform; a truncation of Proposition 1 elsewhere)."""
    return _dominant_field(sig, params, c2, weight_decay)


def theorem2_field(full_table: TwoInputSignatures, params, c2: float, noise_ratio: float, weight_decay: float = 0.0):
    """MODADD's Theorem 2: Theorem 1 with the full clean table's signatures and the factor ``1 - alpha``."""
    require_float(noise_ratio, "noise_ratio", minimum=0.0, maximum=1.0)
    return _dominant_field(full_table, params, c2, weight_decay, factor=1.0 - noise_ratio)


# ----------------------------------------------------------------------------- Fourier modes

def mode_coefficient(c2: float, modulus: int, scale: float = 1.0) -> float:
    """``C = scale x c2 / P^2`` of the per-frequency system (``scale = 1 - alpha`` for Theorem 2)."""
    return scale * c2 / modulus**2


def mode_amplitudes(params) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(u, v, w)`` (D, R) complex: the unnormalised DFT ``sum_x u_x exp(-2 pi i r x / P)`` of each unit's
    ``U[d]``, ``V[d]``, ``W[:, d]`` at ``r = 1..R``, ``R = (P - 1) // 2``."""
    U, V, W = (np.asarray(params[k], dtype=np.float64) for k in ("U", "V", "W"))
    P = U.shape[1]
    R = (P - 1) // 2
    return tuple(np.fft.fft(X, axis=1)[:, 1:R + 1] for X in (U, V, W.T))


def _largest_root(A: np.ndarray, B: np.ndarray, I2: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """Largest real root of ``F(x) = x^3 - (A + B) x^2 + A B x - I^2`` (it lies in [max(0, A, B), x0])."""
    coeffs = np.stack([-(A + B), A * B, -I2], axis=-1)
    companion = np.zeros(A.shape + (3, 3))
    companion[..., 0, :] = -coeffs
    companion[..., 1, 0] = companion[..., 2, 1] = 1.0
    roots = np.linalg.eigvals(companion)
    scale = np.maximum(np.abs(x0), 1e-300)[..., None]
    real = np.where(np.abs(roots.imag) <= 1e-7 * scale, roots.real, -np.inf).max(axis=-1)
    lo = np.maximum(np.maximum(A, B), 0.0)
    x = np.clip(real, lo, x0)
    for _ in range(3):        # Newton polish of the eigenvalue root
        F = x * (x - A) * (x - B) - I2
        dF = 3 * x**2 - 2 * (A + B) * x + A * B
        step = np.where(np.abs(dF) > 0, F / np.where(dF == 0, 1.0, dF), 0.0)
        x = np.clip(x - step, lo, x0)
    return x


def blow_up_times(u: np.ndarray, v: np.ndarray, w: np.ndarray, nodes: int = 200) -> np.ndarray:
    """Undamped blow-up time ``s*`` of ``du/ds = conj(v) w, dv/ds = conj(u) w, dw/ds = u v`` for every mode.

    With ``x = |u|^2``, ``A = |u|^2 - |v|^2``, ``B = |u|^2 - |w|^2``, ``I = Im(u v conj w)`` conserved and
    ``F(x) = x (x - A)(x - B) - I^2 = Re(u v conj w)^2``, ``dx/ds = 2 Re(u v conj w)``: x first falls to the
    largest root ``x_m`` of F if ``Re < 0``, then grows to infinity. With ``x = x_m + y^2`` and ``F = (x - x_m) G``,
    ``s* = int_{y0}^inf dy / sqrt(G)`` if ``Re >= 0``, else ``int_0^inf + int_0^{y0}``, ``y0 = sqrt(x0 - x_m)``;
    Gauss-Legendre quadrature (``nodes`` points), the infinite range after ``y = y_start + c tan(pi theta / 2)``.

    Args: u, v, w: complex arrays of one shape (e.g. (D, R)). Returns float64 of that shape (inf where all
    three amplitudes are 0).
    """
    u, v, w = (np.asarray(q, dtype=np.complex128) for q in (u, v, w))
    require(u.shape == v.shape == w.shape, "u, v, w", f"must share one shape, got {u.shape}, {v.shape}, {w.shape}")
    x0 = np.abs(u) ** 2
    A, B = x0 - np.abs(v) ** 2, x0 - np.abs(w) ** 2
    Q = u * v * np.conj(w)
    I2, Re = Q.imag**2, Q.real
    x_m = _largest_root(A, B, I2, x0)

    lin, const = (x_m - A - B)[..., None], (x_m**2 - (A + B) * x_m + A * B)[..., None]

    def G(x):  # F(x) / (x - x_m), a quadratic; x has a trailing quadrature axis
        return x**2 + lin * x + const

    theta, weights = np.polynomial.legendre.leggauss(nodes)
    theta, weights = (theta + 1) / 2, weights / 2                      # on [0, 1]
    scale = np.sqrt(np.maximum(np.maximum(np.abs(x_m), np.abs(A)), np.maximum(np.abs(B), x0)))
    scale = np.where(scale > 0, scale, 1.0)[..., None]
    y0 = np.sqrt(np.maximum(x0 - x_m, 0.0))[..., None]

    def tail(start):           # int_start^inf dy / sqrt(G), with y = start + scale tan(pi theta / 2)
        y = start + scale * np.tan(np.pi * theta / 2)
        dy = scale * (np.pi / 2) / np.cos(np.pi * theta / 2) ** 2
        return np.sum(weights * dy / np.sqrt(G(x_m[..., None] + y**2)), axis=-1)

    with np.errstate(divide="ignore", invalid="ignore"):
        head = np.sum(weights * y0 / np.sqrt(G(x_m[..., None] + (y0 * theta) ** 2)), axis=-1)   # int_0^y0
        # Re >= 0: x grows from x0 at once; Re < 0: down to x_m and back (F's double root there: never, inf).
        s = np.where(Re >= 0, tail(y0), tail(np.zeros_like(y0)) + head)
    return np.where(x0 + np.abs(v) ** 2 + np.abs(w) ** 2 > 0, s, np.inf)


def blow_up_times_ode(u: np.ndarray, v: np.ndarray, w: np.ndarray, *, growth: float = 1e8) -> np.ndarray:
    """``s*`` by integrating the 3-variable system (diffrax, every mode at once) until ``|u|^2`` exceeds ``growth``
    times its largest starting value, plus the tail ``int_X^inf dx / (2 x^(3/2)) = X^(-1/2)``. The check of
    :func:`blow_up_times`; slower."""
    import diffrax

    from probsig_jax.theory.ode import solve_until

    shape = np.shape(u)
    u, v, w = (np.asarray(q, dtype=np.complex128).ravel() for q in (u, v, w))
    scale = np.maximum.reduce([np.abs(u), np.abs(v), np.abs(w)]) ** 2
    stop = growth * scale

    def one(y0, x_stop):
        def field(s, y, args):
            u_, v_, w_ = y[0] + 1j * y[1], y[2] + 1j * y[3], y[4] + 1j * y[5]
            du, dv, dw = jnp.conj(v_) * w_, jnp.conj(u_) * w_, u_ * v_
            return jnp.stack([du.real, du.imag, dv.real, dv.imag, dw.real, dw.imag])

        cond = lambda s, y, args, **kw: y[0] ** 2 + y[1] ** 2 - x_stop  # noqa: E731
        sol = solve_until(field, y0, jnp.inf, cond, saveat=diffrax.SaveAt(t1=True), rtol=1e-10, atol=1e-14,
                          max_steps=100_000)
        x_end = sol.ys[0, 0] ** 2 + sol.ys[0, 1] ** 2
        return sol.ts[0] + 1.0 / jnp.sqrt(x_end)

    y0 = np.stack([u.real, u.imag, v.real, v.imag, w.real, w.imag], axis=1)
    out = jax.jit(jax.vmap(one))(jnp.asarray(y0), jnp.asarray(stop))
    return np.asarray(out).reshape(shape)


def predict_unit_frequencies(params, C: float, weight_decay: float = 0.0) -> dict[str, np.ndarray]:
    """MODADD's Proposition 2 for every unit, from the initialisation alone.

    Returns ``frequency`` (D,) in 1..R (``argmin_r s_r*``), ``s_min`` (D,), ``alive`` (D,) bool (``s_min < C /
    lambda``; all True without weight decay), ``blow_up_s`` (D, R) and ``blow_up_t`` (D, R): the time in the
    flow's units (``s / C`` undamped, ``-log(1 - lambda s / C) / lambda`` damped; inf when never).
    """
    require_float(C, "C", minimum=0.0, strict_minimum=True)
    require_float(weight_decay, "weight_decay", minimum=0.0)
    s = blow_up_times(*mode_amplitudes(params))
    s_min = s.min(axis=1)
    if weight_decay > 0:
        s_limit = C / weight_decay
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.where(s < s_limit, -np.log1p(-np.minimum(s / s_limit, 1.0)) / weight_decay, np.inf)
        alive = s_min < s_limit
    else:
        t, alive = s / C, np.ones(s.shape[0], bool)
    return {"frequency": s.argmin(axis=1) + 1, "s_min": s_min, "alive": alive, "blow_up_s": s, "blow_up_t": t}


# ----------------------------------------------------------------------------- field estimates along training

BLOCKS = ("U", "V", "W")


def _cosine(a, b) -> jax.Array:
    return jnp.vdot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b))


def field_cosines(theory: TwoInputTheory, train_sig: TwoInputSignatures, full_sig: TwoInputSignatures,
                  params_T: dict, noise_ratio: float) -> dict[str, dict[str, np.ndarray]]:
    """Cosine of each estimate with the true flow ``-grad loss - lambda theta`` at every record of a run.

    Args: params_T: ``{"U": (T, D, P_in), "V": (T, D, P_in), "W": (T, P_out, D)}``; the estimates are
    ``proposition1`` (:func:`proposition1_field`), ``theorem1`` (with ``train_sig``), ``theorem2`` (with the full
    clean table's ``full_sig`` and ``1 - noise_ratio``), all with ``theory.weight_decay``.
    Returns ``estimate -> {"U", "V", "W", "overall"} -> (T,)``.
    """
    c2, lam = theory.c2, theory.weight_decay

    def one(p):
        true = exact_field(theory, p)
        estimates = {"proposition1": proposition1_field(theory, p),
                     "theorem1": _dominant_field(train_sig, p, c2, lam),
                     "theorem2": _dominant_field(full_sig, p, c2, lam, factor=1.0 - noise_ratio)}
        flat = lambda t: jnp.concatenate([t[k].ravel() for k in BLOCKS])  # noqa: E731
        return {name: {**{k: _cosine(est[k], true[k]) for k in BLOCKS}, "overall": _cosine(flat(est), flat(true))}
                for name, est in estimates.items()}

    out = jax.lax.map(one, jax.tree.map(jnp.asarray, params_T))
    return jax.tree.map(np.asarray, out)
