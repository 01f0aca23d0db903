"""Tokenize a corpus into flat uint32 token shards, cached, verified and resumable.

Layout of a shard directory ``cache_dir/<source>-<key>``::

    shard_00000.bin ...   little-endian uint32 token ids: every document's ids followed by eos_id
    progress.json         completed shards of an unfinished run (removed when the run completes)
    manifest.json         written last: config, fingerprints, per-shard sha256, totals

``<key>`` hashes the source fingerprint (per input file: relative path, size, mtime_ns; for the
embedded corpus: Python version + file list), the tokenizer fingerprint, the document limits and
``shard_tokens``, so a changed input or tokenizer gets a fresh directory and an unchanged one is
re-used without tokenizing.

Shards hold whole documents: a shard is closed after the first document that brings it to at
least ``shard_tokens`` tokens (the last shard may be shorter). Boundaries therefore depend only on
the document stream, and an interrupted run resumes at the first shard missing from
``progress.json``, producing byte-identical files.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import time
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from probsig_jax.corpus.config import CorpusConfig, iter_documents, source_fingerprint, source_size, utf8_len
from probsig_jax.corpus.readers import CorpusError, ReadStats
from probsig_jax.progress import progress_bar
from probsig_jax.runs import ensure_directory, to_jsonable, write_bytes, write_json
from probsig_jax.validation import require, require_int

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PROGRESS = "progress.json"
TOKEN_DTYPE = np.dtype("<u4")
DEFAULT_SHARD_TOKENS = 1 << 22
DEFAULT_BATCH_BYTES = 1 << 18


@dataclass(frozen=True)
class TokenShards:
    """A complete shard directory (see the module docstring) and its manifest.

    Attributes:
        directory: the shard directory.
        manifest: the parsed ``manifest.json``.
    """

    directory: Path
    manifest: dict

    @property
    def num_tokens(self) -> int:
        """Total tokens in all shards, eos tokens included."""
        return int(self.manifest["num_tokens"])

    @property
    def num_documents(self) -> int:
        return int(self.manifest["documents"])

    @property
    def num_bytes(self) -> int:
        """UTF-8 bytes of the documents' text."""
        return int(self.manifest["bytes"])

    @property
    def eos_id(self) -> int:
        return int(self.manifest["tokenizer"]["eos_id"])

    @property
    def malformed(self) -> dict:
        """``{"counts": {reason: n}, "total": n, "examples": ["file:line: reason: detail", ...]}``."""
        return self.manifest["malformed"]

    @property
    def paths(self) -> list[Path]:
        return [self.directory / s["file"] for s in self.manifest["shards"]]

    def arrays(self) -> list[np.memmap]:
        """One read-only ``np.memmap`` of dtype uint32, shape ``(shard tokens,)`` per shard."""
        return [np.memmap(p, dtype=TOKEN_DTYPE, mode="r") for p in self.paths]

    def tokens(self) -> np.ndarray:
        """All tokens as one contiguous uint32 array of shape ``(num_tokens,)`` (in memory: small corpora)."""
        arrays = self.arrays()
        return np.concatenate(arrays).astype(np.uint32, copy=False) if arrays else np.zeros(0, np.uint32)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_shard_files(directory: Path, shards: list[dict], verify: bool) -> str | None:
    """None if every shard file exists with the recorded size (and sha256 when ``verify``), else why not."""
    for shard in shards:
        path = directory / shard["file"]
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != TOKEN_DTYPE.itemsize * int(shard["num_tokens"]):
            return f"{path} has {path.stat().st_size} bytes, expected {TOKEN_DTYPE.itemsize * int(shard['num_tokens'])}"
        if verify and _sha256_file(path) != shard["sha256"]:
            return f"{path} does not match its recorded sha256 (its content changed)"
    return None


