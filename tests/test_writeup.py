"""Tests for the generated write-up of the linear gradient flow (probsig_jax.theory.writeup).

The default run stays fast (a few seconds): it uses the cheap checks of
``derive_linear_flow`` and monkeypatches ``verify_linear_flow`` where the CLI
would run it. The full ``--check`` of the committed file, which runs the
expensive verification (about 10-15 s), is marked slow.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sympy as sp

from probsig_jax.theory import derivation as D
from probsig_jax.theory import writeup as W

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "theory" / "derive_linear_flow.py"
COMMITTED = REPO_ROOT / "theory" / "linear_gradient_flow.md"

# Fields that are not a single expression to display.
NOT_EXPRESSIONS = {"mode_scalars", "checks"}


@pytest.fixture(scope="module")
def der() -> D.LinearFlowDerivation:
    return D.derive_linear_flow()


@pytest.fixture(scope="module")
def text(der) -> str:
    return W.render_linear_flow_markdown(der, der.checks)


# ----------------------------------------------------------------------------- content


def test_every_derived_expression_appears_as_its_latex(der, text):
    fields = [f.name for f in dataclasses.fields(der) if f.name not in NOT_EXPRESSIONS]
    assert len(fields) >= 20
    for name in fields:
        expr = getattr(der, name)
        assert W.latex(expr) in text, name
        assert f"`{name}`:" in text, name  # each block is labelled with the field it shows


@pytest.mark.parametrize("name", [
    "flow_E", "flow_U", "loss_gradient_E", "loss_gradient_U", "gradient_matrix", "mode_generator",
    "mode_propagator", "mode_update_a", "mode_update_b", "closed_form_A", "closed_form_B",
    "expected_mode_gram", "expected_mode_gram_series", "expected_product_amplitude", "escape_time",
])
def test_key_expressions_are_plain_sympy_latex(der, text, name):
    """Expressions without auxiliary symbols appear exactly as ``sympy.latex`` prints them."""
    expr = getattr(der, name)
    assert W.latex(expr) == sp.latex(expr)
    assert sp.latex(expr) in text


def test_renamed_symbols_only_change_display_names(der, text):
    assert W.latex(D.ones) == r"\mathbf{1}"
    expected = sp.latex(der.next_order_gradient_matrix, symbol_names={D.ones: r"\mathbf{1}"})
    assert expected in text
    assert r"\mathbf{1} \mathbf{1}^{T} U E \Sigma_{c}" in expected
    lse = next(s for s in der.loss_scalar.free_symbols if s.name == "logsumexp_z")
    assert sp.latex(der.loss_scalar, symbol_names={lse: r"\operatorname{logsumexp}(z)"}) in text


def test_concrete_formulas(text):
    """Spot checks of what sympy prints for the central results (catches a silently changed derivation)."""
    assert r"\frac{dE}{dt} = U^{T} G" in text
    assert r"\frac{dA}{dt} = M^{T} B" in text and r"\frac{dB}{dt} = M A" in text
    assert r"\cosh{\left(\sigma t \right)} & \sinh{\left(\sigma t \right)}" in text
    assert r"\epsilon^{2} \cosh{\left(2 \sigma t \right)}" in text
    assert r"2 \sigma^{2} t^{2} + 1 + O(t^{4})" in text
    assert r"\operatorname{asinh}{\left(\frac{\theta}{d \epsilon^{2}} \right)}" in text
    assert r"\log(1/\epsilon) \to 1" in text


def test_structure_header_and_provenance(text):
    assert text.startswith("# Gradient flow of the linear model\n")
    assert "Generated file: do not edit" in text.splitlines()[2]
    assert W.GENERATOR_COMMAND in text.splitlines()[2]
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert [h.split(".")[0] for h in headings] == [f"## {i}" for i in range(1, 10)]
    assert "This project's own derivation" in text and "PAPER section 9" in text
    assert "PAPER section 4 writes" in text  # the t^2 Gram coefficient differs from the spec's
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert text.count("$$") % 2 == 0


def test_checks_table(der, text):
    for name in der.checks:
        assert f"| `{name}` | `derive_linear_flow` | passed |" in text
    assert "without `verify_linear_flow` (`--skip-verify`)" in text
    custom = W.render_linear_flow_markdown(der, {"a | b": True, "c": False})
    assert "1 of 2 checks passed" in custom
    assert "| 1 | `a \\| b` | `verify_linear_flow` | passed |" in custom
    assert "| 2 | `c` | `verify_linear_flow` | **FAILED** |" in custom
    assert "--skip-verify" not in W.split_verification(custom)[1]
    none = W.render_linear_flow_markdown(der, None)
    assert "were not run" in none and "| # |" not in none


def test_deterministic(der, text):
    assert W.render_linear_flow_markdown(der, der.checks) == text
    assert W.render_linear_flow_markdown(None, dict(der.checks)) == text
    # The derivation part does not depend on the checks.
    assert W.split_verification(W.render_linear_flow_markdown(der, None))[0] == W.split_verification(text)[0]


# ----------------------------------------------------------------------------- the committed file


def test_committed_writeup_is_up_to_date_fast(der):
    """The derivation part equals a fresh rendering, and the table lists every check as passed."""
    assert COMMITTED.is_file(), f"missing {COMMITTED}: run python theory/derive_linear_flow.py"
    committed = COMMITTED.read_bytes().decode("utf-8")
    head, table = W.split_verification(committed)
    assert head == W.split_verification(W.render_linear_flow_markdown(der, None))[0], \
        "theory/linear_gradient_flow.md is stale: run python theory/derive_linear_flow.py"
    for name in der.checks:
        assert f"| `{name}` | `derive_linear_flow` | passed |" in table
    assert "`verify_linear_flow` | passed |" in table  # generated with the full verification
    assert "--skip-verify" not in table and "FAILED" not in table
    assert W.main(["--check", "--skip-verify", "--out", str(COMMITTED)]) == 0


@pytest.mark.slow
def test_committed_writeup_full_check():
    """What CI runs: full verification, then byte comparison with the committed file (about 15 s)."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- command line


