"""One adaptive ODE solve (diffrax Tsit5 + PID step control) shared by every flow the theory integrates.

diffrax compiles a solve once per vector-field function, solver settings and array shapes; Python floats
among its inputs are compile-time constants. So the flows pass a module-level ``field(t, y, args)`` with the
data in ``args`` (a pytree) and the end time as an array: a second solve of the same task shape, at another
initialisation or horizon, reuses the compiled solve instead of tracing it again.
"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from probsig_jax.validation import ConfigError


def _solve(field, y0, t1, *, args, saveat, rtol: float, atol: float, max_steps: int, event=None):
    return diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Tsit5(), t0=jnp.zeros((), t1.dtype), t1=t1, dt0=None, y0=y0, args=args,
        saveat=saveat, stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=max_steps,
        event=event, throw=False)


def solve_flow(field, y0, ts, *, args=None, rtol: float, atol: float, max_steps: int):
    """Integrate ``dy/dt = field(t, y, args)`` from ``y0`` (any pytree) at t = 0; ``ys`` at ``ts`` (T,), each
    leaf stacked (T, ...). ConfigError naming what to change when the solve does not reach ``ts[-1]``."""
    ts = jnp.asarray(np.asarray(ts), dtype=jax.tree.leaves(y0)[0].dtype)
    if float(ts[-1]) == 0.0:
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (len(ts),) + x.shape), y0)
    sol = _solve(field, y0, ts[-1], args=args, saveat=diffrax.SaveAt(ts=ts), rtol=rtol, atol=atol,
                 max_steps=max_steps)
    if not bool(sol.result == diffrax.RESULTS.successful):
        reached = "max_steps" if bool(sol.result == diffrax.RESULTS.max_steps_reached) else "the solver"
        raise ConfigError(reached, f"the ODE solve did not reach t = {float(ts[-1]):g} ({sol.result}); raise "
                                   "max_steps or loosen rtol/atol, or check the flow for a blow-up")
    return sol.ys


def solve_until(field, y0, t1, condition, *, args=None, saveat, rtol: float, atol: float, max_steps: int,
                root_finder=None):
    """The same solve from t = 0 towards ``t1``, stopped when ``condition(t, y, args, **kw)`` fires (a bool, or a
    real whose sign change is located by ``root_finder``); returns the diffrax solution (``throw=False``: the
    caller reads ``sol.result``)."""
    t1 = jnp.asarray(t1, dtype=jax.tree.leaves(y0)[0].dtype)
    return _solve(field, y0, t1, args=args, saveat=saveat, rtol=rtol, atol=atol, max_steps=max_steps,
                  event=diffrax.Event(condition, root_finder=root_finder))
