"""``use_host_cores_as_devices``: the CPU device count is set before JAX's backends start, and refused after.

The count is fixed per process, so the check runs in a fresh interpreter. That a data-parallel step over several
CPU devices equals the one-device step is tested in ``tests/test_sharding.py`` (meshes over 8 CPU devices).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from probsig_jax.training.host_devices import host_core_count, use_host_cores_as_devices
from probsig_jax.validation import ConfigError

PROBE = """
import json
from probsig_jax.training.host_devices import use_host_cores_as_devices
from probsig_jax.validation import ConfigError
set_to = use_host_cores_as_devices(3)
import jax
devices = len(jax.devices("cpu"))
again = use_host_cores_as_devices(3)          # the count in effect: accepted after the start
try:
    use_host_cores_as_devices(2)
    late = None
except ConfigError as err:
    late = str(err)
print(json.dumps({"set_to": set_to, "devices": devices, "again": again, "late": late}))
"""


def test_device_count_is_set_before_the_backends_start_and_refused_after():
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**env, "JAX_PLATFORMS": "cpu"}, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["set_to"] == result["devices"] == result["again"] == 3
    assert result["late"].startswith("cpu_devices:") and "already initialised with 3 CPU device(s)" in result["late"]
    assert "\n" not in result["late"]


@pytest.mark.parametrize("count", [0, -1, 2.0, True])
def test_bad_counts_name_the_field(count):
    with pytest.raises(ConfigError, match="^cpu_devices: must be a positive integer"):
        use_host_cores_as_devices(count)


def test_host_core_count_is_the_affinity_mask():
    assert host_core_count() == (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