def open_shards(directory: str | Path, *, verify: bool = False) -> TokenShards:
    """Open a complete shard directory; ``verify`` also checks every shard's sha256.

    Raises CorpusError when the manifest is missing (e.g. an interrupted run: call tokenize_corpus
    again to resume), unreadable, of another format version, or a shard file is missing or the wrong size.
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        hint = (" (an unfinished run left progress.json: call tokenize_corpus again to resume it)"
                if (directory / PROGRESS).is_file() else "")
        raise CorpusError(f"{directory} has no {MANIFEST}: not a complete token shard directory{hint}")
    try:
        manifest = json.loads(manifest_path.read_text())
        shards = manifest["shards"]
        require(manifest.get("format_version") == FORMAT_VERSION, "corpus",
                f"{manifest_path} has format_version {manifest.get('format_version')}, expected {FORMAT_VERSION}")
    except (ValueError, KeyError, TypeError) as err:
        raise CorpusError(f"{manifest_path} is unreadable: {err}") from None
    problem = _check_shard_files(directory, shards, verify)
    if problem is not None:
        raise CorpusError(f"incomplete shard directory: {problem}")
    return TokenShards(directory=directory, manifest=manifest)


def shard_identity(config: CorpusConfig, tokenizer, shard_tokens: int) -> dict:
    """Everything the shard contents depend on (hashed into the directory name)."""
    return {
        "format_version": FORMAT_VERSION,
        "format": config.resolved_format(),
        "source": source_fingerprint(config),
        "pile_set_names": list(config.pile_set_names),
        "max_documents": config.max_documents,
        "max_bytes": config.max_bytes,
        "tokenizer": {"name": tokenizer.name, "fingerprint": tokenizer.fingerprint(), "eos_id": int(tokenizer.eos_id),
                      "vocab_size": int(tokenizer.vocab_size)},
        "shard_tokens": shard_tokens,
        "dtype": TOKEN_DTYPE.str,
    }


def shard_directory(config: CorpusConfig, tokenizer, cache_dir: str | Path, *,
                    shard_tokens: int = DEFAULT_SHARD_TOKENS) -> tuple[Path, str, dict]:
    """``(directory, key, identity)`` where ``tokenize_corpus`` keeps this corpus's shards."""
    identity = shard_identity(config, tokenizer, shard_tokens)
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(config.source).rstrip("/")).name.split(".")[0] or "corpus")
    return Path(cache_dir) / f"{label[:40]}-{key[:16]}", key, identity


