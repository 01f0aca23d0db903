"""Keep large host buffers in the C heap between training steps instead of mapping them afresh every step (glibc).

XLA:CPU allocates each step's temporaries with ``malloc``. glibc serves a request above its mmap threshold (at
most 32 MiB) with a fresh ``mmap`` and returns it with ``munmap`` when freed, so every step faults in every page
of its large buffers again, e.g. the (N*T, V) logits, 128 MB for E4's 16 x 64 tokens over 31,441 tokens. For the
gradient of a logsumexp over a 1024 x 31441 matrix that was 31.6k minor page faults and 136 ms of system time in a
216 ms step; with :func:`tune_host_allocator`, 3.1k faults, 11 ms and a 132 ms step (2-core AMD EPYC; the test
in ``tests/test_host_allocator.py`` checks the fault counts).

Three ``mallopt`` settings: ``M_MMAP_MAX = 0`` (no mmap-served blocks), ``M_TRIM_THRESHOLD`` at its maximum (freed
memory stays for reuse), and ``M_ARENA_MAX = 1``, because glibc's per-thread arenas fall back to mmap for requests
larger than their 64 MiB heaps whatever ``M_MMAP_MAX`` says. They must be set before XLA's threads allocate, i.e.
before the first JAX computation: ``simulate`` does it first thing. The cost is that the process keeps its peak
heap: its resident memory does not shrink after a large step. ``PROBSIG_HOST_ALLOCATOR=default`` leaves the
allocator alone. Elsewhere than glibc (macOS, musl) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ENV_VAR = "PROBSIG_HOST_ALLOCATOR"
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8   # glibc malloc.h
_applied: bool | None = None


def _glibc():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def tune_host_allocator() -> bool:
    """Apply the settings of the module docstring once per process; True when they are in effect.

    False when ``PROBSIG_HOST_ALLOCATOR`` is ``default`` or the C library is not glibc (nothing is changed).
    """
    global _applied
    if _applied is not None:
        return _applied
    libc = None if os.environ.get(ENV_VAR, "tuned").strip().lower() == "default" else _glibc()
    _applied = bool(libc is not None and all(libc.mallopt(option, value) == 1 for option, value in (
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))))
    return _applied


__all__ = ["ENV_VAR", "tune_host_allocator"]