@pytest.fixture
def fast_verify(monkeypatch, der):
    """Stand-in for the expensive verify_linear_flow: the cheap checks plus one named extra."""
    checks = dict(der.checks)
    checks["expensive check (stand-in)"] = True
    monkeypatch.setattr(D, "verify_linear_flow", lambda: dict(checks))
    return checks


def test_cli_writes_atomically_and_check_passes(tmp_path, der, fast_verify, capsys):
    out = tmp_path / "sub" / "flow.md"
    assert W.main(["--out", str(out)]) == 0
    assert out.read_bytes() == W.render_linear_flow_markdown(der, fast_verify).encode("utf-8")
    assert sorted(p.name for p in out.parent.iterdir()) == ["flow.md"]  # no temp file left behind
    assert W.main(["--check", "--out", str(out)]) == 0
    assert W.main(["--out", str(out)]) == 0  # unchanged: not rewritten
    assert "already up to date" in capsys.readouterr().out
    assert W.main(["--skip-verify", "--out", str(out)]) == 0
    assert out.read_bytes() == W.render_linear_flow_markdown(der, der.checks).encode("utf-8")


def test_cli_check_detects_stale_and_missing(tmp_path, der, fast_verify, capsys):
    out = tmp_path / "flow.md"
    assert W.main(["--check", "--out", str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err
    good = W.render_linear_flow_markdown(der, fast_verify)
    out.write_text(good.replace(r"\frac{dE}{dt} = U^{T} G", r"\frac{dE}{dt} = U G"), encoding="utf-8")
    assert W.main(["--check", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "is stale" in err and r"U^{T} G" in err
    assert W.main(["--check", "--skip-verify", "--out", str(out)]) == 1
    # A different verification table is stale for the full check only.
    out.write_text(W.render_linear_flow_markdown(der, der.checks), encoding="utf-8")
    assert W.main(["--check", "--out", str(out)]) == 1
    assert W.main(["--check", "--skip-verify", "--out", str(out)]) == 0


@pytest.mark.parametrize("failure", ["raises", "false"])
def test_cli_failed_verification_exits_1_and_writes_nothing(tmp_path, monkeypatch, capsys, failure):
    def verify():
        if failure == "raises":
            raise AssertionError("symbolic checks failed: ['x']")
        return {"x": False}

    monkeypatch.setattr(D, "verify_linear_flow", verify)
    out = tmp_path / "flow.md"
    assert W.main(["--out", str(out)]) == 1
    assert not out.exists()
    assert "error:" in capsys.readouterr().err


def test_script_exits_nonzero_on_stale_file(tmp_path, der):
    """The real script, in a fresh process with another hash seed, from another directory."""
    good = W.render_linear_flow_markdown(der, der.checks)
    env = dict(os.environ, PYTHONHASHSEED="4242")
    cmd = [sys.executable, str(SCRIPT), "--check", "--skip-verify", "--out"]
    fresh = tmp_path / "fresh.md"
    fresh.write_text(good, encoding="utf-8")
    stale = tmp_path / "stale.md"
    stale.write_text(good.replace("## 6. Closed form", "## 6. Old closed form"), encoding="utf-8")
    ok = subprocess.run(cmd + [str(fresh)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr  # byte-identical across processes and hash seeds
    bad = subprocess.run(cmd + [str(stale)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert bad.returncode == 1
    assert "is stale" in bad.stderr and "Old closed form" in bad.stderr
