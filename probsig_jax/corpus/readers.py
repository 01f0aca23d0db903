"""Document readers: Pile-format ``jsonl``/``jsonl.zst`` and plain-text files.

Each reader is a generator of documents (``str``). Malformed input (a line that is not
JSON, holds non-UTF-8 bytes or lacks a string ``text``; a text file that is not UTF-8)
is skipped and counted in a :class:`ReadStats` by default, or raises
:class:`CorpusError` naming the file and line with ``strict=True``. Blank lines are
ignored silently.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from probsig_jax.validation import ConfigError

PILE_SUFFIXES = (".jsonl", ".jsonl.zst")
TEXT_SUFFIXES = (".txt", ".md", ".rst")
MAX_EXAMPLES = 10


class CorpusError(ConfigError):
    """Unusable corpus input (malformed line in strict mode, empty corpus, incomplete shard directory)."""

    def __init__(self, message: str, field: str = "corpus"):
        super().__init__(field, message)


@dataclass
class ReadStats:
    """What a reader skipped and how far it got (mutable; filled in while reading).

    Attributes:
        malformed: reason -> count of skipped lines/files (``invalid_json``, ``invalid_utf8``, ``missing_text``,
            ``truncated``: a compressed file cut short).
        examples: the first :data:`MAX_EXAMPLES` ``"file:line: reason"`` strings.
        source_bytes: bytes of input consumed so far (compressed bytes for ``.zst``), for progress bars.
    """

    malformed: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    source_bytes: int = 0

    @property
    def total_malformed(self) -> int:
        return sum(self.malformed.values())

    def record(self, reason: str, where: str, detail: str, strict: bool) -> None:
        """Count one malformed item, or raise CorpusError when ``strict``."""
        message = f"{where}: {reason}: {detail}"
        if strict:
            raise CorpusError(f"{message} (strict=True; set strict=False to skip and count malformed input)")
        self.malformed[reason] = self.malformed.get(reason, 0) + 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(message)

    def to_json(self) -> dict:
        return {"counts": dict(sorted(self.malformed.items())), "total": self.total_malformed,
                "examples": list(self.examples)}


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    return any(path.name.endswith(s) for s in suffixes)


def list_files(path: str | Path, suffixes: tuple[str, ...]) -> list[Path]:
    """``path`` itself if it is a file, else every file below it whose name ends with one of ``suffixes``,
    recursively, sorted by relative POSIX path (hidden files and folders skipped)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ConfigError("source", f"no such file or directory: {path}")
    found = [p for p in path.rglob("*") if p.is_file() and _has_suffix(p, suffixes)
             and not any(part.startswith(".") for part in p.relative_to(path).parts)]
    return sorted(found, key=lambda p: p.relative_to(path).as_posix())


class _CountingReader(io.RawIOBase):
    """Raw binary stream wrapper that counts the bytes read from the underlying file."""

    def __init__(self, raw: BinaryIO, stats: ReadStats):
        self._raw, self._stats = raw, stats

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._raw.readinto(buffer)
        self._stats.source_bytes += n or 0
        return n


class _Truncated(Exception):
    """The compressed stream ended inside a zstd frame."""


def _zstd_chunks(raw: BinaryIO, path: Path) -> Iterator[bytes]:
    """Decompressed chunks of a (possibly multi-frame) zstd stream, frame by frame; raises :class:`_Truncated`
    when the input ends inside a frame (``zstd -t``'s "premature end"), which a streaming reader would
    otherwise take for the end of the data."""
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    frame, fed = dctx.decompressobj(), False
    try:
        for data in iter(lambda: raw.read(1 << 20), b""):
            while data:
                out = frame.decompress(data)
                fed = True
                if out:
                    yield out
                if not frame.eof:
                    break
                data = frame.unused_data
                frame, fed = dctx.decompressobj(), False
    except zstandard.ZstdError as err:
        raise CorpusError(f"{path}: corrupt zstd stream: {err}") from None
    if fed and not frame.eof:
        raise _Truncated


def _binary_lines(path: Path, stats: ReadStats, strict: bool) -> Iterator[bytes]:
    """Binary lines of a ``.jsonl`` or (streamed, possibly multi-frame) ``.jsonl.zst`` file. A ``.zst`` file cut
    short is malformed (``truncated``: counted, its partial last line dropped; or an error under ``strict``)."""
    with open(path, "rb", buffering=0) as fh:
        counted = io.BufferedReader(_CountingReader(fh, stats), buffer_size=1 << 20)
        if not path.name.endswith(".zst"):
            yield from counted
            return
        pending = b""
        try:
            for chunk in _zstd_chunks(counted, path):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    yield line + b"\n"
        except _Truncated:
            stats.record("truncated", str(path), f"the zstd stream ends inside a frame after {stats.source_bytes} "
                         "bytes (file cut short?); the partial last line is dropped", strict)
            return
        if pending:
            yield pending


def read_pile(path: str | Path, *, pile_set_names: tuple[str, ...] = (), strict: bool = False,
              stats: ReadStats | None = None) -> Iterator[str]:
    """Documents (field ``text``) of Pile-format JSON lines: one file or every ``*.jsonl``/``*.jsonl.zst``
    below a folder, in sorted order.

    ``pile_set_names`` keeps only lines whose ``meta.pile_set_name`` is one of them (empty: keep all).
    Line numbers in messages are 1-based lines of the decompressed file.
    """
    stats = ReadStats() if stats is None else stats
    accepted = frozenset(pile_set_names)
    for file in list_files(path, PILE_SUFFIXES):
        for lineno, line in enumerate(_binary_lines(file, stats, strict), start=1):
            if not line.strip():
                continue
            where = f"{file}:{lineno}"
            try:
                decoded = line.decode("utf-8")
            except UnicodeDecodeError as err:
                stats.record("invalid_utf8", where, f"byte 0x{line[err.start]:02X} at column {err.start + 1}", strict)
                continue
            try:
                record = json.loads(decoded)
            except ValueError as err:
                stats.record("invalid_json", where, str(err), strict)
                continue
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str):
                what = "not a JSON object" if not isinstance(record, dict) else (
                    "no 'text' field" if "text" not in record else f"'text' is {type(text).__name__}, not a string")
                stats.record("missing_text", where, what, strict)
                continue
            if accepted:
                meta = record.get("meta")
                if not isinstance(meta, dict) or meta.get("pile_set_name") not in accepted:
                    continue
            yield text


def read_text(path: str | Path, *, strict: bool = False, stats: ReadStats | None = None) -> Iterator[str]:
    """One document per file: a single text file, or every ``*.txt``/``*.md``/``*.rst`` below a folder
    (recursive, sorted). Files that are not valid UTF-8 are malformed (``invalid_utf8``)."""
    yield from read_files(list_files(path, TEXT_SUFFIXES), strict=strict, stats=stats)


def read_files(files: Iterable[Path], *, strict: bool = False, stats: ReadStats | None = None) -> Iterator[str]:
    """Each file as one UTF-8 document; a file that is not valid UTF-8 is malformed (``invalid_utf8``, with
    the line of the first bad byte): skipped and counted, or an error under ``strict``."""
    stats = ReadStats() if stats is None else stats
    for file in files:
        raw = Path(file).read_bytes()
        stats.source_bytes += len(raw)
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as err:
            line = raw.count(b"\n", 0, err.start) + 1
            stats.record("invalid_utf8", f"{file}:{line}", f"byte 0x{raw[err.start]:02X} at offset {err.start}",
                         strict)
