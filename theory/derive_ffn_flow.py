#!/usr/bin/env python
"""Derive the Emb-MLP's small-initialisation flow with sympy, verify it, write theory/ffn_gradient_flow.md.

The same flags as ``derive_linear_flow.py`` (``--check``, ``--skip-verify``, ``--out``); verification takes about
10 s. The logic lives in :func:`probsig_jax.theory.ffn_writeup.main`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))        # this checkout's package, run as a script
from probsig_jax.theory.ffn_writeup import main  # noqa: E402

raise SystemExit(main(default_out=Path(__file__).resolve().parent / "ffn_gradient_flow.md"))