def _encode_documents(tokenizer, docs: list[str], eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens, lengths)``: the documents' ids each followed by ``eos_id`` as one uint32 array, and the
    per-document lengths (eos included). Runs in a worker thread (tiktoken releases the GIL)."""
    if hasattr(tokenizer, "encode_arrays"):
        arrays = tokenizer.encode_arrays(docs)
    else:  # a duck-typed tokenizer with only the basic protocol
        arrays = [np.asarray(ids, dtype=TOKEN_DTYPE) for ids in tokenizer.encode_batch(docs, num_threads=1)]
    eos = np.full(1, eos_id, dtype=TOKEN_DTYPE)
    lengths = np.fromiter((a.size + 1 for a in arrays), dtype=np.int64, count=len(arrays))
    pieces = [piece for a in arrays for piece in (a, eos)]
    return np.concatenate(pieces).astype(TOKEN_DTYPE, copy=False), lengths


class _ShardWriter:
    """Collects document token runs, cuts them into shards at document boundaries, writes each shard
    and then the progress file atomically."""

    def __init__(self, directory: Path, key: str, shard_tokens: int, done: list[dict]):
        self.directory, self.key, self.shard_tokens = directory, key, shard_tokens
        self.shards = list(done)
        self._chunks: list[np.ndarray] = []
        self._tokens = self._docs = self._bytes = 0

    def add(self, flat: np.ndarray, lengths: np.ndarray, doc_bytes: np.ndarray) -> None:
        ends = np.cumsum(lengths)
        first = 0
        while first < len(lengths):
            base = int(ends[first - 1]) if first else 0
            need = self.shard_tokens - self._tokens
            k = int(np.searchsorted(ends[first:] - base, need))  # first document reaching the shard size
            last = min(k, len(lengths) - first - 1) + first
            self._chunks.append(flat[base:int(ends[last])])
            self._tokens += int(ends[last]) - base
            self._docs += last - first + 1
            self._bytes += int(doc_bytes[first:last + 1].sum())
            if self._tokens >= self.shard_tokens:
                self.flush()
            first = last + 1

    def flush(self) -> None:
        if not self._chunks:
            return
        data = np.concatenate(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        name = f"shard_{len(self.shards):05d}.bin"
        data = np.ascontiguousarray(data, dtype=TOKEN_DTYPE)
        write_bytes(self.directory / name, data)
        self.shards.append({"file": name, "num_tokens": int(data.size), "documents": self._docs,
                            "bytes": self._bytes, "sha256": hashlib.sha256(memoryview(data).cast("B")).hexdigest()})
        self._chunks, self._tokens, self._docs, self._bytes = [], 0, 0, 0
        write_json(self.directory / PROGRESS, {"key": self.key, "shards": self.shards})


def _completed_shards(directory: Path, key: str) -> list[dict]:
    """Shards recorded by an unfinished run with the same key whose files are intact (a valid prefix)."""
    try:
        progress = json.loads((directory / PROGRESS).read_text())
        if progress.get("key") != key:
            return []
        shards = list(progress["shards"])
    except (OSError, ValueError, KeyError, TypeError):
        return []
    good = []
    for shard in shards:
        if _check_shard_files(directory, [shard], verify=True) is not None:
            break
        good.append(shard)
    return good


def _reuse(directory: Path, key: str, config: CorpusConfig) -> TokenShards | None:
    """The cached shards of ``key`` if they are complete and intact: sizes *and* content (sha256, about
    1 s per GB; ``benchmarks/corpus_pipeline.py`` measures it), so a corrupted cache is never reused."""
    if not (directory / MANIFEST).is_file():
        return None
    try:
        shards = open_shards(directory, verify=True)
    except CorpusError as err:
        warnings.warn(f"the token-shard cache is damaged, re-tokenizing the corpus: {err.message}", RuntimeWarning,
                      stacklevel=3)
        return None
    if shards.manifest.get("key") != key:
        return None
    if config.strict and shards.malformed["total"]:
        raise CorpusError(f"strict=True but this corpus has {shards.malformed['total']} malformed lines, e.g. "
                          f"{shards.malformed['examples'][0]}")
    return shards


def default_cache_dir() -> Path:
    """Where shards are cached unless a directory is given: ``$PROBSIG_CACHE/shards``, else
    ``~/.cache/probsig-jax/shards``."""
    root = os.environ.get("PROBSIG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "probsig-jax")
    return Path(root) / "shards"


def tokenize_corpus(config: CorpusConfig, tokenizer, cache_dir: str | Path | None = None, *, num_workers: int = 2,
                    shard_tokens: int = DEFAULT_SHARD_TOKENS, batch_bytes: int = DEFAULT_BATCH_BYTES,
                    quiet: bool = False) -> TokenShards:
    """Tokenize ``config``'s documents into uint32 shards under ``cache_dir`` (or re-use earlier ones).

    ``cache_dir`` ``None`` or ``""``: :func:`default_cache_dir`.

    Every document becomes ``tokenizer.encode(doc) + [tokenizer.eos_id]``; the concatenation over
    documents, in corpus order, is split into shards of at least ``shard_tokens`` tokens at document
    boundaries. Batches of about ``batch_bytes`` bytes of text are encoded by ``num_workers`` threads;
    the result does not depend on ``num_workers`` or ``batch_bytes``.

    A complete directory with the same key is re-used without tokenizing when every shard has its recorded
    size and sha256 (else it is rebuilt, with a one-line warning); an unfinished one resumes after its last completed shard. A progress bar
    (bytes of input, rate, ETA) goes to stderr unless ``quiet``.
    """
    config.validate()
    num_workers = require_int(num_workers, "num_workers", minimum=1)
    shard_tokens = require_int(shard_tokens, "shard_tokens", minimum=1)
    batch_bytes = require_int(batch_bytes, "batch_bytes", minimum=1)
    for attr in ("name", "vocab_size", "eos_id", "encode_batch", "fingerprint"):  # encode_arrays is optional
        require(hasattr(tokenizer, attr), "tokenizer", f"must be a probsig_jax.corpus.tokenizer.Tokenizer, lacks {attr}")
    require(0 < int(tokenizer.vocab_size) <= 1 << 32, "tokenizer",
            f"vocab_size must fit uint32 token ids, got {tokenizer.vocab_size}")
    eos_id = int(tokenizer.eos_id)
    start = time.perf_counter()

    directory, key, identity = shard_directory(config, tokenizer, cache_dir or default_cache_dir(),
                                               shard_tokens=shard_tokens)
    reused = _reuse(directory, key, config)
    if reused is not None:
        return reused
    ensure_directory(directory, "cache_dir")
    (directory / MANIFEST).unlink(missing_ok=True)

    done = _completed_shards(directory, key)
    stats = ReadStats()
    docs = iter_documents(config, stats)
    skip_docs, skip_bytes = sum(s["documents"] for s in done), sum(s["bytes"] for s in done)
    if done:
        seen = sum(utf8_len(next(docs, "")) for _ in range(skip_docs))
        if seen != skip_bytes:  # input changed without changing its fingerprint: start over
            done, stats = [], ReadStats()
            docs = iter_documents(config, stats)
    writer = _ShardWriter(directory, key, shard_tokens, done)

    by_text = config.max_bytes is not None  # progress in text bytes up to max_bytes, else in input bytes
    total = config.max_bytes if by_text else source_size(config)
    text_bytes = skip_bytes if done else 0
    with progress_bar(total, f"tokenize {Path(str(config.source)).name}", quiet=quiet, unit="B") as bar, \
            ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="tokenize") as pool:
        bar.unit_scale, bar.unit_divisor = True, 1024
        bar.update((text_bytes if by_text else stats.source_bytes) - bar.n)
        pending: deque = deque()

        def consume() -> None:
            future, sizes, position = pending.popleft()
            flat, lengths = future.result()
            writer.add(flat, lengths, sizes)
            bar.update(min(position, total) - bar.n)

        def submit(batch: list[str], sizes: list[int]) -> None:
            pending.append((pool.submit(_encode_documents, tokenizer, batch, eos_id), np.asarray(sizes),
                            text_bytes if by_text else stats.source_bytes))
            while len(pending) > 2 * num_workers:  # bounded read-ahead; results are consumed in order
                consume()

        batch, sizes, size = [], [], 0
        for doc in docs:
            batch.append(doc)
            sizes.append(utf8_len(doc))
            size += sizes[-1]
            text_bytes += sizes[-1]
            if size >= batch_bytes:
                submit(batch, sizes)
                batch, sizes, size = [], [], 0
        if batch:
            submit(batch, sizes)
        while pending:
            consume()
        writer.flush()

    shards = writer.shards
    manifest = {
        "format_version": FORMAT_VERSION,
        "key": key,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "corpus": to_jsonable(config),
        "identity": identity,
        "source": identity["source"],
        "tokenizer": identity["tokenizer"],
        "dtype": TOKEN_DTYPE.str,
        "shard_tokens": shard_tokens,
        "shards": shards,
        "num_tokens": sum(s["num_tokens"] for s in shards),
        "documents": sum(s["documents"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
        "malformed": stats.to_json(),
        "resumed_shards": len(done),
        "num_workers": num_workers,
        "elapsed_seconds": round(time.perf_counter() - start, 3),
    }
    listed = {s["file"] for s in shards}
    for stale in directory.glob("shard_*.bin"):
        if stale.name not in listed:
            stale.unlink()
    write_json(directory / MANIFEST, manifest)
    (directory / PROGRESS).unlink(missing_ok=True)
    return TokenShards(directory=directory, manifest=manifest)
