"""The linear model's gradient-flow theory as JAX functions (PAPER section 4).

Shapes: E (d, F) embedding, U (V, d) unembedding, M (V, F) signature matrix,
t flow time (t = steps * learning rate for gradient descent). All functions
compute in the dtype of their inputs; use float64 (``jax_enable_x64``) when
comparing with training.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from probsig_jax.data.dataset import Dataset
from probsig_jax.data.features import num_features
from probsig_jax.models.linear import feature_index
from probsig_jax.signatures import cooccurrence_matrix, signature_matrix
from probsig_jax.theory.compiled import compiled_linear_theory
from probsig_jax.theory.modes import SignatureModes, signature_modes
from probsig_jax.theory.ode import solve_flow
from probsig_jax.analysis.trajectories import crossing_time
from probsig_jax.validation import ConfigError, require, require_float, require_int


# ----------------------------------------------------------------------------- validation helpers

def _as_float(x, field: str, *, finite: bool = True) -> jax.Array:
    """``x`` as a JAX array in a floating dtype (integer input would truncate the flow times to integers);
    ConfigError naming ``field`` for anything that is not a real numeric array, or (``finite``) holds NaN/inf."""
    try:
        host = np.asarray(x)
    except (TypeError, ValueError):
        raise ConfigError(field, f"must be a real array, got {type(x).__name__}") from None
    if not (np.issubdtype(host.dtype, np.integer) or np.issubdtype(host.dtype, np.floating)
            or jnp.issubdtype(host.dtype, jnp.floating)):
        raise ConfigError(field, f"must be a real array, got dtype {host.dtype}")
    x = jnp.asarray(x)
    x = x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))
    if finite:
        require(bool(jnp.all(jnp.isfinite(x))), field, "must be finite (it holds NaN or inf)")
    return x


def _check_matrix(M, field: str = "M") -> jax.Array:
    M = _as_float(M, field)
    require(M.ndim == 2, field, f"must be a (V, F) matrix, got shape {M.shape}")
    require(M.size > 0, field, f"must not be empty, got shape {M.shape}")
    return M


def _check_weights(M, E0, U0) -> tuple[jax.Array, jax.Array, jax.Array]:
    M, E0, U0 = _check_matrix(M), _as_float(E0, "E0"), _as_float(U0, "U0")
    require(E0.ndim == 2 and E0.shape[1] == M.shape[1], "E0",
            f"must have shape (d, F) = (*, {M.shape[1]}) to match M, got {E0.shape}")
    require(U0.shape == (M.shape[0], E0.shape[0]), "U0",
            f"must have shape (V, d) = ({M.shape[0]}, {E0.shape[0]}), got {U0.shape}")
    return M, E0, U0


def _check_times(t, field: str = "t") -> np.ndarray:
    try:
        ts = np.asarray(t, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(field, f"must be a number or a 1-D array of flow times, got {t!r}") from None
    require(ts.ndim <= 1, field, f"must be a scalar or a 1-D array, got shape {ts.shape}")
    require(bool(np.all(np.isfinite(ts))), field, "must be finite")
    require(bool(np.all(ts >= 0)), field, f"flow times must be >= 0, got min {ts.min()}")
    return ts


# ----------------------------------------------------------------------------- SVD and closed form

def closed_form(M, E0, U0, t, *, modes: SignatureModes | None = None) -> tuple[jax.Array, jax.Array]:
    """Closed-form solution of the linearised flow dE/dt = U^T M, dU/dt = M E^T.

    With A = E^T, B = U and ``M = P S Q^T``:
    ``A(t) = A0 + Q (cosh(S t) - I) Q^T A0 + Q sinh(S t) P^T B0`` and symmetrically for B
    (components outside the ranges of P, Q keep their initial values).

    Args:
      M: (V, F) signature matrix.
      E0: (d, F) initial embedding. U0: (V, d) initial unembedding.
      t: scalar or (T,) flow times >= 0.
      modes: optional precomputed :func:`signature_modes` of M.

    Returns:
      ``(E_t, U_t)`` of shapes (d, F), (V, d), or (T, d, F), (T, V, d) for 1-D t.
    """
    M, E0, U0 = _check_weights(M, E0, U0)
    ts = _check_times(t)
    modes = modes or signature_modes(M)
    E_t, U_t = _closed_form(modes.P, modes.S, modes.Q, E0, U0, jnp.asarray(np.atleast_1d(ts), dtype=E0.dtype))
    return (E_t[0], U_t[0]) if ts.ndim == 0 else (E_t, U_t)


@jax.jit
def _closed_form(P, S, Q, E0, U0, ts):
    fns = compiled_linear_theory()
    A0, B0 = E0.T, U0
    a0, b0 = Q.T @ A0, P.T @ B0                                   # (r, d) mode coordinates

    def at(t):
        a, b = fns["mode_update"](S[:, None], t, a0, b0)
        return fns["assemble"](A0, Q, a - a0).T, fns["assemble"](B0, P, b - b0)

    return jax.vmap(at)(ts)


def predicted_embedding_gram(M, t, init_scale: float, dim: int, *, modes: SignatureModes | None = None) -> jax.Array:
    """Expected embedding Gram E[E(t)^T E(t)] (F, F) of the closed form for i.i.d. N(0, eps^2) init.

    ``eps^2 d [I + Q (cosh(2 S t) - I) Q^T]``; early on ``~ eps^2 d (I + 2 t^2 M^T M)``.
    """
    ts = _check_times(t)
    require(ts.ndim == 0, "t", "must be a scalar here")
    require_float(init_scale, "init_scale", minimum=0.0, strict_minimum=True)
    require_int(dim, "dim", minimum=1)
    modes = modes or signature_modes(_check_matrix(M))
    g = compiled_linear_theory()["expected_mode_gram"](modes.S, float(ts), init_scale) / init_scale**2
    F = modes.Q.shape[0]
    return init_scale**2 * dim * (jnp.eye(F, dtype=modes.Q.dtype) + (modes.Q * (g - 1.0)) @ modes.Q.T)


def predicted_unembedding_gram(M, t, init_scale: float, dim: int) -> jax.Array:
    """Expected unembedding Gram E[U(t) U(t)^T] (V, V): the same with P (output signatures)."""
    return predicted_embedding_gram(jnp.asarray(M).T, t, init_scale, dim)


def escape_time(M, init_scale: float, dim: int, threshold: float = 1.0, *,
                modes: SignatureModes | None = None) -> float:
    """Predicted end of the plateau: when E[a_1(t) . b_1(t)] = eps^2 d sinh(2 sigma_1 t) reaches ``threshold``.

    a_1, b_1 are the leading mode's coordinates of E^T and U; their product is the
    leading singular value of the logit map U E. ~ log(2 theta / (eps^2 d)) / (2 sigma_1).
    """
    require_float(init_scale, "init_scale", minimum=0.0, strict_minimum=True)
    require_int(dim, "dim", minimum=1)
    require_float(threshold, "threshold", minimum=0.0, strict_minimum=True)
    s1 = float(modes.S[0]) if modes is not None else float(np.linalg.svd(np.asarray(_check_matrix(M)),
                                                                          compute_uv=False)[0])
    require(s1 > 0, "M", "is zero: labels are independent of the inputs, nothing escapes the plateau")
    return float(compiled_linear_theory()["escape_time"](s1, init_scale, dim, threshold))


def escape_time_from_init(M, E0, U0, threshold: float = 1.0, *, t_max: float, points: int = 1501) -> float:
    """Escape time of the closed form (:func:`closed_form`) from *this* initialisation, not the expected-value law of
    :func:`escape_time`: when the top singular value of ``U(t) E(t)`` reaches ``threshold``, searched on ``points``
    times in ``[0, t_max]`` (log-linear interpolation; nan if not reached by ``t_max``)."""
    require_float(t_max, "t_max", minimum=0.0, strict_minimum=True)
    ts = np.linspace(0.0, float(t_max), int(points))
    E_t, U_t = closed_form(M, E0, U0, ts)
    top = np.linalg.svd(np.asarray(U_t) @ np.asarray(E_t), compute_uv=False)[:, 0]
    return crossing_time(ts, top, threshold)


def measured_escape_time(times, E_traj, U_traj, threshold: float = 1.0) -> float:
    """First time the leading singular value of U(t) E(t) reaches ``threshold`` (log-linear interpolation).

    Args: times (T,), E_traj (T, d, F), U_traj (T, V, d). Returns nan if never reached.
    """
    times = np.asarray(times)
    top = np.array([np.linalg.svd(np.asarray(U) @ np.asarray(E), compute_uv=False)[0]
                    for E, U in zip(E_traj, U_traj)])
    return crossing_time(times, top, threshold)


# ----------------------------------------------------------------------------- exact and approximate flows

@functools.partial(jax.tree_util.register_dataclass, data_fields=["feature_ids", "labels", "weights"],
                   meta_fields=["vocab_size", "num_features"])
@dataclass(frozen=True)
class FlowData:
    """A data set prepared for the flow: feature ids (N, L), labels (N,), normalised weights (N,)."""

    feature_ids: jax.Array
    labels: jax.Array
    weights: jax.Array
    vocab_size: int
    num_features: int

    @classmethod
    def from_dataset(cls, dataset: Dataset, positional: bool = False, dtype=jnp.float64) -> "FlowData":
        ids = feature_index(jnp.asarray(dataset.inputs), dataset.vocab_size, positional)
        F = dataset.vocab_size * (dataset.seq_len if positional else 1)
        return cls(ids, jnp.asarray(dataset.labels), jnp.asarray(dataset.sample_weights(), dtype=dtype),
                   dataset.vocab_size, F)


def gradient_matrix(data: FlowData, E, U) -> jax.Array:
    """Exact G(E, U) = E[(e_Y - softmax(U E c(X))) c(X)^T] (V, F), so that dE/dt = U^T G, dU/dt = G E^T.

    Equals the generated ``(Y_w - P_w)^T C`` with the count matrix C applied as a
    scatter over token ids (C is never formed: O(N L V) instead of O(N V F)).
    """
    h_NxD = jnp.take(E.T, data.feature_ids, axis=0).sum(axis=1)
    p_NxV = jax.nn.softmax(h_NxD @ U.T, axis=-1)
    resid_NxV = data.weights[:, None] * (jax.nn.one_hot(data.labels, data.vocab_size, dtype=p_NxV.dtype) - p_NxV)
    L = data.feature_ids.shape[1]
    G_FxV = jax.ops.segment_sum(jnp.repeat(resid_NxV, L, axis=0), data.feature_ids.reshape(-1),
                                num_segments=data.num_features)
    return G_FxV.T


FlowOrder = Literal["exact", "linear", "next_order"]


def _exact_linear_field(t, y, args):
    E, U = y
    data, _, _ = args
    return tuple(compiled_linear_theory()["flow"](U, E, gradient_matrix(data, E, U)))


def _linearised_field(t, y, args):
    E, U = y
    _, M, _ = args
    return tuple(compiled_linear_theory()["flow"](U, E, M))


def _next_order_field(t, y, args):
    E, U = y
    data, M, Sigma_c = args
    one = jnp.ones((data.vocab_size, 1), dtype=M.dtype)
    G = compiled_linear_theory()["next_order_gradient"](M, U, E, Sigma_c, 1.0 / data.vocab_size, one)
    return tuple(compiled_linear_theory()["flow"](U, E, G))


_LINEAR_FIELDS = {"exact": _exact_linear_field, "linear": _linearised_field, "next_order": _next_order_field}


def flow_vector_field(data: FlowData, order: FlowOrder = "exact", *, M=None, Sigma_c=None):
    """Vector field ``f(t, (E, U)) -> (dE/dt, dU/dt)`` of the chosen flow.

    order: "exact" (G from the softmax), "linear" (G = M), "next_order"
    (G = M - u (I - u 1 1^T) U E Sigma_c, the first softmax correction).
    """
    field, args = flow_term(data, order, M=M, Sigma_c=Sigma_c)
    return lambda t, y, _args=None: field(t, y, args)


def flow_term(data: FlowData, order: FlowOrder = "exact", *, M=None, Sigma_c=None):
    """``(field, args)`` of the chosen flow for ``diffrax``: ``field(t, (E, U), args)`` is a module-level
    function (one compiled solve per order and shape), ``args = (data, M, Sigma_c)`` its data."""
    if order not in _LINEAR_FIELDS:
        raise ConfigError("order", f"must be one of exact, linear, next_order, got {order!r}")
    return _LINEAR_FIELDS[order], (data, M, Sigma_c)


def integrate_flow(dataset: Dataset, E0, U0, ts, *, positional: bool = False, order: FlowOrder = "exact",
                   rtol: float = 1e-10, atol: float = 1e-12, max_steps: int = 1_000_000) -> tuple[jax.Array, jax.Array]:
    """Integrate the gradient flow from (E0, U0) at t = 0 and return (E, U) at ``ts``.

    diffrax Tsit5 with an adaptive PID step-size controller.

    Args:
      dataset: the training distribution.
      E0: (d, F). U0: (V, d).
      ts: (T,) non-decreasing flow times >= 0.
      order: "exact", "linear" or "next_order" (see :func:`flow_vector_field`).

    Returns:
      stacked ``(E (T, d, F), U (T, V, d))``.
    """
    require(isinstance(dataset, Dataset), "dataset", f"must be a probsig_jax.data.Dataset, got {type(dataset).__name__}")
    E0 = _as_float(E0, "E0")
    F = num_features(dataset.vocab_size, dataset.seq_len, positional)
    # Only the approximate flows need M; the exact flow reads the data directly (shape check via zeros).
    M = (jnp.asarray(signature_matrix(dataset, positional), dtype=E0.dtype) if order != "exact"
         else jnp.zeros((dataset.vocab_size, F), dtype=E0.dtype))
    M, E0, U0 = _check_weights(M, E0, U0)
    ts = _check_times(ts, "ts")
    require_float(rtol, "rtol", minimum=0.0, strict_minimum=True)
    require_float(atol, "atol", minimum=0.0, strict_minimum=True)
    require_int(max_steps, "max_steps", minimum=1)
    require(ts.ndim == 1 and len(ts) >= 1, "ts", "must be a non-empty 1-D array")
    require(bool(np.all(np.diff(ts) >= 0)), "ts", "must be non-decreasing")
    data = FlowData.from_dataset(dataset, positional, dtype=E0.dtype)
    Sigma_c = jnp.asarray(cooccurrence_matrix(dataset, positional), dtype=E0.dtype) if order == "next_order" else None
    field, args = flow_term(data, order, M=M, Sigma_c=Sigma_c)
    return solve_flow(field, (E0, U0), jnp.asarray(ts, dtype=E0.dtype), args=args, rtol=rtol, atol=atol,
                      max_steps=max_steps)


def linear_model_loss(dataset: Dataset, E, U, *, positional: bool = False) -> np.ndarray:
    """Weighted cross-entropy of the linear model at E (d, F), U (V, d), or stacked (T, ...) trajectories."""
    E, U = _as_float(E, "E", finite=False), _as_float(U, "U", finite=False)   # trajectories may overflow late
    F = dataset.vocab_size * (dataset.seq_len if positional else 1)
    require(E.ndim in (2, 3) and E.shape[-1] == F, "E",
            f"must have shape (d, F) or (T, d, F) with F = {F} features, got {E.shape}")
    require(U.ndim == E.ndim and U.shape[-2:] == (dataset.vocab_size, E.shape[-2]) and U.shape[:-2] == E.shape[:-2],
            "U", f"must have shape {E.shape[:-2] + (dataset.vocab_size, E.shape[-2])} to match E, got {U.shape}")
    data = FlowData.from_dataset(dataset, positional, dtype=E.dtype)

    def loss(E, U):
        z = jnp.take(E.T, data.feature_ids, axis=0).sum(axis=1) @ U.T
        logp = jax.nn.log_softmax(z, axis=-1)
        return -jnp.sum(data.weights * jnp.take_along_axis(logp, data.labels[:, None], axis=1)[:, 0])

    if E.ndim == 3:
        return np.asarray(jax.vmap(loss)(E, U))
    return np.asarray(loss(E, U))
