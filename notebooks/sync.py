"""Generate the notebooks' ``.ipynb`` files from their jupytext percent sources, or check them.

The plain-text ``notebooks/NN_name.py`` files (jupytext percent format) are the sources; each
``NN_name.ipynb`` beside it is generated from its source and committed *without outputs*. The output
is deterministic: fixed notebook metadata (the source's ``jupyter:`` header minus jupytext's
version-dependent ``text_representation``), no outputs or execution counts, and cell ids derived
from the cell contents, written by ``nbformat`` (sorted keys, one-space indent).

    python notebooks/sync.py            # regenerate every notebooks/NN_*.ipynb from NN_*.py
    python notebooks/sync.py --check    # exit 1 if any .ipynb is missing, stale or orphaned

Needs only ``jupytext`` and ``nbformat`` (the ``test`` extra), not ``probsig_jax``;
``tests/test_notebooks.py`` runs the same check and then executes every notebook.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import jupytext
import nbformat

NOTEBOOK_DIR = Path(__file__).resolve().parent
SOURCE_GLOB = "[0-9][0-9]_*.py"
"""Notebook sources: ``NN_name.py`` (this tool and other helpers in the folder are not notebooks)."""
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
FORMATS = "ipynb,py:percent"


def notebook_sources(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The jupytext sources ``NN_*.py`` in ``directory``, sorted."""
    return sorted(Path(directory).glob(SOURCE_GLOB))


def paired_notebook(source: Path) -> Path:
    """The ``.ipynb`` generated from ``source``."""
    return Path(source).with_suffix(".ipynb")


def _cell_id(cell_type: str, source: str, seen: set[str]) -> str:
    base = hashlib.sha1(f"{cell_type}\n{source}".encode("utf-8")).hexdigest()[:12]
    cid, n = base, 1
    while cid in seen:
        n += 1
        cid = f"{base}-{n}"
    seen.add(cid)
    return cid


def build_notebook(source: Path) -> nbformat.NotebookNode:
    """The notebook (nbformat 4.5, no outputs, deterministic ids and metadata) converted from ``source``."""
    nb = jupytext.reads(Path(source).read_text(encoding="utf-8"), fmt="py:percent")
    meta = dict(nb.metadata)
    jt = dict(meta.get("jupytext", {}))
    jt.pop("text_representation", None)          # holds the jupytext version: not deterministic across installs
    jt["formats"] = FORMATS
    meta["jupytext"] = jt
    meta["kernelspec"] = dict(meta.get("kernelspec") or KERNELSPEC)
    meta["language_info"] = {"name": "python"}
    out = nbformat.v4.new_notebook(metadata=meta)
    out.nbformat, out.nbformat_minor = 4, 5
    seen: set[str] = set()
    for cell in nb.cells:
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(cell.source, metadata=dict(cell.metadata))
            new.outputs, new.execution_count = [], None
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(cell.source, metadata=dict(cell.metadata))
        else:
            new = nbformat.v4.new_raw_cell(cell.source, metadata=dict(cell.metadata))
        new.id = _cell_id(cell.cell_type, cell.source, seen)
        out.cells.append(new)
    nbformat.validate(out)
    return out


def render(nb: nbformat.NotebookNode) -> str:
    """The ``.ipynb`` text of ``nb`` exactly as :func:`write` stores it."""
    text = nbformat.writes(nb, version=4)
    return text if text.endswith("\n") else text + "\n"


def expected_text(source: Path) -> str:
    """The ``.ipynb`` text that ``source`` generates."""
    return render(build_notebook(source))


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """Regenerate every ``.ipynb`` whose text differs from its source's conversion; returns those written."""
    written = []
    for source in notebook_sources(directory):
        target, text = paired_notebook(source), expected_text(source)
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            _write_atomic(target, text)
            written.append(target)
    return written


def problems(directory: Path = NOTEBOOK_DIR) -> list[str]:
    """One line per missing, stale or orphaned ``.ipynb`` (empty when everything is in sync)."""
    out = []
    sources = notebook_sources(directory)
    for source in sources:
        target = paired_notebook(source)
        if not target.exists():
            out.append(f"{target.name}: missing (generate it from {source.name})")
            continue
        actual, expected = target.read_text(encoding="utf-8"), expected_text(source)
        if actual != expected:
            diff = list(difflib.unified_diff(actual.splitlines(), expected.splitlines(), f"{target.name} (committed)",
                                             f"{target.name} (from {source.name})", n=1, lineterm=""))
            shown = "\n    ".join(diff[:20]) + ("\n    ..." if len(diff) > 20 else "")
            out.append(f"{target.name}: out of sync with {source.name}\n    {shown}")
    paired = {paired_notebook(s).name for s in sources}
    for nb_path in sorted(Path(directory).glob("[0-9][0-9]_*.ipynb")):
        if nb_path.name not in paired:
            out.append(f"{nb_path.name}: no jupytext source {nb_path.with_suffix('.py').name}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if any .ipynb is out of sync")
    parser.add_argument("--dir", type=Path, default=NOTEBOOK_DIR, help="notebook folder (default: this file's)")
    args = parser.parse_args(argv)
    if args.check:
        found = problems(args.dir)
        for line in found:
            print(line, file=sys.stderr)
        if found:
            print("regenerate with: python notebooks/sync.py", file=sys.stderr)
            return 1
        print(f"{len(notebook_sources(args.dir))} notebooks in sync")
        return 0
    written = write(args.dir)
    for path in written:
        print(f"wrote {path}")
    print(f"{len(notebook_sources(args.dir))} notebooks, {len(written)} regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
