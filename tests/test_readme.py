"""The README's runnable examples (```python blocks; ```py blocks are sketches with placeholders) run as written,
and its error-message example is what the CLI prints."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np

from probsig_jax import simulate

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        exec(compile(code, str(README), "exec"), {})
    escape, rel = map(float, capsys.readouterr().out.split()[-2:])
    assert escape > 0 and np.isfinite(escape)
    assert rel < 0.02            # closed form vs exact flow before the escape


def test_readme_error_example_is_real(tmp_path, capsys):
    match = re.search(r"e\.g\. `(python -m probsig_jax\.simulate linear: error: [^`]*)`", README.read_text())
    assert match
    assert simulate.main(["--learning-rate", "-1", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip() == match.group(1)


def test_readme_sketch_imports_exist():
    """The ```py sketches use placeholders (paths, token batches), but every name they import must exist."""
    blocks = re.findall(r"```py\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks
    for code in blocks:
        tree = ast.parse(code)
        imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        assert imports
        exec(compile(ast.Module(body=imports, type_ignores=[]), str(README), "exec"), {})


def test_readme_llm_options_exist():
    """Every `--option` the README's E4/E5/E6 sections mention is an option of `simulate llm`, `llm-edit`,
    `pretrained`, `ladder`, `modadd`, `modadd-gradients`, `modadd-regimes` or `modadd-noise`."""
    text = README.read_text()
    section = text[text.index("### E4:"):text.index("## Command line")]
    mentioned = set(re.findall(r"(--[a-z][a-z0-9-]+)", section))
    parser, _ = simulate.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    commands = ("llm", "llm-edit", "pretrained", "ladder", "modadd", "modadd-gradients", "modadd-regimes",
                "modadd-noise")
    known = {opt for name in commands for a in sub.choices[name]._actions for opt in a.option_strings}
    assert mentioned and mentioned <= known, sorted(mentioned - known)
