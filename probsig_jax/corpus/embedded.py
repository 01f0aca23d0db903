"""The embedded default corpus ``python-stdlib``: the interpreter's own standard library.

Documents, in this fixed order:

1. every ``*.py`` file below ``sysconfig.get_paths()["stdlib"]``, sorted by relative POSIX path,
   one document per file, excluding the folders :data:`EXCLUDED_DIRS` (third-party packages,
   test suites, caches) and :data:`EXCLUDED_FILES`, and the machine-generated character-map
   codecs (``encodings/*.py`` made by ``gencodec.py``: 256-entry tables, ~1.2 MB, not prose or code);
2. the interactive-help topics ``pydoc_data.topics.topics``, one document per topic, sorted by key
   (so ``pydoc_data/topics.py``, the same text as a Python literal, is excluded above).

Nothing is downloaded; the corpus depends only on the Python version (recorded in the fingerprint).
On CPython 3.11 this is ~10.6 MB of text in ~750 documents.
"""

from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
from pathlib import Path
from typing import Iterator

from probsig_jax.corpus.readers import ReadStats, read_files

NAME = "python-stdlib"

EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})
"""Folder names skipped anywhere below the stdlib root."""

EXCLUDED_FILES = frozenset({"pydoc_data/topics.py"})
"""Relative paths skipped (their content is included in another form)."""

GENERATED_MARKER = b"with gencodec.py"
"""Files in ``encodings/`` whose header holds this are generated codec tables and are skipped."""


def stdlib_root() -> Path:
    """Folder of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def _is_generated(path: Path, rel: str) -> bool:
    if not rel.startswith("encodings/"):
        return False
    with open(path, "rb") as fh:
        return GENERATED_MARKER in fh.read(1024)


def stdlib_files(root: str | Path | None = None) -> list[Path]:
    """The ``*.py`` files of the corpus (absolute paths), in corpus order."""
    root = stdlib_root() if root is None else Path(root)
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in EXCLUDED_DIRS]  # prune: never descend into site-packages etc.
        rel_folder = Path(folder).relative_to(root).as_posix()
        for name in files:
            rel = name if rel_folder == "." else f"{rel_folder}/{name}"
            if name.endswith(".py") and rel not in EXCLUDED_FILES and not _is_generated(Path(folder) / name, rel):
                out.append((rel, Path(folder) / name))
    return [path for _, path in sorted(out)]


def help_topics() -> dict[str, str]:
    """``pydoc_data.topics.topics`` (topic name -> help text), or ``{}`` if this Python lacks it."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        return {}
    return dict(topics)


def iter_stdlib_documents(*, stats: ReadStats | None = None, strict: bool = False) -> Iterator[str]:
    """Documents of the ``python-stdlib`` corpus in corpus order (source files, then help topics).

    A source file that is not UTF-8 (none in CPython) is counted as malformed, or raises with ``strict``.
    """
    stats = ReadStats() if stats is None else stats
    yield from read_files(stdlib_files(stdlib_root()), strict=strict, stats=stats)
    for _, text in sorted(help_topics().items()):
        stats.source_bytes += len(text.encode("utf-8"))
        yield text


def stdlib_size_estimate() -> int:
    """Bytes of input the corpus reads (file sizes + UTF-8 help topics), for progress bars."""
    return sum(p.stat().st_size for p in stdlib_files()) + sum(len(t.encode("utf-8")) for t in help_topics().values())


def stdlib_fingerprint() -> dict:
    """Identity of the corpus on this machine: Python version, file count and a sha256 over the
    (relative path, size) list and the help-topic texts."""
    root = stdlib_root()
    digest = hashlib.sha256()
    files = stdlib_files(root)
    for path in files:
        digest.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\n".encode())
    topics = help_topics()
    for key, text in sorted(topics.items()):
        digest.update(f"topic:{key}\0".encode() + text.encode("utf-8") + b"\n")
    return {"name": NAME, "python": sys.version.split()[0], "implementation": sys.implementation.name,
            "files": len(files), "topics": len(topics), "sha256": digest.hexdigest()}


def stdlib_summary() -> dict:
    """Totals of the corpus: ``{"documents", "files", "topics", "bytes"}`` (bytes of UTF-8 text)."""
    stats = ReadStats()
    docs = nbytes = 0
    for doc in iter_stdlib_documents(stats=stats):
        docs += 1
        nbytes += len(doc.encode("utf-8"))
    topics = len(help_topics())
    return {"documents": docs, "files": docs - topics, "topics": topics, "bytes": nbytes,
            "malformed": stats.total_malformed}
