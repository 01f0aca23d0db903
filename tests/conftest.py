"""Shared test setup: float64 and full-precision matmuls for every theory-vs-training comparison.

The tolerances in the tests (1e-8 .. 1e-10 relative) assume float64 arithmetic and
no TF32/bfloat16 matmul passes; both are switched on here, before any test module
creates arrays. Tests that want float32 ask for it explicitly via a dtype argument.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_default_matmul_precision", "highest")
