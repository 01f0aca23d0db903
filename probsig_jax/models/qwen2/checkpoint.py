"""Read and write Hugging Face Qwen2, Llama and Mistral checkpoints (``config.json`` + safetensors) without torch.

The three families share one tensor layout; ``config.json``'s ``model_type`` picks the family (see
:class:`~probsig_jax.models.qwen2.config.Qwen2Config`), and ``save_pretrained`` writes the matching
``architectures`` so that ``transformers.AutoModelForCausalLM`` rebuilds the same family.
Tensor names map one to one (``model.`` prefix, ``weight`` for kernels, scales and the embedding);
HF ``nn.Linear`` weights are (out, in) and NNX kernels (in, out), so they are transposed. A tied
checkpoint may omit ``lm_head.weight`` (HF does). Every missing, unexpected or mis-shaped tensor is
collected and reported in one :class:`~probsig_jax.validation.ConfigError` before any data is read.
bfloat16 is stored as BF16 (``safetensors.numpy`` handles it through ``ml_dtypes``, safetensors >= 0.8).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from probsig_jax.models.qwen2.config import Qwen2Config
from probsig_jax.models.qwen2.model import Qwen2LM, abstract_model
from probsig_jax.validation import ConfigError, require

log = logging.getLogger(__name__)

_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}


def hf_name(path: tuple) -> str:
    """HF tensor name of one of our parameter paths, e.g. ``('layers', 0, 'mlp', 'up_proj', 'kernel')``
    -> ``model.layers.0.mlp.up_proj.weight``."""
    *modules, leaf = (str(p) for p in path)
    name = ".".join(modules + [_LEAF_NAMES[leaf]])
    return name if modules[0] == "lm_head" else "model." + name


def _flat_params(model_or_abstract: Qwen2LM) -> list[tuple[tuple, Any]]:
    """[(path, leaf)] of the model's parameters in a stable order."""
    return [(tuple(p), v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model_or_abstract, nnx.Param))]


def _checkpoint_files(path: str) -> list[str]:
    index = os.path.join(path, "model.safetensors.index.json")
    single = os.path.join(path, "model.safetensors")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map", {})
        require(isinstance(weight_map, dict) and weight_map, "checkpoint", f"{index} has no weight_map")
        files = [os.path.join(path, name) for name in sorted(set(weight_map.values()))]
    else:
        files = [single]
    missing = [f for f in files if not os.path.isfile(f)]
    require(not missing, "checkpoint", f"no such safetensors file(s): {missing}")
    return files


@contextlib.contextmanager
def _readable(file: str):
    """A damaged safetensors file (truncated, garbage header or data) as a ConfigError naming it."""
    try:
        yield
    except (SafetensorError, OSError) as err:
        raise ConfigError("checkpoint", f"{file} is not a readable safetensors file ({err}); re-save or re-download "
                                        "the checkpoint") from None


