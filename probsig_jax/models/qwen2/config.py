"""``Qwen2Config``: the fields of a Hugging Face ``config.json`` that define the network, for the three
decoder families this port covers: Qwen2 / Qwen2.5 (``model_type`` ``qwen2``), Llama (``llama``) and
Mistral (``mistral``). They share one architecture (pre-norm RMSNorm, rotary GQA attention, SwiGLU) and
differ only in biases, sliding windows and defaults, all of which are config fields.

Read a released config with :meth:`Qwen2Config.from_hf` (a checkpoint directory, a json file or a
dict) and write one with :meth:`Qwen2Config.to_hf_dict`. Keys a file omits take the defaults of the
family's ``transformers`` config class (``_HF_DEFAULTS``), so that a file means what it means to HF.
Unknown harmless keys (``_name_or_path``, ``pad_token_id``, ``architectures``, ...) are ignored with a
debug log; options this port does not implement (binding sliding windows, scaled RoPE, other
activations, ``pretraining_tp`` != 1) are refused with a :class:`~probsig_jax.validation.ConfigError`
naming the field.

Presets (``PRESETS``): the published Qwen2.5 base shapes ``qwen2.5-0.5b`` and ``qwen2.5-1.5b``
(tied embeddings, as released), and two CPU-sized ones, ``tiny`` and ``small``, that are *untied*
so that input embeddings and unembeddings can be compared with different signatures (PAPER section 7).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Mapping

import jax

from probsig_jax.validation import ConfigError, require, require_float, require_int

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16")
MODEL_TYPES = ("qwen2", "llama", "mistral")
ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}
# "xla": jax.nn.dot_product_attention with XLA; "cudnn": the same call with cuDNN's fused (flash) kernel
# (GPU only, bfloat16); "reference": plain heads-first einsums over the whole T x T square (the readable
# definition); "blocked": causal attention by query blocks with a hand-written backward
# (models/qwen2/blocked_attention.py; the fastest on a CPU; padding masks and KV caches use "reference");
# "auto": cudnn on a GPU with bfloat16 compute, xla on other accelerators, blocked on a CPU.
ATTENTION_IMPLS = ("auto", "xla", "cudnn", "reference", "blocked")
# How the MLP and output-projection products are differentiated. "einsum": JAX's own differentiation, XLA
# picks the layouts; "explicit_transpose": models/qwen2/dense.py, whose weight gradient transposes the smaller
# operand on its own (the fastest on a CPU); "auto": explicit_transpose on a CPU, einsum elsewhere.
DENSE_IMPLS = ("auto", "einsum", "explicit_transpose")


def resolve_attention_impl(impl: str, dtype: str) -> str:
    """The concrete implementation ``impl`` stands for on the current JAX backend (``auto`` resolved)."""
    require(impl in ATTENTION_IMPLS, "attention_impl", f"must be one of {', '.join(ATTENTION_IMPLS)}, got {impl!r}")
    if impl != "auto":
        return impl
    backend = jax.default_backend()
    if backend == "cpu":
        return "blocked"  # measured the fastest on a CPU (benchmarks/qwen2_train_step.py --ours-attention)
    return "cudnn" if backend == "gpu" and dtype == "bfloat16" else "xla"


def resolve_dense_impl(impl: str) -> str:
    """The concrete ``dense_impl`` that ``impl`` stands for on the current JAX backend (``auto`` resolved)."""
    require(impl in DENSE_IMPLS, "dense_impl", f"must be one of {', '.join(DENSE_IMPLS)}, got {impl!r}")
    if impl != "auto":
        return impl
    return "explicit_transpose" if jax.default_backend() == "cpu" else "einsum"


# HF keys that do not change the network (or that we check separately below); ignored quietly.
_IGNORED_HF_KEYS = {
    "_name_or_path", "architectures", "model_type", "transformers_version", "torch_dtype", "dtype",
    "pad_token_id", "bos_token_id", "eos_token_id", "use_cache", "attention_dropout", "initializer_range",
    "hidden_act", "rope_scaling", "rope_parameters", "layer_types", "use_mrope", "head_dim", "pretraining_tp",
}
# What transformers' (5.x) config class of each family assumes for a key the file omits, where that differs
# from our dataclass default. (rms_norm_eps 1e-6, tie_word_embeddings false, initializer_range 0.02 and
# head_dim = hidden_size // num_attention_heads are common to all three and equal to ours.)
_HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "qwen2": {"max_position_embeddings": 32768, "num_key_value_heads": 32, "rope_theta": 10_000.0},
    "llama": {"max_position_embeddings": 2048, "rope_theta": 10_000.0, "attention_bias": False, "mlp_bias": False},
    "mistral": {"max_position_embeddings": 4096 * 32, "num_key_value_heads": 8, "rope_theta": 10_000.0,
                "sliding_window": 4096},
}
# Keys of ours that a family's HF model does not read: ignored in its config.json (as transformers does).
_NOT_IN_FAMILY = {
    "qwen2": {"mlp_bias"},
    "llama": {"use_sliding_window", "sliding_window", "max_window_layers"},
    "mistral": {"use_sliding_window", "max_window_layers", "attention_bias", "mlp_bias"},
}
# Our own numerics options; HF's "dtype" key is the storage dtype and must not set the compute dtype.
_NOT_FROM_HF = {"param_dtype", "dtype", "attention_impl", "dense_impl"}


@dataclass(frozen=True)
class Qwen2Config:
    """Shape and numerics of a Qwen2 / Qwen2.5, Llama or Mistral decoder (``model_type``; the name is historical).

    ``head_dim`` defaults to ``hidden_size // num_attention_heads`` (it may differ, e.g. in Llama configs).
    ``attention_bias`` (default: true for qwen2, false otherwise) follows HF per family: qwen2 biases q/k/v
    (HF Qwen2 always has them; false is stored as zero biases), llama biases q/k/v *and* o_proj, mistral has
    none. ``mlp_bias`` (llama only) biases gate/up/down. Changing ``model_type`` with :meth:`replace`
    re-derives ``attention_bias`` unless it is given.
    ``sliding_window``: qwen2 carries it (and ``max_window_layers``) for round trips only, released configs
    set it with ``use_sliding_window = false`` and ``use_sliding_window = true`` is not implemented; mistral
    needs it null or >= ``max_position_embeddings`` (a window that never binds); llama has none.
    ``rope_theta`` (RoPE base, default 1e6 as Qwen2.5; ``from_hf`` uses HF's 1e4 when the file omits it):
    only unscaled ("default") RoPE is implemented.
    ``param_dtype`` is the storage dtype of the weights, ``dtype`` the compute dtype (RMSNorm statistics,
    softmax and the returned logits are float32 regardless). ``initializer_range`` is the std of the
    normal initialisation of every weight matrix (HF's convention; make it small for the small-init regime).
    ``attention_impl``: ``auto`` (default), ``xla``, ``cudnn``, ``reference`` or ``blocked``; see
    ``ATTENTION_IMPLS``. ``dense_impl``: ``auto`` (default), ``einsum`` or ``explicit_transpose``; see
    ``DENSE_IMPLS``. Neither changes the function computed, only how (and how fast) it and its gradient are.
    """

    vocab_size: int = 512
    hidden_size: int = 64
    intermediate_size: int = 176
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int | None = None
    max_position_embeddings: int = 2048
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    attention_bias: bool | None = None
    mlp_bias: bool = False
    use_sliding_window: bool = False
    sliding_window: int | None = None
    max_window_layers: int | None = None
    initializer_range: float = 0.02
    param_dtype: str = "float32"
    dtype: str = "float32"
    attention_impl: str = "auto"
    dense_impl: str = "auto"
    model_type: str = "qwen2"

    def __post_init__(self):
        if self.attention_bias is None:
            object.__setattr__(self, "attention_bias", self.model_type == "qwen2")
        if self.head_dim is None and isinstance(self.hidden_size, int) and isinstance(self.num_attention_heads, int) \
                and self.num_attention_heads > 0 and self.hidden_size % self.num_attention_heads == 0:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        self.validate()

    def validate(self) -> "Qwen2Config":
        """Raise :class:`ConfigError` naming the first bad field; return ``self`` when all are fine."""
        require(self.model_type in MODEL_TYPES, "model_type",
                f"must be one of {', '.join(map(repr, MODEL_TYPES))}, got {self.model_type!r}")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "max_position_embeddings"):
            require_int(getattr(self, name), name, minimum=1)
        require(self.hidden_size % self.num_attention_heads == 0 or self.head_dim is not None, "num_attention_heads",
                f"must divide hidden_size={self.hidden_size} (or set head_dim), got {self.num_attention_heads}")
        require_int(self.head_dim, "head_dim", minimum=2)
        require(self.head_dim % 2 == 0, "head_dim", f"must be even (rotary embeddings rotate pairs), got {self.head_dim}")
        require(self.num_attention_heads % self.num_key_value_heads == 0, "num_key_value_heads",
                f"must divide num_attention_heads={self.num_attention_heads}, got {self.num_key_value_heads}")
        require_float(self.rope_theta, "rope_theta", minimum=0.0, strict_minimum=True)
        require_float(self.rms_norm_eps, "rms_norm_eps", minimum=0.0, strict_minimum=True)
        require_float(self.initializer_range, "initializer_range", minimum=0.0)
        for name in ("tie_word_embeddings", "attention_bias", "mlp_bias", "use_sliding_window"):
            require(isinstance(getattr(self, name), bool), name, f"must be true or false, got {getattr(self, name)!r}")
        require(not self.use_sliding_window, "use_sliding_window",
                "sliding-window attention is not implemented; must be false (a sliding_window value alone is fine)")
        if self.sliding_window is not None:
            require_int(self.sliding_window, "sliding_window", minimum=1)
        if self.max_window_layers is not None:
            require_int(self.max_window_layers, "max_window_layers", minimum=0)
        self._validate_family()
        for name in ("param_dtype", "dtype"):
            require(getattr(self, name) in DTYPES, name, f"must be one of {', '.join(DTYPES)}, got {getattr(self, name)!r}")
        require(self.attention_impl in ATTENTION_IMPLS, "attention_impl",
                f"must be one of {', '.join(ATTENTION_IMPLS)}, got {self.attention_impl!r}")
        require(self.dense_impl in DENSE_IMPLS, "dense_impl",
                f"must be one of {', '.join(DENSE_IMPLS)}, got {self.dense_impl!r}")
        return self

    def _validate_family(self) -> None:
        """The fields a family's HF model has no tensor or mask for must be off."""
        family = self.model_type
        if family != "qwen2":
            require(self.max_window_layers is None, "max_window_layers", f"is a qwen2 field; must be null for {family}")
        if family == "llama":
            require(self.sliding_window is None, "sliding_window", "llama has no sliding window; must be null")
        if family == "mistral":
            window = self.sliding_window
            require(window is None or window >= self.max_position_embeddings, "sliding_window",
                    "sliding-window attention is not implemented; mistral needs null or a window >= "
                    f"max_position_embeddings = {self.max_position_embeddings} (never binds), got {window}")
            require(not self.attention_bias, "attention_bias", "mistral has no attention biases; must be false")
        if family != "llama":
            require(not self.mlp_bias, "mlp_bias", f"only llama has MLP biases; must be false for {family}")

    @property
    def o_proj_bias(self) -> bool:
        """Whether o_proj has a bias: HF Llama's ``attention_bias`` biases o_proj too, Qwen2's does not."""
        return bool(self.attention_bias) and self.model_type == "llama"

    def replace(self, **changes: Any) -> "Qwen2Config":
        """A copy with ``changes`` applied (``head_dim`` and, with a new ``model_type``, ``attention_bias``
        are re-derived unless given)."""
        if "head_dim" not in changes and ("hidden_size" in changes or "num_attention_heads" in changes):
            changes["head_dim"] = None
        if "attention_bias" not in changes and changes.get("model_type", self.model_type) != self.model_type:
            changes["attention_bias"] = None
        return dataclasses.replace(self, **changes)

    # --- Hugging Face config.json -------------------------------------------------------------------

    @classmethod
    def from_hf(cls, source: str | os.PathLike | Mapping[str, Any], **overrides: Any) -> "Qwen2Config":
        """Read a HF Qwen2, Llama or Mistral config: a checkpoint directory (its ``config.json``), a json file
        or a dict. Keys the file omits take the defaults of the family's transformers config class.

        ``overrides`` (e.g. ``param_dtype="bfloat16"``) are applied on top; ``torch_dtype`` in the file
        is *not* used for ``param_dtype`` (we default to float32 for analysis).
        """
        where = "the config dict"
        if isinstance(source, Mapping):
            hf = dict(source)
        else:
            path = os.fspath(source)
            if os.path.isdir(path):
                path = os.path.join(path, "config.json")
            require(os.path.isfile(path), "config", f"no such file: {path}")
            try:
                with open(path, encoding="utf-8") as f:
                    hf = json.load(f)
            except json.JSONDecodeError as e:
                raise ConfigError("config", f"{path} is not valid json: {e}") from None
            require(isinstance(hf, dict), "config", f"{path} must hold a json object")
            where = path
        try:
            return cls._from_hf_dict(hf, overrides)
        except ConfigError as err:       # name the file as well as the field
            raise ConfigError(err.field, f"{err.message} (in {where})") from None
        except (TypeError, ValueError) as err:
            raise ConfigError("config", f"{where}: {err}") from None

    @classmethod
    def _from_hf_dict(cls, hf: dict[str, Any], overrides: dict[str, Any]) -> "Qwen2Config":
        family = overrides.get("model_type", hf.get("model_type", "qwen2"))
        require(family in MODEL_TYPES, "model_type",
                f"must be one of {', '.join(map(repr, MODEL_TYPES))}, got {family!r}")
        hidden_act = hf.get("hidden_act", "silu")
        require(hidden_act == "silu", "hidden_act", f"only 'silu' (SwiGLU) is implemented, got {hidden_act!r}")
        tp = hf.get("pretraining_tp", 1)
        require(tp is None or tp == 1, "pretraining_tp", f"only 1 (unsplit projections) is implemented, got {tp!r}")

        # RoPE: legacy top-level rope_theta (+ rope_scaling), or transformers>=5 rope_parameters.
        rope_theta = hf.get("rope_theta")
        for key in ("rope_parameters", "rope_scaling"):
            rope = hf.get(key)
            if rope is None:
                continue
            require(isinstance(rope, Mapping), key, f"must be a json object or null, got {rope!r}")
            rope_type = rope.get("rope_type", rope.get("type", "default"))
            require(rope_type == "default", key,
                    f"scaled RoPE is not implemented: only rope_type 'default' is, got rope_type {rope_type!r}")
            if rope_theta is None and "rope_theta" in rope:
                rope_theta = rope["rope_theta"]
        layer_types = hf.get("layer_types")
        if layer_types is not None:
            bad = sorted({t for t in layer_types if t != "full_attention"})
            require(not bad, "layer_types", f"only 'full_attention' layers are implemented, got {bad}")

        not_read = _NOT_IN_FAMILY[family]
        fields = {f.name for f in dataclasses.fields(cls)} - _NOT_FROM_HF - not_read
        kwargs = {k: v for k, v in hf.items() if k in fields}
        kwargs["model_type"] = family
        if rope_theta is not None:
            kwargs["rope_theta"] = float(rope_theta)
        for key, value in _HF_DEFAULTS[family].items():  # only for keys the file omits
            kwargs.setdefault(key, value)
        if kwargs.get("num_key_value_heads") is None and "num_attention_heads" in kwargs:
            kwargs["num_key_value_heads"] = kwargs["num_attention_heads"]  # HF: null means MHA
        if kwargs.get("sliding_window") is not None and not kwargs.get("use_sliding_window", False):
            kwargs["sliding_window"] = int(kwargs["sliding_window"])
        unknown = sorted(k for k in hf if k not in fields and k not in _IGNORED_HF_KEYS and k not in not_read)
        ignored = sorted(k for k in hf if (k in _IGNORED_HF_KEYS or k in not_read) and k not in fields)
        if unknown or ignored:
            log.debug("Qwen2Config.from_hf (%s): ignoring keys %s", family, unknown + ignored)
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads") if k not in kwargs]
        require(not missing, "config", f"missing required keys {missing}")
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf_dict(self) -> dict[str, Any]:
        """A ``config.json`` dict that ``transformers`` loads as ``ARCHITECTURES[model_type]``
        (``Qwen2ForCausalLM``, ``LlamaForCausalLM`` or ``MistralForCausalLM``).

        qwen2: ``attention_bias = false`` is written for our loader; HF ignores it (its q/k/v always have a bias),
        which is why :func:`~probsig_jax.models.qwen2.checkpoint.save_pretrained` then writes zero biases.
        mistral: ``sliding_window`` is written even when null (HF's default for a missing key is 4096).
        """
        family = self.model_type
        hf: dict[str, Any] = {
            "architectures": [ARCHITECTURES[family]],
            "model_type": family,
            "hidden_act": "silu",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "initializer_range": self.initializer_range,
            "attention_dropout": 0.0,
            "torch_dtype": self.param_dtype,
        }
        if family == "qwen2":
            hf.update(use_sliding_window=False, sliding_window=self.sliding_window)
            if self.max_window_layers is not None:
                hf["max_window_layers"] = self.max_window_layers
            if not self.attention_bias:
                hf["attention_bias"] = False
        elif family == "llama":
            hf.update(attention_bias=self.attention_bias, mlp_bias=self.mlp_bias, pretraining_tp=1)
        else:
            hf["sliding_window"] = self.sliding_window
        return hf


PRESETS: dict[str, Qwen2Config] = {
    # Qwen/Qwen2.5-0.5B config.json (494,032,768 parameters, tied).
    "qwen2.5-0.5b": Qwen2Config(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
        rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
        sliding_window=32768, max_window_layers=24),
    # Qwen/Qwen2.5-1.5B config.json (1,543,714,304 parameters, tied; the base model ships 131072 positions).
    "qwen2.5-1.5b": Qwen2Config(
        vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=131072,
        rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
        sliding_window=131072, max_window_layers=28),
    # CPU-sized, untied (signature analysis compares input embeddings and unembeddings separately).
    "tiny": Qwen2Config(
        vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048),
    "small": Qwen2Config(
        vocab_size=4096, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=2048),
}
