"""Llama and Mistral through the Qwen2 port (``Qwen2Config.model_type``): parity with HF ``LlamaForCausalLM`` /
``MistralForCausalLM`` (CPU torch, float32, eager), config defaults mirrored from transformers, and refusals.

Weights travel through the checkpoint formats in both directions: HF ``save_pretrained`` -> our
``load_pretrained``, and our ``save_pretrained`` -> ``transformers.AutoModelForCausalLM.from_pretrained`` (which
must rebuild the same family). Tolerance: logits and hidden states max abs diff <= 1e-4 on non-padded positions.
Every parameter is randomised (biases and norm scales too) so that a dropped bias or a wrong transpose fails.
Skipped when torch or transformers is missing (the ``test`` extra installs both).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch", reason="the HF reference needs the test extra: pip install '.[test]'")
transformers = pytest.importorskip("transformers", reason="the HF reference needs the test extra")

from probsig_jax.models.qwen2 import Qwen2Config, Qwen2LM, load_pretrained, save_pretrained  # noqa: E402
from probsig_jax.validation import ConfigError  # noqa: E402

LOGIT_ATOL = 1e-4
VOCAB, HIDDEN, HEADS, INTER, LAYERS, MAX_POS = 97, 32, 4, 48, 2, 128
HF_CONFIG = {"llama": "LlamaConfig", "mistral": "MistralConfig", "qwen2": "Qwen2Config"}
HF_MODEL = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def hf_model(family: str, seed: int, **options):
    """A random tiny HF model of ``family``; every parameter drawn (norms around 1)."""
    torch.manual_seed(seed)
    cfg = getattr(transformers, HF_CONFIG[family])(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, max_position_embeddings=MAX_POS, rms_norm_eps=1e-6, attn_implementation="eager",
        **options)
    model = getattr(transformers, HF_MODEL[family])(cfg).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in name else 0.15 * torch.randn_like(p))
    return model


def randomised(config: Qwen2Config, seed: int) -> Qwen2LM:
    model = Qwen2LM(config, rngs=nnx.Rngs(seed))
    keys = iter(jax.random.split(jax.random.key(seed + 1), 200))
    state = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda x: x + 0.15 * jax.random.normal(next(keys), x.shape, x.dtype), state))
    return model


def batch(seed: int, t: int, padding: str | None):
    """(3, t) token ids and a 0/1 mask whose rows have 0, 2 and t // 2 padded positions on the ``padding`` side."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, size=(3, t))
    mask = np.ones((3, t), dtype=np.int64)
    for row, pad in enumerate([0, 2, t // 2]):
        if pad and padding == "left":
            mask[row, :pad] = 0
        elif pad and padding == "right":
            mask[row, t - pad:] = 0
    return ids, mask


@nnx.jit
def _ours(model, ids, mask):
    return model(ids, mask, return_hidden_states=True)


def assert_parity(model_hf, model: Qwen2LM, ids, mask, key: str) -> float:
    """Logits (N, T, V) and hidden states (N, T, H) agree on non-padded positions; returns (and prints, seen with
    ``-s``) the max abs logits difference."""
    with torch.no_grad():
        out = model_hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True)
    logits, hidden = _ours(model, jnp.asarray(ids), jnp.asarray(mask))
    keep = mask.astype(bool)
    diff = float(np.abs(np.asarray(logits) - out.logits.numpy())[keep].max())
    print(f"{key}: max abs logits diff {diff:.2e}")
    assert diff <= LOGIT_ATOL, f"max abs logits diff {diff:.3g} > {LOGIT_ATOL}"
    assert len(hidden) == len(out.hidden_states) == LAYERS + 1
    for i, (a, b) in enumerate(zip(hidden, out.hidden_states)):
        assert np.abs(np.asarray(a) - b.numpy())[keep].max() <= LOGIT_ATOL, f"hidden state {i}"
    return diff


# --- checkpoints both ways ------------------------------------------------------------------------

CASES = [  # family, tied, kv heads, padding (HF -> ours; the other side for ours -> HF), extra config options
    ("llama", True, 1, "left", {}),
    ("llama", False, 2, "right", {"head_dim": 16, "rope_theta": 5e5}),               # head_dim != H / heads (8)
    ("llama", False, HEADS, "left", {"head_dim": 12, "attention_bias": True, "mlp_bias": True}),  # q/k/v/o + MLP
    ("mistral", True, 1, "right", {"sliding_window": None}),
    ("mistral", False, 2, "left", {"sliding_window": MAX_POS, "head_dim": 16}),      # a window that never binds
]


@pytest.mark.parametrize("family,tied,kv_heads,padding,options", CASES,
                         ids=[f"{c[0]}-{'tied' if c[1] else 'untied'}-kv{c[2]}-{c[3]}" for c in CASES])
def test_checkpoints_both_ways_with_parity(tmp_path, request, family, tied, kv_heads, padding, options):
    """HF save_pretrained -> our load_pretrained, then our save_pretrained -> AutoModelForCausalLM, with parity."""
    case = request.node.callspec.id
    seed = kv_heads + 10 * (family == "mistral")
    model_hf = hf_model(family, seed=seed, tie_word_embeddings=tied, num_key_value_heads=kv_heads, **options)
    model_hf.save_pretrained(tmp_path / "hf")
    config, model = load_pretrained(tmp_path / "hf")
    assert config.model_type == family and config.tie_word_embeddings == tied
    assert config.num_key_value_heads == kv_heads and config.head_dim == options.get("head_dim", HIDDEN // HEADS)
    assert config.rope_theta == options.get("rope_theta", 10_000.0)  # transformers' default when not given
    assert config.attention_bias == options.get("attention_bias", False)
    assert config.mlp_bias == options.get("mlp_bias", False)
    assert (model.layers[1].self_attn.o_proj.bias is not None) == options.get("attention_bias", False)
    ids, mask = batch(seed, 8, padding)
    assert_parity(model_hf, model, ids, mask, f"{case} hf->ours")

    model = randomised(config, seed=seed)  # fresh weights the HF side has not seen
    save_pretrained(model, config, tmp_path / "ours")
    hf = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert hf["model_type"] == family and hf["architectures"] == [HF_MODEL[family]]
    model_hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours", attn_implementation="eager",
                                                                 dtype=torch.float32).eval()
    assert type(model_hf).__name__ == HF_MODEL[family] and model_hf.config.tie_word_embeddings == tied
    assert model_hf.config.rope_parameters["rope_theta"] == config.rope_theta
    if family == "mistral":
        assert model_hf.config.sliding_window == options["sliding_window"]  # null is written, not HF's 4096
    assert load_pretrained(tmp_path / "ours")[0] == config
    ids, mask = batch(seed + 1, 8, "left" if padding == "right" else "right")
    assert_parity(model_hf, model, ids, mask, f"{case} ours->hf")


# --- config.json: round trips, transformers' defaults, refusals -------------------------------------

@pytest.mark.parametrize("config", [
    Qwen2Config(model_type="llama", head_dim=16, attention_bias=True, mlp_bias=True, rope_theta=5e5),
    Qwen2Config(model_type="llama", tie_word_embeddings=True, num_key_value_heads=1),
    Qwen2Config(model_type="mistral", sliding_window=None),
    Qwen2Config(model_type="mistral", sliding_window=4096, max_position_embeddings=4096),
    Qwen2Config(model_type="qwen2", attention_bias=False, sliding_window=2048, max_window_layers=2),
], ids=["llama-biases", "llama-tied", "mistral-no-window", "mistral-window", "qwen2"])
def test_config_round_trip_is_exact(config):
    hf = config.to_hf_dict()
    assert hf["model_type"] == config.model_type
    assert Qwen2Config.from_hf(hf) == config
    assert Qwen2Config.from_hf(json.loads(json.dumps(hf))) == config


@pytest.mark.parametrize("family", ["qwen2", "llama", "mistral"])
def test_omitted_keys_take_transformers_defaults(family):
    """A config.json with only the required keys means to us what it means to the family's HF config class."""
    minimal = {"model_type": family, "vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": INTER,
               "num_hidden_layers": LAYERS, "num_attention_heads": 32}  # 32 heads: Qwen2's default kv heads
    if family == "mistral":
        minimal["sliding_window"] = None  # HF's default window (4096) would bind: refused, see below
    ours = Qwen2Config.from_hf(minimal)
    ref = getattr(transformers, HF_CONFIG[family])(**minimal)
    assert ours.rope_theta == ref.rope_parameters["rope_theta"] == 10_000.0
    for key in ("num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings",
                "initializer_range"):
        assert getattr(ours, key) == getattr(ref, key), key
    assert ours.head_dim == getattr(ref, "head_dim", 64 // 32)
    assert ours.attention_bias is (family == "qwen2")  # HF Qwen2 always has q/k/v biases, the others none here
    if family == "llama":
        assert ours.mlp_bias is ref.mlp_bias is False and ref.attention_bias is False
    if family == "mistral":
        del minimal["sliding_window"]
        with pytest.raises(ConfigError, match="^sliding_window: .*got 4096"):
            Qwen2Config.from_hf(minimal)
        assert transformers.MistralConfig(**minimal).sliding_window == 4096


def test_mistral_ignores_bias_keys_as_transformers_does():
    hf = Qwen2Config(model_type="mistral").to_hf_dict()
    config = Qwen2Config.from_hf({**hf, "attention_bias": True, "mlp_bias": True, "use_sliding_window": True})
    assert config.attention_bias is False and config.mlp_bias is False and config.use_sliding_window is False


def llama3_hf_dict() -> dict:
    rope = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    return transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER,
                                    num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                    rope_parameters=rope).to_dict()


@pytest.mark.parametrize("hf,field,words", [
    ({"model_type": "mistral", "sliding_window": 64}, "sliding_window", ["not implemented", "64"]),
    ({"model_type": "llama", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling",
     ["'llama3'", "only rope_type 'default'"]),
    ({"model_type": "llama", "rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling", ["'linear'"]),
    ({"model_type": "mistral", "rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, "rope_parameters",
     ["'yarn'", "'default'"]),
    ({"model_type": "gemma"}, "model_type", ["'qwen2', 'llama', 'mistral'", "'gemma'"]),
    ({"model_type": "llama", "pretraining_tp": 2}, "pretraining_tp", ["2"]),
    ({"model_type": "llama", "hidden_act": "gelu"}, "hidden_act", ["'silu'"]),
], ids=["mistral-window", "llama3-rope", "linear-rope", "yarn-rope", "model-type", "pretraining-tp", "act"])
def test_unsupported_options_are_refused_by_name(hf, field, words):
    base = {"vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": INTER, "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS, "num_key_value_heads": 2, "max_position_embeddings": MAX_POS}
    with pytest.raises(ConfigError) as info:
        Qwen2Config.from_hf({**base, **hf})
    message = str(info.value)
    assert info.value.field == field and message.startswith(f"{field}: ") and "\n" not in message
    for word in words:
        assert word in message


def test_llama3_checkpoint_config_is_refused(tmp_path):
    """A Llama 3 style config written by transformers (rope_parameters with rope_type llama3)."""
    (tmp_path / "config.json").write_text(json.dumps(llama3_hf_dict()))
    with pytest.raises(ConfigError, match=r"^rope_parameters: .*'default'.*'llama3'"):
        load_pretrained(tmp_path)


@pytest.mark.parametrize("kwargs,field", [
    ({"model_type": "mistral", "attention_bias": True}, "attention_bias"),
    ({"model_type": "mistral", "sliding_window": 100, "max_position_embeddings": 101}, "sliding_window"),
    ({"model_type": "qwen2", "mlp_bias": True}, "mlp_bias"),
    ({"model_type": "llama", "sliding_window": 100}, "sliding_window"),
    ({"model_type": "llama", "max_window_layers": 2}, "max_window_layers"),
    ({"model_type": "Llama"}, "model_type"),
])
def test_direct_construction_refuses_what_the_family_lacks(kwargs, field):
    with pytest.raises(ConfigError) as info:
        Qwen2Config(**kwargs)
    assert info.value.field == field


def test_replace_model_type_rederives_attention_bias():
    qwen = Qwen2Config()
    assert qwen.attention_bias is True and qwen.model_type == "qwen2"
    llama = qwen.replace(model_type="llama")
    assert llama.attention_bias is False and not llama.o_proj_bias
    assert qwen.replace(model_type="llama", attention_bias=True).o_proj_bias
    assert not qwen.o_proj_bias  # Qwen2's attention_bias is q/k/v only
