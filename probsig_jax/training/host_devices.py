"""Run one XLA:CPU device per core, so that a training step can be data-parallel over the host's cores.

On a CPU, XLA parallelises each operation of a step over its intra-op thread pool. For the small models of this
project that scales poorly: most operations of a Qwen2 ``small`` step are too small to split well over the cores.
Splitting the *batch* instead, one device per core on a ``data`` mesh axis
(:func:`~probsig_jax.training.sharding.make_mesh`), gives every core whole operations on its own rows, and the
gradients are summed by one all-reduce. ``benchmarks/qwen2_train_step.py`` measures both (``--cpu-devices``).

The device count is fixed when JAX initialises its backends, so :func:`use_host_cores_as_devices` must run before
the first JAX computation (or ``jax.devices()`` call). It uses JAX's ``jax_num_cpu_devices`` option and changes
nothing on an accelerator. Numerics: a data-parallel step sums the per-device gradients in another order than one
device does, so losses agree to rounding, not bit for bit (``tests/test_sharding.py`` bounds the difference); the same
device count gives the same numbers run to run.
"""

from __future__ import annotations

import os

import jax

from probsig_jax.validation import ConfigError


def host_core_count() -> int:
    """The cores this process may run on (its affinity mask, as ``nproc``; ``os.cpu_count()`` elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _backends_initialized() -> bool:
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def use_host_cores_as_devices(count: int | None = None) -> int:
    """Make JAX expose ``count`` CPU devices (default: :func:`host_core_count`); returns the CPU device count.

    Must be called before JAX initialises its backends. Called later, it changes nothing and returns the count in
    effect if that already equals ``count``; otherwise it raises :class:`ConfigError` (``cpu_devices``), since the
    count can no longer change in this process.
    """
    wanted = host_core_count() if count is None else count
    if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 1:
        raise ConfigError("cpu_devices", f"must be a positive integer (or None: one per core), got {count!r}")
    if _backends_initialized():
        current = len(jax.devices("cpu"))
        if current != wanted:
            raise ConfigError("cpu_devices", f"JAX's backends are already initialised with {current} CPU device(s); "
                                             f"{wanted} must be set before the first JAX computation "
                                             "(or set JAX_NUM_CPU_DEVICES)")
        return current
    jax.config.update("jax_num_cpu_devices", wanted)
    return wanted


__all__ = ["host_core_count", "use_host_cores_as_devices"]
