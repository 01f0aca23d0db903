"""The input and output embeddings of a local Hugging Face causal LM checkpoint, without building the model.

:func:`read_embeddings` reads ``config.json``, finds the embedding tensor names of the model family in
:data:`ARCHITECTURES` (chosen by ``model_type``, else by ``architectures``), and reads exactly those one or two
tensors from ``model.safetensors`` (or, for a sharded checkpoint, from the shard that
``model.safetensors.index.json`` names for each); no other tensor is read and neither torch nor transformers is
needed::

    from probsig_jax.models.hf_embeddings import read_embeddings
    e = read_embeddings("path/to/pythia-70m", vocab_size=tokenizer.vocab_size)   # cuts Pythia's padded rows
    e.embedding, e.unembedding         # (V, H) float32 each; e.rows_dropped padded rows were cut

Tied models (``tie_word_embeddings``, with the family's transformers default when ``config.json`` omits it) use
the input embedding as the output one: ``unembedding is embedding``. ``embedding_tensor=`` /
``unembedding_tensor=`` name the tensors by hand (any architecture; the same name twice means tied). Every bad
input is one :class:`~probsig_jax.validation.ConfigError` naming the file. Gemma multiplies its input embeddings
by sqrt(H) in the forward pass; the stored (unscaled) weight is returned, which leaves cosine similarities alike.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from safetensors import SafetensorError, safe_open

from probsig_jax.validation import ConfigError, require, require_int


@dataclass(frozen=True)
class EmbeddingLayout:
    """Where one model family keeps its embeddings.

    Attributes:
      embedding: candidate names of the input embedding (V, H); the first one present is read (the second is
        the name in a checkpoint saved from the base model, e.g. ``GPT2Model``).
      unembedding: candidate names of the output embedding (V, H) (the LM head's weight).
      tied_default: transformers' default of ``tie_word_embeddings`` for the family.
      architectures: the transformers class names of the family (``config.json``'s ``architectures``).
    """

    embedding: tuple[str, ...]
    unembedding: tuple[str, ...]
    tied_default: bool
    architectures: tuple[str, ...]


def _decoder(cls: str, tied: bool) -> EmbeddingLayout:
    return EmbeddingLayout(("model.embed_tokens.weight", "embed_tokens.weight"), ("lm_head.weight",), tied,
                           (f"{cls}ForCausalLM", f"{cls}Model"))


ARCHITECTURES: dict[str, EmbeddingLayout] = {
    "gpt2": EmbeddingLayout(("transformer.wte.weight", "wte.weight"), ("lm_head.weight",), True,
                            ("GPT2LMHeadModel", "GPT2Model")),
    "gpt_neox": EmbeddingLayout(("gpt_neox.embed_in.weight", "embed_in.weight"), ("embed_out.weight",), False,
                                ("GPTNeoXForCausalLM", "GPTNeoXModel")),
    "llama": _decoder("Llama", False), "mistral": _decoder("Mistral", False), "qwen2": _decoder("Qwen2", False),
    "qwen3": _decoder("Qwen3", False), "gemma": _decoder("Gemma", True), "gemma2": _decoder("Gemma2", True),
}
"""``model_type`` -> :class:`EmbeddingLayout` (names checked against checkpoints saved by transformers 5)."""

_INT_KEYS = ("vocab_size", "hidden_size", "n_embd", "num_hidden_layers", "n_layer", "num_attention_heads", "n_head",
             "num_key_value_heads", "intermediate_size", "max_position_embeddings", "n_positions", "head_dim",
             "sliding_window")
_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
_OTHER_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")


@dataclass(frozen=True, eq=False)
class CheckpointEmbeddings:
    """The embedding matrices of one checkpoint as float32 token rows (row i = token id i).

    Attributes:
      embedding: (V, H) float32, the input embedding W_E.
      unembedding: (V, H) float32, the output embedding W_U (the LM head's weight: logits = h @ W_U.T); the same
        array as ``embedding`` when ``tied``.
      tied: the model ties its output embedding to its input embedding.
      architecture: ``config.json``'s ``architectures[0]`` (else its ``model_type``).
      model_type: ``config.json``'s ``model_type`` ('' when absent).
      tensor_names: ``(embedding name, unembedding name)``; the same name twice when tied.
      rows_in_file: the embedding rows stored in the checkpoint (>= V).
      rows_dropped: padded rows cut beyond the tokenizer's ids (``rows_in_file - V``; 0 when not cut).
      num_layers: ``num_hidden_layers`` (or GPT-2's ``n_layer``) of ``config.json``; None when absent.
      path: the checkpoint directory.
      files: the safetensors file(s) the tensors were read from.
    """

    embedding: np.ndarray
    unembedding: np.ndarray
    tied: bool
    architecture: str
    model_type: str
    tensor_names: tuple[str, str]
    rows_in_file: int
    rows_dropped: int
    num_layers: int | None
    path: Path
    files: tuple[Path, ...]

    @property
    def vocab_size(self) -> int:
        """V, the rows kept."""
        return int(self.embedding.shape[0])

    @property
    def hidden_size(self) -> int:
        """H."""
        return int(self.embedding.shape[1])

    def truncated(self, num_ids: int) -> "CheckpointEmbeddings":
        """Only the first ``num_ids`` rows (the tokenizer's ids: the padded rows beyond them are cut and counted in
        ``rows_dropped``); fewer rows than ``num_ids`` is a ConfigError naming the file."""
        num_ids = _check_rows(self.embedding.shape[0], num_ids, self.files[0], self.tensor_names[0])
        if self.embedding.shape[0] == num_ids:
            return self
        embedding = self.embedding[:num_ids]
        unembedding = embedding if self.tied else self.unembedding[:num_ids]
        return replace(self, embedding=embedding, unembedding=unembedding, rows_dropped=self.rows_in_file - num_ids)


def read_config(path: str | Path) -> dict[str, Any]:
    """``config.json`` of a checkpoint directory, checked: a JSON object whose shape keys (``vocab_size``,
    ``num_hidden_layers``, ...) are integers, ``tie_word_embeddings`` a boolean, ``model_type`` a string."""
    path = Path(path)
    require(path.is_dir(), "checkpoint", f"must be a checkpoint directory, got {str(path)!r}")
    file = path / "config.json"
    require(file.is_file(), "checkpoint", f"no config.json in {path}: a Hugging Face checkpoint directory holds "
                                          "config.json and model.safetensors (or a sharded index)")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError("checkpoint", f"{file} is not valid JSON ({_one_line(err)}); fix or re-save it") from None
    require(isinstance(config, dict), "checkpoint", f"{file} must hold a JSON object, got {type(config).__name__}")
    for key in _INT_KEYS:
        value = config.get(key)
        require(value is None or (isinstance(value, int) and not isinstance(value, bool)), "checkpoint",
                f"{file}: {key} must be an integer, got {value!r}")
    tie = config.get("tie_word_embeddings")
    require(tie is None or isinstance(tie, bool), "checkpoint", f"{file}: tie_word_embeddings must be true or "
                                                                f"false, got {tie!r}")
    require(isinstance(config.get("model_type", ""), str), "checkpoint",
            f"{file}: model_type must be a string, got {config.get('model_type')!r}")
    archs = config.get("architectures") or []
    require(isinstance(archs, list) and all(isinstance(a, str) for a in archs), "checkpoint",
            f"{file}: architectures must be a list of class names, got {archs!r}")
    return config


def find_layout(config: dict[str, Any]) -> tuple[str, EmbeddingLayout | None]:
    """``(family, layout)`` of a checkpoint's config (``model_type``, else an ``architectures`` class name);
    ``(model_type, None)`` when the family is not in :data:`ARCHITECTURES`."""
    family = config.get("model_type") or ""
    if family in ARCHITECTURES:
        return family, ARCHITECTURES[family]
    for arch in config.get("architectures") or []:
        for name, layout in ARCHITECTURES.items():
            if arch in layout.architectures:
                return name, layout
    return family, None


def tensor_files(path: str | Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it, from ``model.safetensors``'s header or the sharded
    index's ``weight_map`` (no tensor data is read)."""
    path = Path(path)
    index, single = path / "model.safetensors.index.json", path / "model.safetensors"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError) as err:
            raise ConfigError("checkpoint", f"{index} is not a valid safetensors index ({_one_line(err)}); re-save "
                                            "the checkpoint") from None
        require(isinstance(weight_map, dict) and weight_map and all(isinstance(v, str) for v in weight_map.values()),
                "checkpoint", f"{index} has no weight_map of tensor name -> shard file; re-save the checkpoint")
        return {name: path / shard for name, shard in weight_map.items()}
    if single.is_file():
        with _readable(single), safe_open(str(single), framework="np") as f:
            return {name: single for name in f.keys()}
    other = [name for name in _OTHER_WEIGHTS if (path / name).is_file()]
    if any(name.startswith("pytorch_model") for name in other):
        raise ConfigError("checkpoint", f"{path / other[0]} is a PyTorch pickle checkpoint, which is not read (no "
                                        "torch); re-save it with safetensors: model.save_pretrained(dir, "
                                        "safe_serialization=True)")
    found = sorted(p.name for p in path.glob("*.safetensors"))
    raise ConfigError("checkpoint", f"no model.safetensors or model.safetensors.index.json in {path}"
                      + (f" (found {', '.join(found[:3])}; add the index or rename the file)" if found else
                         (f" (found {', '.join(other)}; re-save with safetensors)" if other else "")))


@dataclass(frozen=True)
class EmbeddingLocation:
    """Where a checkpoint keeps its embeddings, from ``config.json`` and the safetensors headers alone.

    Attributes:
      path: the checkpoint directory.
      architecture, model_type, num_layers, tied: as in :class:`CheckpointEmbeddings`.
      tensor_names: ``(embedding name, unembedding name)``; the same name twice when tied.
      files: ``(embedding file, unembedding file)``, the safetensors file holding each.
      shape: ``(V_file, H)``, the shape of both tensors as stored.
    """

    path: Path
    architecture: str
    model_type: str
    num_layers: int | None
    tied: bool
    tensor_names: tuple[str, str]
    files: tuple[Path, Path]
    shape: tuple[int, int]

    def check_rows(self, num_ids: int) -> None:
        """ConfigError naming the file unless the embedding has at least ``num_ids`` rows (the tokenizer's ids)."""
        _check_rows(self.shape[0], num_ids, self.files[0], self.tensor_names[0])


def locate_embeddings(path: str | Path, *, embedding_tensor: str | None = None,
                      unembedding_tensor: str | None = None) -> EmbeddingLocation:
    """Find the embedding tensors of the checkpoint directory ``path`` (names: :data:`ARCHITECTURES`, or the
    overrides; the same name twice means tied) and check their headers: 2-D, floating point, equal shapes. No
    tensor data is read; every problem is a ConfigError naming the file."""
    path = Path(path)
    config = read_config(path)
    where = path / "config.json"
    files = tensor_files(path)
    family, layout = find_layout(config)
    if layout is None and not embedding_tensor:
        known = ", ".join(f"{name} ({lay.architectures[0]})" for name, lay in ARCHITECTURES.items())
        arch = (config.get("architectures") or ["?"])[0]
        raise ConfigError("embedding_tensor", f"{where}: architecture {arch} (model_type {family or '?'!r}) is not in "
                          f"the table of embedding names (known: {known}); pass the names by hand: embedding_tensor"
                          f" and unembedding_tensor (--embedding-tensor / --unembedding-tensor), e.g. "
                          f"{_embedding_like(files)}")
    index = path / "model.safetensors.index.json"
    source = index if index.is_file() else path / "model.safetensors"
    emb_name = embedding_tensor or _first_present(layout.embedding, files, source, "embedding_tensor", "input")
    require(emb_name in files, "embedding_tensor", f"{source} has no tensor {emb_name!r}; {_embedding_like(files)}")
    tie = config.get("tie_word_embeddings", layout.tied_default if layout is not None else None)
    if unembedding_tensor:
        require(unembedding_tensor in files, "unembedding_tensor",
                f"{source} has no tensor {unembedding_tensor!r}; {_embedding_like(files)}")
        unemb_name = unembedding_tensor
    elif tie:
        unemb_name = emb_name
    elif layout is None:
        raise ConfigError("unembedding_tensor", f"{where} does not say tie_word_embeddings = true, so the output "
                          f"embedding needs a name: pass unembedding_tensor (e.g. {_embedding_like(files)})")
    else:
        unemb_name = next((n for n in layout.unembedding if n in files), None)
        require(unemb_name is not None, "unembedding_tensor",
                f"{source} has no output embedding ({' or '.join(layout.unembedding)}) but {where} says the model is "
                f"untied (tie_word_embeddings {'false' if tie is False else 'absent, default false'}); pass "
                "unembedding_tensor, or set tie_word_embeddings true if the model ties them")
    shape = _tensor_shape(files[emb_name], emb_name, "embedding_tensor")
    if unemb_name != emb_name:
        other = _tensor_shape(files[unemb_name], unemb_name, "unembedding_tensor")
        require(other == shape, "unembedding_tensor", f"{files[unemb_name]}: {unemb_name} has shape {other}, the "
                                                      f"embedding {emb_name} {shape}; both must be (V, H)")
    return EmbeddingLocation(path, (config.get("architectures") or [family])[0] or "?", config.get("model_type", ""),
                             config.get("num_hidden_layers", config.get("n_layer")), unemb_name == emb_name,
                             (emb_name, unemb_name), (files[emb_name], files[unemb_name]), shape)


def read_embeddings(path: str | Path | EmbeddingLocation, *, vocab_size: int | None = None,
                    embedding_tensor: str | None = None, unembedding_tensor: str | None = None) -> CheckpointEmbeddings:
    """The input and output embeddings of the checkpoint directory ``path`` (see the module docstring).

    Args:
      path: a local HF checkpoint directory (``config.json`` + ``model.safetensors`` or a sharded index), or its
        :func:`locate_embeddings` result.
      vocab_size: the tokenizer's id count: rows beyond it (padding) are cut, :meth:`CheckpointEmbeddings.truncated`.
      embedding_tensor, unembedding_tensor: tensor names overriding :data:`ARCHITECTURES` (the same name twice:
        tied).
    Returns:
      :class:`CheckpointEmbeddings`, ``embedding`` / ``unembedding`` (V, H) float32; only these one or two
      tensors are read, each from the one file that holds it.
    """
    loc = path if isinstance(path, EmbeddingLocation) else locate_embeddings(
        path, embedding_tensor=embedding_tensor, unembedding_tensor=unembedding_tensor)
    if vocab_size is not None:
        loc.check_rows(vocab_size)
    (emb_name, unemb_name), (emb_file, unemb_file) = loc.tensor_names, loc.files
    embedding = _read_tensor(emb_file, emb_name)
    unembedding = embedding if loc.tied else _read_tensor(unemb_file, unemb_name)
    result = CheckpointEmbeddings(embedding, unembedding, loc.tied, loc.architecture, loc.model_type, loc.tensor_names,
                                  loc.shape[0], 0, loc.num_layers, loc.path, tuple(dict.fromkeys(loc.files)))
    return result if vocab_size is None else result.truncated(vocab_size)


def _first_present(names: tuple[str, ...], files: dict[str, Path], source: Path, field: str, side: str) -> str:
    name = next((n for n in names if n in files), None)
    require(name is not None, field, f"{source} has no {side} embedding ({' or '.join(names)}) among its "
                                     f"{len(files)} tensors; pass {field} (e.g. {_embedding_like(files)})")
    return name


def _embedding_like(files: dict[str, Path]) -> str:
    """A few of the checkpoint's tensor names that look like embeddings (for the error messages)."""
    hints = ("emb", "wte", "lm_head", "embed_out", "tok")
    names = [n for n in files if any(h in n.lower() for h in hints)] or list(files)
    return "its tensors " + ", ".join(sorted(names)[:4]) + (" ..." if len(names) > 4 else "")


def _tensor_shape(file: Path, name: str, field: str) -> tuple[int, int]:
    """The (V, H) shape of tensor ``name`` from ``file``'s header (2-D and floating point, else ConfigError)."""
    require(file.is_file(), "checkpoint", f"no such safetensors shard: {file} (named for {name} by the index)")
    with _readable(file), safe_open(str(file), framework="np") as f:
        require(name in f.keys(), "checkpoint", f"{file} has no tensor {name!r} although the index names this "
                                                "shard for it; re-save the checkpoint")
        sliced = f.get_slice(name)
        dtype, shape = sliced.get_dtype(), tuple(sliced.get_shape())
    require(len(shape) == 2, field, f"{file}: {name} must be (V, H), got shape {shape}")
    require(dtype in _FLOAT_DTYPES, field, f"{file}: {name} is {dtype}, not a floating-point tensor (quantized "
                                           "checkpoints are not read); use the unquantized checkpoint")
    return shape


def _read_tensor(file: Path, name: str) -> np.ndarray:
    """One tensor as a float32 array, read from ``file`` alone (the rest of the file is never read)."""
    with _readable(file), safe_open(str(file), framework="np") as f:
        array = f.get_tensor(name)
    return np.ascontiguousarray(array, dtype=np.float32)


def _check_rows(rows: int, num_ids: int, file: Path, name: str) -> int:
    num_ids = require_int(num_ids, "vocab_size", minimum=1)
    require(rows >= num_ids, "vocab_size", f"{file}: the embedding {name} has {rows} rows, fewer than the {num_ids} "
                                           "token ids of the tokenizer (or vocabulary map); use the checkpoint's own "
                                           "tokenizer")
    return num_ids


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


@contextlib.contextmanager
def _readable(file: Path) -> Iterator[None]:
    """A damaged safetensors file (truncated, garbage header or data) as a ConfigError naming it."""
    try:
        yield
    except (SafetensorError, OSError) as err:
        raise ConfigError("checkpoint", f"{file} is not a readable safetensors file ({_one_line(err)}); re-save or "
                                        "re-download the checkpoint") from None


__all__ = ["ARCHITECTURES", "CheckpointEmbeddings", "EmbeddingLayout", "EmbeddingLocation", "find_layout",
           "locate_embeddings", "read_config", "read_embeddings", "tensor_files"]
