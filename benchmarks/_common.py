"""Helpers shared by the benchmark scripts: timing, machine/provenance records, atomic JSON, tables.

Not part of the ``probsig_jax`` package; the scripts put the repository root on ``sys.path``
so that ``python benchmarks/<script>.py`` works from a checkout without installing.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import jax  # noqa: E402

from probsig_jax import runs  # noqa: E402
from probsig_jax.training.host_devices import host_core_count  # noqa: E402


def block(tree: Any) -> Any:
    """Wait for every JAX array in ``tree`` (numpy arrays and scalars pass through)."""
    return jax.block_until_ready(tree)


def timeit(fn: Callable[[], Any], *, repeats: int, budget_s: float = float("inf"), warmup: int = 1,
           min_runs: int = 1, reuse_slow_first_s: float | None = None) -> dict[str, Any]:
    """Time ``fn`` with ``time.perf_counter`` after ``block_until_ready`` on its result.

    ``warmup`` calls come first (the first one is reported as ``first_s``: it includes
    compilation for a fresh jitted function). Then between ``min_runs`` and ``repeats``
    timed calls, stopping early once their total exceeds ``budget_s``.
    With ``reuse_slow_first_s``, a first call slower than that is itself the (only)
    measurement (``first_call_reused``): for work where compilation is negligible.

    Returns ``{"median_s", "min_s", "runs_s", "first_s", "first_call_reused", "result"}``
    (``result``: the last call's output).
    """
    first = None
    result = None
    for i in range(warmup):
        tic = time.perf_counter()
        result = block(fn())
        if i == 0:
            first = time.perf_counter() - tic
    if warmup and reuse_slow_first_s is not None and first > reuse_slow_first_s:
        return {"median_s": first, "min_s": first, "runs_s": [first], "first_s": first, "first_call_reused": True,
                "result": result}
    times: list[float] = []
    while len(times) < max(repeats, min_runs):
        tic = time.perf_counter()
        result = block(fn())
        times.append(time.perf_counter() - tic)
        if len(times) >= min_runs and sum(times) > budget_s:
            break
    return {"median_s": statistics.median(times), "min_s": min(times), "runs_s": times, "first_s": first,
            "first_call_reused": False, "result": result}


def strip_results(timing: dict[str, Any]) -> dict[str, Any]:
    """A :func:`timeit` record without its ``result`` (for JSON)."""
    return {k: v for k, v in timing.items() if k != "result"}


def _cpuinfo() -> dict[str, str]:
    """The first processor's ``key: value`` block of ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break                                            # the first processor is enough
        key, _, value = line.partition(":")
        out[key.strip().lower()] = value.strip()
    return out


def cpu_model() -> str | None:
    return _cpuinfo().get("model name") or platform.processor() or None


def cpu_identity() -> dict[str, Any] | None:
    """The CPU's vendor, family, model number and stepping (``/proc/cpuinfo``): in a VM the model name can be as
    vague as "AMD EPYC", while family 25 / model 17 (Zen 4) and family 23 / model 49 (Zen 2) are different chips."""
    info = _cpuinfo()
    keys = {"vendor_id": "vendor", "cpu family": "family", "model": "model", "stepping": "stepping",
            "cache size": "cache_size"}
    out = {name: int(info[key]) if info[key].isdigit() else info[key] for key, name in keys.items() if key in info}
    return out or None


SIMD_FLAG_PREFIXES = ("sse4", "avx", "fma", "amx", "f16c", "bmi")


def cpu_flags() -> list[str] | None:
    """The CPU's SIMD-relevant feature flags (``/proc/cpuinfo``: sse4*, avx*, fma, amx*, f16c, bmi*), sorted: two
    machines with one model name can differ in them (e.g. AVX-512 masked off in a VM), and XLA's and torch's CPU
    kernels choose their code paths by them."""
    flags = _cpuinfo().get("flags")
    return None if flags is None else sorted(f for f in flags.split() if f.startswith(SIMD_FLAG_PREFIXES))


def memory_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 2)
    except OSError:
        pass
    return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU count (``os.cpu_count`` and the affinity mask = ``nproc``), CPU model and SIMD flags, memory, load, thread
    env vars."""
    return {
        "cpu_count": os.cpu_count(),
        "nproc": host_core_count(),
        "cpu_model": cpu_model(),
        "cpu_identity": cpu_identity(),
        "cpu_flags": cpu_flags(),
        "memory_total_gib": memory_total_gib(),
        "load_average_1_5_15": load_average(),
        "platform": jax.default_backend(),
        "device_kind": [d.device_kind for d in jax.devices()],
        "env": {k: os.environ.get(k) for k in ("XLA_FLAGS", "JAX_PLATFORMS", "OMP_NUM_THREADS",
                                               "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")},
    }


def provenance(config: dict[str, Any]) -> dict[str, Any]:
    """:func:`probsig_jax.runs.provenance` (versions, git revision, devices) plus the machine and ``config``."""
    return {**runs.provenance(), "machine": machine_info(), "config": config}


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """Create the parent folder and write JSON atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return runs.write_json(path, payload)


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; floats are shown with 4 significant digits."""
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