def load_pretrained(path: str | os.PathLike, **config_overrides: Any) -> tuple[Qwen2Config, Qwen2LM]:
    """Load a local HF Qwen2, Llama or Mistral directory (``config.json`` + ``model.safetensors`` or a sharded index).

    ``config_overrides`` go to :meth:`Qwen2Config.from_hf`, e.g. ``param_dtype="bfloat16"``,
    ``dtype="bfloat16"``, ``attention_impl="reference"``; parameters are cast to ``param_dtype``
    (float32 by default, whatever the file stores).
    """
    path = os.fspath(path)
    require(os.path.isdir(path), "path", f"must be a checkpoint directory, got {path!r}")
    config = Qwen2Config.from_hf(path, **config_overrides)
    files = _checkpoint_files(path)
    shapes: dict[str, tuple[int, ...]] = {}
    where: dict[str, str] = {}
    for file in files:
        with _readable(file), safe_open(file, framework="np") as f:
            for name in f.keys():
                shapes[name] = tuple(f.get_slice(name).get_shape())
                where[name] = file

    abstract = abstract_model(config)
    wanted: dict[str, tuple[tuple, tuple[int, ...], bool]] = {}  # hf name -> (our path, hf shape, transpose)
    for p, leaf in _flat_params(abstract):
        transpose = p[-1] == "kernel"
        wanted[hf_name(p)] = (p, tuple(reversed(leaf.shape)) if transpose else tuple(leaf.shape), transpose)

    # Tensors that may be present without a parameter of ours.
    optional = {n for n in shapes if n.endswith("rotary_emb.inv_freq")}
    if config.tie_word_embeddings:
        optional.add("lm_head.weight")
    zero_biases = set()
    if config.model_type == "qwen2" and not config.attention_bias:  # our save_pretrained writes zero biases
        # (HF Qwen2's q/k/v always have one) so that HF can load the model
        zero_biases = {n for n in shapes if n.startswith("model.layers.") and n.endswith(("q_proj.bias", "k_proj.bias",
                                                                                            "v_proj.bias"))}
    missing = sorted(n for n in wanted if n not in shapes)
    unexpected = sorted(n for n in shapes if n not in wanted and n not in optional and n not in zero_biases)
    misshaped = sorted(f"{n}: expected {wanted[n][1]}, got {shapes[n]}" for n in wanted
                       if n in shapes and shapes[n] != wanted[n][1])
    problems = ([f"missing {missing}"] if missing else []) + ([f"unexpected {unexpected}"] if unexpected else []) \
        + ([f"wrong shape [{'; '.join(misshaped)}]"] if misshaped else [])
    if problems:
        raise ConfigError("checkpoint", f"{path} does not match its config.json ({len(missing)} missing, "
                          f"{len(unexpected)} unexpected, {len(misshaped)} mis-shaped tensors): " + "; ".join(problems))
    ignored = sorted(n for n in shapes if n in optional)
    if ignored:
        log.debug("load_pretrained: ignoring tensors %s", ignored)

    param_dtype = jnp.dtype(config.param_dtype)
    values: dict[tuple, jax.Array] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(_readable(", ".join(files)))
        handles = {file: stack.enter_context(safe_open(file, framework="np")) for file in files}
        for name in zero_biases:
            require(not np.any(handles[where[name]].get_tensor(name)), "checkpoint",
                    f"{name} is nonzero but config.json says attention_bias = false")
        for name, (p, _, transpose) in wanted.items():
            array = handles[where[name]].get_tensor(name)
            values[p] = jnp.asarray(array.T if transpose else array, dtype=param_dtype)

    nnx.update(abstract, nnx.from_flat_state([(p, values[p]) for p, _ in _flat_params(abstract)]))
    return config, abstract


def save_pretrained(model: Qwen2LM, config: Qwen2Config | None, path: str | os.PathLike, *,
                    overwrite: bool = False) -> str:
    """Write ``config.json`` and ``model.safetensors`` that ``transformers`` loads as ``Qwen2ForCausalLM``,
    ``LlamaForCausalLM`` or ``MistralForCausalLM`` (by ``config.model_type``).

    Tensors are stored in the model's ``param_dtype``. The directory is written under a temporary name
    next to ``path`` and renamed into place when complete; an existing ``path`` is replaced only with
    ``overwrite=True``. ``config`` defaults to ``model.config``. Returns the path.
    """
    config = model.config if config is None else config
    path = os.path.abspath(os.fspath(path))
    require(overwrite or not os.path.exists(path), "path", f"{path} exists (pass overwrite=True to replace it)")
    tensors: dict[str, np.ndarray] = {}
    for p, leaf in _flat_params(model):
        array = np.asarray(leaf)
        tensors[hf_name(p)] = np.ascontiguousarray(array.T if p[-1] == "kernel" else array)
    if config.model_type == "qwen2" and not config.attention_bias:  # HF Qwen2 always has q/k/v biases
        dtype = tensors["model.embed_tokens.weight"].dtype
        for i in range(config.num_hidden_layers):
            for proj, heads in (("q_proj", config.num_attention_heads), ("k_proj", config.num_key_value_heads),
                                ("v_proj", config.num_key_value_heads)):
                tensors[f"model.layers.{i}.self_attn.{proj}.bias"] = np.zeros((heads * config.head_dim,), dtype)

    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config.to_hf_dict(), f, indent=2, sort_keys=True)
            f.write("\n")
        save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
            os.rename(path, os.path.join(old, "x"))
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
