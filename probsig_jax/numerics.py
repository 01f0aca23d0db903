"""The dtype policy of every theory-vs-training comparison: float64 on demand and full-precision matmuls."""

from __future__ import annotations

import contextlib
from typing import Iterator

import jax
import jax.numpy as jnp


@contextlib.contextmanager
def numerics(dtype: str) -> Iterator:
    """Within the block: ``jax_enable_x64`` when ``dtype`` is ``"float64"`` and ``highest`` matmul precision
    (no TF32 on GPUs; LESSONS); yields the ``jnp`` dtype. The previous x64 setting is restored after."""
    previous = bool(jax.config.read("jax_enable_x64"))
    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    try:
        with jax.default_matmul_precision("highest"):
            yield jnp.float64 if dtype == "float64" else jnp.float32
    finally:
        jax.config.update("jax_enable_x64", previous)
