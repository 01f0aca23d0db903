"""The Emb-MLP's small-initialisation gradient flow as JAX functions (derivation: :mod:`.ffn_derivation`).

Parameters are a pytree ``{"E": (d, F), "W": ((d, n_1), ..., (n_{k-1}, n_k)), "U": (V, n_k)}`` in the layout of
:class:`~probsig_jax.models.ffn.FeedForwardModel` without biases (``FeedForwardModel.weight_tree()``), inputs
are summed token embeddings (F = V features). Flows are ``d theta / dt = field(theta)`` with ``t = steps x lr``
for full-batch gradient descent:

- ``"exact"``: ``-grad loss`` of the network (JAX autodiff);
- ``"leading"``: ``grad Phi_1``, the sympy matrix-calculus field of ``c1^k tr(M^T U W_k^T ... W_1^T E)``,
  lambdified (data through the signature matrix M only);
- ``"second_order"``: the leading field plus ``grad Phi_2``, the curvature (c2) term, whose data dependence is
  the third moment ``T = E[c c (e_Y - u 1)]`` built from the joint signature (:func:`joint_moment_tensor`);
  it is evaluated as the same expectation over the samples (:func:`second_order_potential`), which never
  forms the (F, F, V) tensor; :func:`second_order_potential_from_joint` is the tensor form (tested equal).

Use float64 and ``highest`` matmul precision (:func:`probsig_jax.numerics.numerics`) when comparing with training.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optimistix
import sympy as sp

from probsig_jax.data.dataset import Dataset
from probsig_jax.models.ffn import ACTIVATIONS
from probsig_jax.signatures import joint_signature, signature_matrix
from probsig_jax.theory import ffn_derivation as FD
from probsig_jax.theory.linear import FlowData
from probsig_jax.theory.ode import solve_flow, solve_until
from probsig_jax.validation import ConfigError, require, require_float

FlowOrder = Literal["exact", "leading", "second_order"]
FLOW_ORDERS = ("exact", "leading", "second_order")
BLOCKS_NOTE = "blocks are E, W_1..W_k, U"
#: Default tolerances of :func:`integrate` (diffrax PID controller); float64 trajectories.
FLOW_RTOL, FLOW_ATOL = 1e-10, 1e-14


@functools.lru_cache(maxsize=8)
def compiled_leading_field(depth: int):
    """``(E, W_1..W_k, U, M, c1) -> (dE/dt, dW_1/dt, ..., dU/dt)``, lambdified from :func:`derive_ffn_flow`."""
    der = FD.derive_ffn_flow(depth)
    E, Ws, U, M = der.symbols
    return sp.lambdify((E, *Ws, U, M, FD.c1), der.leading_field, modules="jax", cse=True)


@functools.lru_cache(maxsize=8)
def compiled_second_order_coefficients(depth: int):
    """``(c1, c2) -> (coef_1, ..., coef_k)``, the layer coefficients (c2/2) c1^(k+l-2), lambdified."""
    der = FD.derive_ffn_flow(depth)
    return sp.lambdify((FD.c1, FD.c2), der.second_order_coefficients, modules="jax")


@functools.partial(jax.tree_util.register_dataclass, data_fields=["data", "M", "c1", "c2"],
                   meta_fields=["depth", "activation"])
@dataclass(frozen=True)
class FFNTheory:
    """What the truncated flows of one data set and activation need (a pytree: the arrays are leaves, so it is
    passed to compiled solves as data).

    Attributes:
      data: feature ids (N, L), labels (N,), normalised sample weights (N,).
      M: (V, F) signature matrix E[(e_Y - u 1) c^T].
      depth: number of hidden layers k.
      activation: name in :data:`~probsig_jax.models.ffn.ACTIVATIONS` (smooth: tanh or gelu).
      c1, c2: sigma'(0), sigma''(0), from sympy's series of the activation.
    """

    data: FlowData
    M: jax.Array
    depth: int
    activation: str
    c1: float
    c2: float

    @classmethod
    def from_dataset(cls, dataset: Dataset, *, activation: str, depth: int, dtype=jnp.float64) -> "FFNTheory":
        require(isinstance(dataset, Dataset), "dataset", f"must be a Dataset, got {type(dataset).__name__}")
        c1, c2, _ = FD.activation_coefficients(activation)
        require(isinstance(depth, int) and 1 <= depth <= 4, "hidden", f"theory covers 1 to 4 hidden layers, got {depth!r}")
        data = FlowData.from_dataset(dataset, False, dtype=dtype)
        M = jnp.asarray(signature_matrix(dataset), dtype=dtype)
        return cls(data, M, depth, activation, float(c1), float(c2))

    @property
    def sigma_1(self) -> float:
        """Leading singular value of M."""
        return float(np.linalg.svd(np.asarray(self.M), compute_uv=False)[0])


def check_params(params, theory: FFNTheory) -> None:
    """ConfigError naming the bad entry when ``params`` does not fit ``theory`` (shapes, depth)."""
    require(isinstance(params, dict) and set(params) == {"E", "W", "U"}, "params",
            "must be a dict with keys E, W, U (FeedForwardModel.weight_tree())")
    V, F = theory.M.shape
    require(len(params["W"]) == theory.depth, "params.W", f"must hold {theory.depth} hidden weight matrices")
    require(params["E"].shape[1] == F, "params.E", f"must have shape (d, {F}), got {params['E'].shape}")
    require(params["U"].shape[0] == V, "params.U", f"must have shape ({V}, n_k), got {params['U'].shape}")


# ----------------------------------------------------------------------------- the network and its exact flow

def ffn_logits(params, feature_ids_NxL: jax.Array, activation: str) -> jax.Array:
    """(N, V) logits of the bias-free Emb-MLP with summed embeddings."""
    act = ACTIVATIONS[activation]
    h = jnp.take(params["E"].T, feature_ids_NxL, axis=0).sum(axis=1)
    for W in params["W"]:
        h = act(h @ W)
    return h @ params["U"].T


def exact_loss(theory: FFNTheory, params) -> jax.Array:
    """Weighted cross-entropy of the network on the theory's data."""
    logp = jax.nn.log_softmax(ffn_logits(params, theory.data.feature_ids, theory.activation), axis=-1)
    return -jnp.sum(theory.data.weights * jnp.take_along_axis(logp, theory.data.labels[:, None], axis=1)[:, 0])


