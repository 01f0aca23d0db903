#!/usr/bin/env python
"""Derive the linear model's gradient flow with sympy and write theory/linear_gradient_flow.md.

Usage (from the repository root)::

    python theory/derive_linear_flow.py                 # verify (about 10-15 s), then write the write-up
    python theory/derive_linear_flow.py --check         # exit 1 if the committed write-up is stale
    python theory/derive_linear_flow.py --skip-verify   # only the cheap checks of derive_linear_flow
    python theory/derive_linear_flow.py --out other.md  # write (or check) another file

Exit status: 0 on success, 1 if a verification check fails or (with --check) the
file is missing or differs from a fresh rendering, 2 on bad arguments. The logic
lives in :func:`probsig_jax.theory.writeup.main`.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make this checkout's package importable
    sys.path.insert(0, str(REPO_ROOT))

from probsig_jax.theory.writeup import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(default_out=REPO_ROOT / "theory" / "linear_gradient_flow.md"))
