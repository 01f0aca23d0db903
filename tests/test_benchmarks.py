"""The benchmark scripts stay runnable (smoke run; timings are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_linear_theory_benchmark_quick(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "linear_theory.py"), "--quick",
                           "--vocab-sizes", "64", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["benchmark"] == "linear_theory" and result["provenance"]
    row = result["results"][0]
    assert row["vocab_size"] == 64
    assert "closed_form_vs_gd_speedup" in result["summary"]