def exact_field(theory: FFNTheory, params):
    """``-grad loss``: the gradient flow that full-batch gradient descent discretises."""
    return jax.tree.map(jnp.negative, jax.grad(lambda p: exact_loss(theory, p))(params))


# ----------------------------------------------------------------------------- truncated flows

def leading_field(theory: FFNTheory, params):
    """``grad Phi_1``: for one hidden layer ``(c1 W U^T M, c1 E M^T U, c1 M E^T W)``."""
    out = compiled_leading_field(theory.depth)(params["E"], *params["W"], params["U"], theory.M, theory.c1)
    return {"E": out[0], "W": tuple(out[1:-1]), "U": out[-1]}


def _layer_maps(params):
    """``[(B_l (n_l, F), U_{>l} (V, n_l)) for l = 1..k]``."""
    Ws = params["W"]
    B, out = params["E"], []
    for ell, W in enumerate(Ws, start=1):
        B = W.T @ B
        U_after = params["U"]
        for W_later in reversed(Ws[ell:]):
            U_after = U_after @ W_later.T
        out.append((B, U_after))
    return out


def second_order_potential(theory: FFNTheory, params) -> jax.Array:
    """``Phi_2 = sum_l coef_l E[(e_Y - u 1)^T U_{>l} (B_l c(X))^{o2}]``, as an average over the samples."""
    coefs = compiled_second_order_coefficients(theory.depth)(theory.c1, theory.c2)
    total = 0.0
    for coef, (B, U_after) in zip(coefs, _layer_maps(params)):
        h_NxN = jnp.take(B.T, theory.data.feature_ids, axis=0).sum(axis=1)          # (N, n_l)
        centred_NxN = jnp.take(U_after, theory.data.labels, axis=0) - U_after.mean(axis=0)
        total = total + coef * jnp.sum(theory.data.weights * jnp.sum(centred_NxN * h_NxN**2, axis=1))
    return total


def joint_moment_tensor(dataset: Dataset) -> np.ndarray:
    """(F, F, V) ``T[s, r, y] = E[c_s c_r (1{Y=y} - u)] = f_s (J_s (I - u 1 1^T))[r, y]`` from the joint
    signatures ``J_s`` (:func:`~probsig_jax.signatures.joint_signature`) and frequencies ``f_s = E[c_s]``.

    Exact as written when every token occurs at most once per input (the J of the signatures module is then
    the expected-count moment it is built from)."""
    w = dataset.sample_weights() / dataset.sample_weights().sum()
    F = dataset.vocab_size
    counts = np.zeros((len(w), F))
    np.add.at(counts, (np.repeat(np.arange(len(w)), dataset.seq_len), np.asarray(dataset.inputs).reshape(-1)), 1.0)
    freq = w @ counts
    u = 1.0 / dataset.vocab_size
    T = np.zeros((F, F, dataset.vocab_size))
    for s in np.flatnonzero(freq > 0):
        J = joint_signature(dataset, int(s))                                       # (F, V)
        T[s] = freq[s] * (J - u * J.sum(axis=1, keepdims=True))
    return T


