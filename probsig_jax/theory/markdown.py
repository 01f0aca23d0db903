"""What the generated theory write-ups share: LaTeX of sympy objects, Markdown pieces, the check table, and
the command line that verifies, renders, writes atomically or checks a write-up for staleness.

Each write-up (:mod:`probsig_jax.theory.writeup` for the linear model, :mod:`probsig_jax.theory.ffn_writeup`
for the Emb-MLP) supplies its rendering and its derivation as a :class:`WriteupDocument`; :func:`document_main`
is the one command line behind ``theory/derive_*_flow.py``.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import sympy as sp

from probsig_jax.runs import write_text

#: Marker line that starts the verification section. Everything before it depends
#: only on the derivation, so ``--check --skip-verify`` compares that part alone.
VERIFICATION_MARKER = "<!-- verification-checks -->"

# Display names for auxiliary symbols whose sympy names are not good LaTeX.
# Keyed by symbol name; applied by :func:`latex` to whatever symbols of that name
# an expression holds (their assumptions do not matter).
DISPLAY_NAMES = {
    "logsumexp_z": r"\operatorname{logsumexp}(z)",
    "mean_w2": r"\overline{w^{2}}",
    "one": r"\mathbf{1}",
}


def latex(expr) -> str:
    """``sympy.latex`` of ``expr`` with the write-up's display names for auxiliary symbols."""
    free = getattr(expr, "free_symbols", set())
    names = {s: DISPLAY_NAMES[s.name] for s in free if getattr(s, "name", None) in DISPLAY_NAMES}
    return sp.latex(expr, symbol_names=names) if names else sp.latex(expr)


def display(lhs: str, expr, field: str | None = None, suffix: str = "") -> str:
    """A display-math block ``lhs = latex(expr) suffix``, labelled with the derivation field it shows."""
    body = f"{lhs} = {latex(expr)}{suffix}"
    label = f"`{field}`:\n\n" if field else ""
    return f"{label}$$\n{body}\n$$\n"


def code_span(text: str) -> str:
    """A Markdown code span that survives ``|`` in a table cell."""
    text = text.replace("|", "\\|")
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def check_table(checks: Mapping[str, bool], cheap: set, cheap_by: str, full_by: str) -> list[str]:
    """The Markdown table of named check results; ``cheap`` names the checks run by ``cheap_by`` (the rest by
    ``full_by``), and a table of the cheap checks alone says it was rendered with ``--skip-verify``."""
    out = []
    if set(checks) == cheap:
        out += [f"Only the checks run by `{cheap_by}` are listed: this file was rendered "
                f"without `{full_by}` (`--skip-verify`).", ""]
    out += ["| # | check | run by | result |", "|---|---|---|---|"]
    for i, (name, ok) in enumerate(checks.items(), start=1):
        by = f"`{cheap_by}`" if name in cheap else f"`{full_by}`"
        out.append(f"| {i} | {code_span(name)} | {by} | {'passed' if ok else '**FAILED**'} |")
    out.append("")
    return out


# ----------------------------------------------------------------------------- command line

def split_verification(text: str) -> tuple[str, str]:
    """Split a rendered document into (derivation part, verification part) at :data:`VERIFICATION_MARKER`."""
    head, sep, tail = text.partition(VERIFICATION_MARKER)
    return head, sep + tail


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` atomically, creating its folder
    (:func:`probsig_jax.runs.write_text`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text)


@dataclass(frozen=True)
class WriteupDocument:
    """One generated write-up: how to derive and verify it, how to render it, and its command line.

    ``build(skip_verify)`` returns ``(derivation, checks)`` (the cheap checks when ``skip_verify``; raises
    AssertionError on a failed derivation); ``render(derivation, checks)`` returns the Markdown."""

    prog: str
    description: str
    default_out: Path
    generator_command: str
    verify_cost: str
    build: Callable[[bool], tuple[object, dict]]
    render: Callable[[object, Mapping[str, bool] | None], str]


def _parser(doc: WriteupDocument, default_out: Path) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=doc.prog, description=doc.description)
    p.add_argument("--out", type=Path, default=default_out,
                   help=f"the Markdown file to write or check (default: {default_out})")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if --out differs from a fresh rendering (stale write-up)")
    p.add_argument("--skip-verify", action="store_true",
                   help=f"skip the expensive verification ({doc.verify_cost}) and list only the cheap checks of "
                        "the derivation; with --check, compare only the part before the verification table")
    return p


def document_main(doc: WriteupDocument, argv: Sequence[str] | None = None, *,
                  default_out: Path | None = None) -> int:
    """Command line of a generated write-up; returns the exit status (0 ok, 1 failure)."""
    args = _parser(doc, Path(default_out) if default_out is not None else doc.default_out).parse_args(argv)
    try:
        der, checks = doc.build(args.skip_verify)
    except AssertionError as exc:
        print(f"error: the derivation failed verification: {exc}", file=sys.stderr)
        return 1
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        print(f"error: {len(failed)} verification check(s) failed: {failed}", file=sys.stderr)
        return 1
    text = doc.render(der, checks)
    out: Path = args.out

    if args.check:
        if not out.is_file():
            print(f"error: {out} does not exist; generate it with {doc.generator_command}", file=sys.stderr)
            return 1
        current = out.read_bytes().decode("utf-8", errors="replace")
        expected, found = text, current
        if args.skip_verify:
            expected, found = split_verification(text)[0], split_verification(current)[0]
        if found != expected:
            diff = list(difflib.unified_diff(found.splitlines(), expected.splitlines(),
                                             fromfile=f"{out} (committed)", tofile="regenerated", lineterm="", n=1))
            shown = diff[:40] + ([f"... ({len(diff) - 40} more diff lines)"] if len(diff) > 40 else [])
            print("\n".join(shown), file=sys.stderr)
            print(f"error: {out} is stale; regenerate it with {doc.generator_command}", file=sys.stderr)
            return 1
        scope = " (derivation part; verification table not compared)" if args.skip_verify else ""
        print(f"{out} is up to date{scope}")
        return 0

    if out.is_file() and out.read_bytes() == text.encode("utf-8"):
        print(f"{out} is already up to date ({len(checks)} checks passed)")
        return 0
    write_atomic(out, text)
    print(f"wrote {out} ({len(checks)} checks passed)")
    return 0
