"""Input validation shared by every public entry point.

Every check raises :class:`ConfigError`, a ``ValueError`` whose message starts
with the offending field's name and states the accepted range, so that bad
input never surfaces as a traceback from deep inside JAX.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator


class ConfigError(ValueError):
    """Bad user input. ``field`` names the offending option or argument."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@contextmanager
def renamed_field(prefix: str) -> Iterator[None]:
    """Re-raise a ConfigError from the block with ``prefix`` put before its field name (a nested config's
    ``source`` becomes the ``corpus_source`` the user typed as ``--corpus-source``)."""
    try:
        yield
    except ConfigError as err:
        if not prefix or err.field == prefix.rstrip("_") or err.field.startswith(prefix):
            raise                          # already names the option (no corpus_corpus)
        raise ConfigError(prefix + err.field, err.message) from None


def require(condition: bool, field: str, message: str) -> None:
    """Raise ``ConfigError(field, message)`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(field, message)


def require_int(value: Any, field: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Check that ``value`` is an integer in ``[minimum, maximum]`` and return it."""
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (hasattr(value, "__index__")):
        raise ConfigError(field, f"must be an integer, got {value!r}")
    value = int(value)
    lo = "-inf" if minimum is None else minimum
    hi = "inf" if maximum is None else maximum
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ConfigError(field, f"must be an integer in [{lo}, {hi}], got {value}")
    return value


MAX_STEPS = 10**8
"""The most optimisation steps a run may ask for (days of compute for the smallest step; a larger number is
a typo, not a plan)."""

MAX_SEED = 2**32 - 1
"""Seeds are 32-bit: what ``jax.random.key``, ``nnx.Rngs`` and numpy all accept."""


def require_seed(value: Any, field: str = "seed") -> int:
    """Check that ``value`` is an integer seed in ``[0, 2**32 - 1]`` and return it."""
    return require_int(value, field, minimum=0, maximum=MAX_SEED)


def require_float(
    value: Any,
    field: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_minimum: bool = False,
) -> float:
    """Check that ``value`` is a finite real number in the given range and return it.

    ``strict_minimum`` makes the lower bound exclusive (e.g. learning rates > 0).
    """
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(field, f"must be a real number, got {value!r}") from None
    if not math.isfinite(value):
        raise ConfigError(field, f"must be finite, got {value}")
    bad_lo = minimum is not None and (value <= minimum if strict_minimum else value < minimum)
    bad_hi = maximum is not None and value > maximum
    if bad_lo or bad_hi:
        lower = ">" if strict_minimum else ">="
        if maximum is None:
            accepted = f"must be {lower} {minimum:g}"
        elif minimum is None:
            accepted = f"must be <= {maximum:g}"
        else:
            accepted = f"must be in {'(' if strict_minimum else '['}{minimum:g}, {maximum:g}]"
        raise ConfigError(field, f"{accepted}, got {value:g}")
    return value


def require_shape(array: Any, shape: tuple, field: str) -> None:
    """Check an array's shape; ``None`` entries in ``shape`` match any size."""
    actual = tuple(getattr(array, "shape", ()))
    ok = len(actual) == len(shape) and all(s is None or s == a for s, a in zip(shape, actual))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ConfigError(field, f"must have shape {want}, got {actual}")


def require_float_dtype(dtype: Any, field: str = "dtype", allowed: tuple[str, ...] = ("float32", "float64")):
    """Check that ``dtype`` names one of the ``allowed`` floating dtypes and return it as a ``jnp.dtype``."""
    import jax.numpy as jnp

    try:
        resolved = jnp.dtype(dtype) if dtype is not None else None
    except TypeError:
        resolved = None
    if resolved is None or resolved.name not in allowed:
        raise ConfigError(field, f"must be one of {', '.join(allowed)}, got {dtype!r}")
    return resolved