def second_order_potential_from_joint(T_FxFxV, params, c1: float, c2: float, depth: int) -> jax.Array:
    """The tensor form ``sum_l coef_l sum_{j,s,r,y} T[s, r, y] B_l[j, s] B_l[j, r] U_{>l}[y, j]``."""
    coefs = compiled_second_order_coefficients(depth)(c1, c2)
    T = jnp.asarray(T_FxFxV)
    return sum(coef * jnp.einsum("sry,js,jr,yj->", T, B, B, U_after)
               for coef, (B, U_after) in zip(coefs, _layer_maps(params)))


def flow_field(theory: FFNTheory, order: FlowOrder):
    """``params -> d params / dt`` of the chosen flow."""
    if order == "exact":
        return functools.partial(exact_field, theory)
    if order == "leading":
        return functools.partial(leading_field, theory)
    if order == "second_order":
        second = jax.grad(functools.partial(second_order_potential, theory))

        def field(params):
            return jax.tree.map(jnp.add, leading_field(theory, params), second(params))
        return field
    raise ConfigError("order", f"must be one of {', '.join(FLOW_ORDERS)}, got {order!r}")


@functools.lru_cache(maxsize=None)
def _diffrax_field(order: FlowOrder):
    """``field(t, params, (theory, threshold))``: one function object per order, so diffrax compiles a solve
    once per order, task shape and tolerances, whatever the initialisation, horizon or data values."""

    def field(t, params, args):
        return flow_field(args[0], order)(params)
    return field


def _end_to_end_exceeds(t, y, args, **kwargs):
    theory, threshold = args
    return top_end_to_end_value(y, theory.c1) > threshold


def _end_to_end_minus(t, y, args, **kwargs):
    theory, threshold = args
    return top_end_to_end_value(y, theory.c1) - threshold


def integrate(theory: FFNTheory, params0, ts, *, order: FlowOrder, rtol: float = FLOW_RTOL, atol: float = FLOW_ATOL,
              max_steps: int = 1_000_000, stop_above: float | None = None):
    """The flow from ``params0`` at t = 0, saved at ``ts`` (T,): a params pytree of stacked (T, ...) arrays.

    ``stop_above``: stop once the top singular value of the end-to-end map exceeds it (the truncated flows
    blow up in finite time), or after ``max_steps``; the times not reached are NaN. Without it, a solve that
    does not reach ``ts[-1]`` raises ConfigError. Compiled once per order, shape and tolerances."""
    check_params(params0, theory)
    require(order in FLOW_ORDERS, "order", f"must be one of {', '.join(FLOW_ORDERS)}, got {order!r}")
    ts = np.asarray(ts, dtype=np.float64)
    require(ts.ndim == 1 and len(ts) >= 1 and bool(np.all(np.diff(ts) >= 0)) and ts[0] >= 0, "ts",
            "must be a non-empty, non-decreasing 1-D array of flow times >= 0")
    if stop_above is None:
        return solve_flow(_diffrax_field(order), params0, ts, args=(theory, None), rtol=rtol, atol=atol,
                          max_steps=max_steps)
    require_float(stop_above, "stop_above", minimum=0.0, strict_minimum=True)
    sol = solve_until(_diffrax_field(order), params0, ts[-1], _end_to_end_exceeds,
                      args=(theory, jnp.asarray(stop_above, theory.M.dtype)),
                      saveat=diffrax.SaveAt(ts=jnp.asarray(ts, dtype=theory.M.dtype)), rtol=rtol, atol=atol,
                      max_steps=max_steps)
    # An event (or, after the escape where the exact flow turns stiff, max_steps) ends the solve early: the
    # saved times it did not reach are not finite in sol.ts.
    valid = np.ones(len(ts), bool)
    if not bool(sol.result == diffrax.RESULTS.successful):
        valid = np.isfinite(np.asarray(sol.ts))
    return jax.tree.map(lambda x: np.where(valid.reshape((-1,) + (1,) * (x.ndim - 1)) & np.isfinite(np.asarray(x)),
                                           np.asarray(x), np.nan), sol.ys)


# ----------------------------------------------------------------------------- escape from the plateau

def end_to_end_map(params, c1: float) -> jax.Array:
    """(V, F) ``c1^k U W_k^T ... W_1^T E``: the network's linearisation at zero input scale (the logit map of
    the leading-order theory; for k = 0 the linear model's U E)."""
    out = params["E"]
    for W in params["W"]:
        out = W.T @ out
    return c1 ** len(params["W"]) * params["U"] @ out


def top_end_to_end_value(params, c1: float) -> jax.Array:
    """Leading singular value of :func:`end_to_end_map`; stacked params give (T,)."""
    if params["E"].ndim == 3:
        return jax.vmap(lambda p: top_end_to_end_value(p, c1))(params)
    return jnp.linalg.norm(end_to_end_map(params, c1), ord=2)


