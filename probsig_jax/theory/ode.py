"""One adaptive ODE solve (diffrax Tsit5 + PID step control) shared by every flow the theory integrates."""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from probsig_jax.validation import ConfigError


def solve_flow(field, y0, ts, *, rtol: float, atol: float, max_steps: int):
    """Integrate ``dy/dt = field(t, y, args)`` from ``y0`` (any pytree) at t = 0; ``ys`` at ``ts`` (T,), each
    leaf stacked (T, ...). ConfigError naming what to change when the solve does not reach ``ts[-1]``."""
    ts = jnp.asarray(np.asarray(ts), dtype=jax.tree.leaves(y0)[0].dtype)
    if float(ts[-1]) == 0.0:
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (len(ts),) + x.shape), y0)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Tsit5(), t0=0.0, t1=float(ts[-1]), dt0=None, y0=y0,
        saveat=diffrax.SaveAt(ts=ts), stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps, throw=False)
    if not bool(sol.result == diffrax.RESULTS.successful):
        reached = "max_steps" if bool(sol.result == diffrax.RESULTS.max_steps_reached) else "the solver"
        raise ConfigError(reached, f"the ODE solve did not reach t = {float(ts[-1]):g} ({sol.result}); raise "
                                   "max_steps or loosen rtol/atol, or check the flow for a blow-up")
    return sol.ys


def solve_until(field, y0, t1: float, condition, *, saveat, rtol: float, atol: float, max_steps: int,
                root_finder=None):
    """The same solve from t = 0 towards ``t1``, stopped when ``condition(t, y, args, **kw)`` fires (a bool, or a
    real whose sign change is located by ``root_finder``); returns the diffrax solution (``throw=False``: the
    caller reads ``sol.result``)."""
    return diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Tsit5(), t0=0.0, t1=float(t1), dt0=None, y0=y0, saveat=saveat,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=max_steps,
        event=diffrax.Event(condition, root_finder=root_finder), throw=False)
