"""The generated write-up of the FFN's small-initialisation flow (probsig_jax.theory.ffn_writeup,
theory/derive_ffn_flow.py): every derived expression appears as its sympy LaTeX, the committed file is current,
and the command fails on a stale file. The full ``--check`` (with ``verify_ffn_flow``) is marked slow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sympy as sp

from probsig_jax.theory import ffn_derivation as FD
from probsig_jax.theory import ffn_writeup as W
from probsig_jax.theory.markdown import latex, split_verification

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "theory" / "derive_ffn_flow.py"
COMMITTED = REPO_ROOT / "theory" / "ffn_gradient_flow.md"


@pytest.fixture(scope="module")
def ders():
    return tuple(FD.derive_ffn_flow(k) for k in W.DEPTHS)


@pytest.fixture(scope="module")
def text(ders):
    return W.render_ffn_flow_markdown(ders, {n: ok for d in ders for n, ok in d.checks.items()})


def test_every_derived_expression_appears(ders, text):
    for der in ders:
        assert latex(der.leading_potential) in text
        for field in der.leading_field:
            assert latex(field) in text
        for coefficient in der.second_order_coefficients:
            assert sp.latex(coefficient) in text
    for expr in (FD.blow_up_time, FD.ffn_escape_time):
        assert latex(expr) in text
    for D in (2, 3, 4):
        assert sp.latex(FD.escape_law(D)[0]) in text
    assert latex(FD.second_order_potential_expression()) in text
    assert "{B_{l}}" in text and r"{\tilde{U}_{l}}" in text


def test_rendering_is_deterministic_and_lists_the_checks(ders, text):
    assert W.render_ffn_flow_markdown(ders, {n: ok for d in ders for n, ok in d.checks.items()}) == text
    assert "--skip-verify" in split_verification(text)[1]          # only the cheap checks were listed
    failed = W.render_ffn_flow_markdown(ders, {"a | b": True, "c": False})
    assert "**FAILED**" in failed and r"`a \| b`" in failed


def test_committed_write_up_is_current():
    assert COMMITTED.is_file(), f"generate it with {W.GENERATOR_COMMAND}"
    assert W.main(["--check", "--skip-verify", "--out", str(COMMITTED)]) == 0


def test_a_stale_file_fails_the_check(tmp_path):
    stale = tmp_path / "flow.md"
    stale.write_text(COMMITTED.read_text().replace("Emb-MLP", "EmbMLP", 1))
    assert W.main(["--check", "--skip-verify", "--out", str(stale)]) == 1
    assert W.main(["--check", "--skip-verify", "--out", str(tmp_path / "missing.md")]) == 1
    out = tmp_path / "new.md"
    assert W.main(["--skip-verify", "--out", str(out)]) == 0 and out.is_file()
    assert W.main(["--check", "--skip-verify", "--out", str(out)]) == 0


@pytest.mark.slow
def test_script_full_check_of_the_committed_file():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