def predicted_escape_time(theory: FFNTheory, params0, threshold: float = 1.0, *, t_max: float | None = None,
                          rtol: float = 1e-9, atol: float = 1e-14) -> float:
    """When the leading-order flow from ``params0`` takes the top singular value of the end-to-end map to
    ``threshold`` (diffrax event with a Newton root find); 0 if it starts above, nan if not before ``t_max``.

    ``t_max`` defaults to 100x the balanced-factor law (:data:`~.ffn_derivation.balanced_escape_time`) at the
    initial weights' RMS entry size."""
    check_params(params0, theory)
    require_float(threshold, "threshold", minimum=0.0, strict_minimum=True)
    if float(top_end_to_end_value(params0, theory.c1)) >= threshold:
        return 0.0                  # already escaped (and an event true at t = 0 has no root to find)
    if t_max is None:
        rms = float(np.sqrt(np.mean(np.concatenate([np.ravel(x) ** 2 for x in jax.tree.leaves(params0)]))))
        t_max = 100.0 * _escape_laws()["balanced"](theory.c1, theory.sigma_1, rms, 1.0, theory.depth)

    sol = solve_until(_diffrax_field("leading"), params0, t_max, _end_to_end_minus,
                      args=(theory, jnp.asarray(threshold, theory.M.dtype)), saveat=diffrax.SaveAt(t1=True),
                      rtol=rtol, atol=atol, max_steps=1_000_000,
                      root_finder=optimistix.Newton(rtol=1e-8, atol=1e-10))
    if bool(sol.result == diffrax.RESULTS.event_occurred):
        return float(sol.ts[-1])
    return float("nan")


def escape_law_constant(theory: FFNTheory, t_escape: float, init_scale: float) -> float:
    """``kappa``, the constant of the power law ``t* = kappa / (c1^k sigma_1 eps^k)``
    (:data:`~.ffn_derivation.ffn_escape_time` solved for kappa)."""
    return float(_escape_laws()["kappa"](t_escape, theory.c1, theory.sigma_1, init_scale, theory.depth))


@functools.lru_cache(maxsize=1)
def _escape_laws():
    """The escape-time laws of :mod:`.ffn_derivation`, lambdified (numpy): ``kappa(t*, c1, sigma_1, eps, k)`` and
    ``balanced(c1, sigma_1, eps, atilde, k)``."""
    kappa_of_t = sp.solve(sp.Eq(FD.t, FD.ffn_escape_time), FD.kappa)[0]
    return {"kappa": sp.lambdify((FD.t, FD.c1, FD.sigma_1, FD.eps, FD.depth), kappa_of_t, modules="numpy"),
            "balanced": sp.lambdify((FD.c1, FD.sigma_1, FD.eps, FD.a_norm, FD.depth), FD.balanced_escape_time,
                                    modules="numpy")}


# ----------------------------------------------------------------------------- fields along a trajectory

def _flat(tree) -> jax.Array:
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def _blocks(tree) -> dict[str, jax.Array]:
    out = {"E": jnp.ravel(tree["E"])}
    out.update({f"W_{i}": jnp.ravel(W) for i, W in enumerate(tree["W"], start=1)})
    out["U"] = jnp.ravel(tree["U"])
    return out


def _cos(a, b) -> jax.Array:
    return jnp.vdot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b))


def field_cosines(theory: FFNTheory, params_T, orders=("leading", "second_order")) -> dict[str, dict[str, np.ndarray]]:
    """Cosine of each truncated field with the exact field (``-grad loss``) along stacked params (T, ...).

    Returns ``{order: {"overall": (T,), "E": (T,), "W_1": (T,), ..., "U": (T,)}}``."""
    exact = flow_field(theory, "exact")
    fields = {o: flow_field(theory, o) for o in orders}

    @jax.jit
    def one(params):
        g = exact(params)
        out = {}
        for name, fld in fields.items():
            f = fld(params)
            row = {"overall": _cos(_flat(f), _flat(g))}
            row.update({k: _cos(v, _blocks(g)[k]) for k, v in _blocks(f).items()})
            out[name] = row
        return out

    return jax.tree.map(np.asarray, jax.lax.map(one, params_T))


def field_residuals(theory: FFNTheory, params) -> dict[str, float]:
    """``||field_order - exact|| / ||exact||`` at ``params`` for the leading and second-order fields."""
    g = _flat(exact_field(theory, params))
    return {o: float(jnp.linalg.norm(_flat(flow_field(theory, o)(params)) - g) / jnp.linalg.norm(g))
            for o in ("leading", "second_order")}
