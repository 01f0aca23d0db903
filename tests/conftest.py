"""Shared test setup: float64 and full-precision matmuls for every theory-vs-training comparison.

The tolerances in the tests (1e-8 .. 1e-10 relative) assume float64 arithmetic and
no TF32/bfloat16 matmul passes; both are switched on here, before any test module
creates arrays. Tests that want float32 ask for it explicitly via a dtype argument.

Many tests train the same small models: JAX's persistent compilation cache, in a fresh directory per test session
(also handed to the subprocesses the tests start, through the environment), compiles each distinct program once per
session instead of once per test (it halves tests/test_lm_training.py). A cache hit returns the executable XLA
built for the identical program and options, so no number changes; tracing still happens, so the tests that count
traces are unaffected.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_default_matmul_precision", "highest")

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache_dir = tempfile.mkdtemp(prefix="probsig_test_jax_cache_")
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")))
jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                  int(os.environ.get("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")))
