"""Which corpus to read: :class:`CorpusConfig`, its document stream and its fingerprint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from probsig_jax.config_base import Config
from probsig_jax.corpus import embedded
from probsig_jax.corpus.readers import (PILE_SUFFIXES, TEXT_SUFFIXES, CorpusError, ReadStats, list_files, read_pile,
                                        read_text)
from probsig_jax.validation import ConfigError, require, require_int

FORMATS = ("auto", "pile", "text", "python-stdlib")


@dataclass(frozen=True)
class CorpusConfig(Config):
    """A corpus of documents (each a string) to tokenize.

    Attributes:
        source: "python-stdlib" (the embedded default: the Python standard library's sources and help
            topics) or a path to a file or folder of Pile-format jsonl/jsonl.zst or plain-text files.
        format: how to read source: auto (by file suffix / folder content), pile, text or python-stdlib.
        pile_set_names: keep only Pile lines whose meta.pile_set_name is one of these (empty: keep all).
        strict: raise on the first malformed line or file instead of skipping and counting it.
        max_documents: stop after this many documents (None: no limit); for quick runs.
        max_bytes: stop after the document that brings the UTF-8 text read to at least this many bytes
            (None: no limit); documents are never cut.
    """

    source: str = embedded.NAME
    format: Literal["auto", "pile", "text", "python-stdlib"] = "auto"
    pile_set_names: tuple[str, ...] = ()
    strict: bool = False
    max_documents: int | None = None
    max_bytes: int | None = None

    def _check(self) -> None:
        require(isinstance(self.source, (str, Path)) and str(self.source) != "", "source",
                f'must be "{embedded.NAME}" or a path to a file or folder, got {self.source!r}')
        require(self.format in FORMATS, "format", f"must be one of {', '.join(FORMATS)}, got {self.format!r}")
        require(isinstance(self.pile_set_names, tuple) and all(isinstance(n, str) and n for n in self.pile_set_names),
                "pile_set_names", f"must be a tuple of non-empty strings, got {self.pile_set_names!r}")
        require(isinstance(self.strict, bool), "strict", f"must be true or false, got {self.strict!r}")
        for name in ("max_documents", "max_bytes"):
            if getattr(self, name) is not None:
                require_int(getattr(self, name), name, minimum=1)
        if self.is_embedded:
            require(self.format in ("auto", "python-stdlib"), "format",
                    f'source "{embedded.NAME}" needs format auto or python-stdlib, got {self.format!r}')
        else:
            require(self.format != "python-stdlib", "source",
                    f'format python-stdlib reads only source "{embedded.NAME}", got {self.source!r}')
            require(Path(self.source).exists(), "source", f"no such file or directory: {self.source}")
        fmt = self.resolved_format()
        if self.pile_set_names:
            require(fmt == "pile", "pile_set_names",
                    f"filters Pile lines only, but source {self.source!r} is read as {fmt}")

    @property
    def is_embedded(self) -> bool:
        return str(self.source) == embedded.NAME

    def resolved_format(self) -> str:
        """``format`` with ``auto`` replaced by what the source suffix / folder content says."""
        if self.format != "auto":
            return self.format
        if self.is_embedded:
            return embedded.NAME
        path = Path(self.source)
        if path.is_file():
            for fmt, suffixes in (("pile", PILE_SUFFIXES), ("text", TEXT_SUFFIXES)):
                if any(path.name.endswith(s) for s in suffixes):
                    return fmt
            raise ConfigError("format", f"cannot tell the format of {path} from its suffix (pile: "
                                        f"{', '.join(PILE_SUFFIXES)}; text: {', '.join(TEXT_SUFFIXES)}); set format")
        has_pile, has_text = bool(list_files(path, PILE_SUFFIXES)), bool(list_files(path, TEXT_SUFFIXES))
        if has_pile and has_text:
            raise ConfigError("format", f"{path} holds both Pile ({', '.join(PILE_SUFFIXES)}) and text "
                                        f"({', '.join(TEXT_SUFFIXES)}) files; set format to pile or text")
        if not (has_pile or has_text):
            raise CorpusError(f"{path} holds no {', '.join(PILE_SUFFIXES + TEXT_SUFFIXES)} files: empty corpus")
        return "pile" if has_pile else "text"

    def input_files(self) -> list[Path]:
        """The files read, in order (the stdlib's sources for the embedded corpus)."""
        fmt = self.resolved_format()
        if fmt == embedded.NAME:
            return embedded.stdlib_files()
        return list_files(self.source, PILE_SUFFIXES if fmt == "pile" else TEXT_SUFFIXES)


def iter_documents(config: CorpusConfig, stats: ReadStats | None = None) -> Iterator[str]:
    """Documents of the corpus in order, honouring ``max_documents`` and ``max_bytes``.

    ``stats`` (optional) collects malformed counts and input bytes read. Raises CorpusError if the
    corpus yields no document at all.
    """
    config.validate()
    stats = ReadStats() if stats is None else stats
    fmt = config.resolved_format()
    if fmt == embedded.NAME:
        docs = embedded.iter_stdlib_documents(stats=stats, strict=config.strict)
    elif fmt == "pile":
        docs = read_pile(config.source, pile_set_names=config.pile_set_names, strict=config.strict, stats=stats)
    else:
        docs = read_text(config.source, strict=config.strict, stats=stats)
    count = nbytes = 0
    for doc in docs:
        if config.max_documents is not None and count >= config.max_documents:
            break
        if config.max_bytes is not None and nbytes >= config.max_bytes:
            break
        count += 1
        nbytes += utf8_len(doc)
        yield doc
    if count == 0:
        detail = f" (filter pile_set_names={list(config.pile_set_names)})" if config.pile_set_names else ""
        skipped = f"; {stats.total_malformed} malformed skipped, e.g. {stats.examples[0]}" if stats.examples else ""
        raise CorpusError(f"{config.source} yields no documents{detail}{skipped}: empty corpus")


def utf8_len(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (lone surrogates, which JSON allows, count 3 bytes each)."""
    return len(text.encode("utf-8", errors="surrogatepass"))


def source_fingerprint(config: CorpusConfig) -> dict:
    """Identity of the input: per file (relative path, size, mtime_ns), or the embedded corpus's fingerprint."""
    fmt = config.validate().resolved_format()
    if fmt == embedded.NAME:
        return embedded.stdlib_fingerprint()
    root = Path(config.source)
    files = []
    for path in config.input_files():
        st = path.stat()
        rel = path.name if root.is_file() else path.relative_to(root).as_posix()
        files.append({"path": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return {"name": fmt, "files": files}


def source_size(config: CorpusConfig) -> int:
    """Total bytes of input (on disk; compressed for ``.zst``), the unit of ReadStats.source_bytes."""
    if config.resolved_format() == embedded.NAME:
        return embedded.stdlib_size_estimate()
    return sum(p.stat().st_size for p in config.input_files())
