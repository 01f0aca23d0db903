"""Qwen2Config and Qwen2LM without torch: config parsing/validation, parameter counts (no allocation),
shapes and parameter names, causality and padding semantics, attention implementations, bfloat16.

Parity with HF transformers lives in test_qwen2_hf_parity.py.
"""

from __future__ import annotations

import json
import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from probsig_jax.models.qwen2 import PRESETS, Qwen2Config, Qwen2LM, abstract_model, num_parameters
from probsig_jax.training.losses import next_token_loss
from probsig_jax.validation import ConfigError

# A released Qwen2.5-0.5B config.json, with the keys a converter must tolerate.
RELEASED_0_5B = {
    "_name_or_path": "Qwen/Qwen2.5-0.5B", "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151643, "pad_token_id": None, "hidden_act": "silu", "hidden_size": 896,
    "initializer_range": 0.02, "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24,
    "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": True,
    "torch_dtype": "bfloat16", "transformers_version": "4.40.1", "use_cache": True, "use_sliding_window": False,
    "vocab_size": 151936, "some_future_key": 1,
}

TEST_CONFIG = Qwen2Config(vocab_size=61, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, initializer_range=0.2)


def randomised(config: Qwen2Config, seed: int = 0) -> Qwen2LM:
    """A model whose biases and norm scales are random too (so that every parameter matters)."""
    model = Qwen2LM(config, rngs=nnx.Rngs(seed))
    keys = iter(jax.random.split(jax.random.key(seed + 1), 200))
    state = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda x: x + 0.1 * jax.random.normal(next(keys), x.shape, x.dtype), state))
    return model


def tokens(n: int, t: int, vocab: int = 61, seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).integers(0, vocab, size=(n, t)), dtype=jnp.int32)


# --- config ----------------------------------------------------------------------------------------

def test_released_config_parses_and_matches_preset(caplog):
    with caplog.at_level(logging.DEBUG, logger="probsig_jax.models.qwen2.config"):
        config = Qwen2Config.from_hf(RELEASED_0_5B)
    assert config == PRESETS["qwen2.5-0.5b"]
    assert config.head_dim == 64 and config.rope_theta == 1e6 and config.sliding_window == 32768
    assert config.param_dtype == "float32"  # torch_dtype does not set our storage dtype
    assert "some_future_key" in caplog.text and "_name_or_path" in caplog.text


def test_config_defaults_and_presets():
    assert Qwen2Config().rope_theta == 1_000_000.0
    assert Qwen2Config().attention_bias is True
    p = PRESETS["qwen2.5-1.5b"]
    assert (p.vocab_size, p.hidden_size, p.intermediate_size, p.num_hidden_layers, p.num_attention_heads,
            p.num_key_value_heads, p.head_dim, p.tie_word_embeddings) == (151936, 1536, 8960, 28, 12, 2, 128, True)
    assert not PRESETS["tiny"].tie_word_embeddings and not PRESETS["small"].tie_word_embeddings


def test_config_from_file_dir_and_v5_rope_parameters(tmp_path):
    hf = PRESETS["small"].to_hf_dict()
    assert hf["architectures"] == ["Qwen2ForCausalLM"] and hf["model_type"] == "qwen2"
    (tmp_path / "config.json").write_text(json.dumps(hf))
    assert Qwen2Config.from_hf(tmp_path) == PRESETS["small"]
    assert Qwen2Config.from_hf(tmp_path / "config.json") == PRESETS["small"]
    v5 = {k: v for k, v in hf.items() if k != "rope_theta"}
    v5["rope_parameters"] = {"rope_type": "default", "rope_theta": 5e5}
    v5["layer_types"] = ["full_attention"] * 4
    assert Qwen2Config.from_hf(v5).rope_theta == 5e5


@pytest.mark.parametrize("changes,field", [
    ({"use_sliding_window": True}, "use_sliding_window"),
    ({"num_attention_heads": 5}, "num_attention_heads"),
    ({"num_key_value_heads": 3}, "num_key_value_heads"),
    ({"vocab_size": 0}, "vocab_size"),
    ({"intermediate_size": -4}, "intermediate_size"),
    ({"rope_theta": 0.0}, "rope_theta"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling"),
    ({"layer_types": ["full_attention", "sliding_attention"]}, "layer_types"),
    ({"model_type": "gemma"}, "model_type"),
])
def test_bad_config_names_the_field(changes, field):
    hf = {**RELEASED_0_5B, **changes}
    with pytest.raises(ConfigError) as info:
        Qwen2Config.from_hf(hf)
    assert info.value.field == field and str(info.value).startswith(f"{field}:")


@pytest.mark.parametrize("overrides,field", [
    ({"dtype": "float16"}, "dtype"), ({"param_dtype": "float64"}, "param_dtype"),
    ({"attention_impl": "flash"}, "attention_impl"),
])
def test_bad_numerics_override_names_the_field(overrides, field):
    with pytest.raises(ConfigError) as info:
        Qwen2Config.from_hf(RELEASED_0_5B, **overrides)
    assert info.value.field == field
    assert Qwen2Config.from_hf({**RELEASED_0_5B, "dtype": "float16"}).dtype == "float32"  # HF's key is not ours


def test_sliding_window_error_is_clear():
    with pytest.raises(ConfigError, match="use_sliding_window: sliding-window attention is not implemented"):
        Qwen2Config(use_sliding_window=True, sliding_window=4096)


# --- parameter counts --------------------------------------------------------------------------------

def count_from_shapes(c: Qwen2Config) -> int:
    """Independent count: embeddings + per-layer (q/k/v with bias, o, SwiGLU, 2 norms) + final norm (+ lm_head)."""
    q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    layer = (c.hidden_size * q + q) + 2 * (c.hidden_size * kv + kv) + q * c.hidden_size \
        + 3 * c.hidden_size * c.intermediate_size + 2 * c.hidden_size
    return c.vocab_size * c.hidden_size * (1 if c.tie_word_embeddings else 2) + c.num_hidden_layers * layer + c.hidden_size


@pytest.mark.parametrize("name,published", [("qwen2.5-0.5b", 494_032_768), ("qwen2.5-1.5b", 1_543_714_304)])
def test_published_parameter_counts_without_allocation(name, published):
    config = PRESETS[name]
    abstract = abstract_model(config)
    leaves = jax.tree.leaves(nnx.state(abstract, nnx.Param))
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves)  # nothing was allocated
    assert num_parameters(config) == published == count_from_shapes(config)


def test_untied_count_adds_lm_head():
    c = PRESETS["small"]
    assert num_parameters(c) == count_from_shapes(c)
    assert num_parameters(c) - num_parameters(c.replace(tie_word_embeddings=True)) == c.vocab_size * c.hidden_size


# --- model -----------------------------------------------------------------------------------------

def test_parameter_tree_names_shapes_and_biases():
    model = Qwen2LM(TEST_CONFIG, rngs=nnx.Rngs(0))
    shapes = {".".join(map(str, p)): tuple(v.get_value().shape)
              for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert shapes["embed_tokens.embedding"] == (61, 32)
    assert shapes["layers.0.self_attn.q_proj.kernel"] == (32, 32) and shapes["layers.0.self_attn.q_proj.bias"] == (32,)
    assert shapes["layers.1.self_attn.k_proj.kernel"] == (32, 16) and shapes["layers.1.self_attn.v_proj.bias"] == (16,)
    assert shapes["layers.0.mlp.down_proj.kernel"] == (40, 32) and shapes["lm_head.kernel"] == (32, 61)
    assert shapes["norm.scale"] == (32,) and shapes["layers.0.input_layernorm.scale"] == (32,)
    biases = sorted(k for k in shapes if k.endswith("bias"))
    assert biases == [f"layers.{i}.self_attn.{p}_proj.bias" for i in range(2) for p in "kqv"]  # none on o_proj / MLP
    assert len(shapes) == sum(1 for _ in shapes) and sum(math.prod(s) for s in shapes.values()) == num_parameters(TEST_CONFIG)


def test_forward_shapes_hidden_states_and_embeddings():
    model = Qwen2LM(TEST_CONFIG, rngs=nnx.Rngs(0))
    logits, hidden = model(tokens(2, 7), return_hidden_states=True)
    assert logits.shape == (2, 7, 61) and logits.dtype == jnp.float32
    assert len(hidden) == TEST_CONFIG.num_hidden_layers + 1 and all(h.shape == (2, 7, 32) for h in hidden)
    assert model.input_embeddings().shape == model.output_embeddings().shape == (61, 32)
    assert not np.array_equal(model.input_embeddings(), model.output_embeddings())
    tied = Qwen2LM(TEST_CONFIG.replace(tie_word_embeddings=True), rngs=nnx.Rngs(0))
    assert tied.lm_head is None and tied.output_embeddings() is tied.input_embeddings()


def test_causal_future_tokens_do_not_change_past_logits():
    model = randomised(TEST_CONFIG)
    ids = tokens(1, 9)
    changed = ids.at[0, 6].set((ids[0, 6] + 1) % 61)
    a, b = model(ids), model(changed)
    np.testing.assert_allclose(a[0, :6], b[0, :6], atol=1e-6)
    assert np.abs(a[0, 6:] - b[0, 6:]).max() > 1e-3


@pytest.mark.parametrize("impl", ["xla", "reference", "blocked"])
def test_padding_matches_unpadded_sequences(impl):
    """Right padding: real positions equal the unpadded run. Left padding with positions cumsum(mask)-1: same."""
    model = randomised(TEST_CONFIG)
    ids = tokens(1, 6)
    ref = model(ids, attention_impl=impl)[0]
    pad = jnp.zeros((1, 3), jnp.int32)
    right = model(jnp.concatenate([ids, pad], 1), jnp.array([[1] * 6 + [0] * 3]), attention_impl=impl)
    left_mask = jnp.array([[0] * 3 + [1] * 6])
    left = model(jnp.concatenate([pad, ids], 1), left_mask, jnp.maximum(jnp.cumsum(left_mask, 1) - 1, 0),
                 attention_impl=impl)
    assert np.isfinite(np.asarray(left)).all() and np.isfinite(np.asarray(right)).all()
    np.testing.assert_allclose(right[0, :6], ref, atol=1e-5)
    np.testing.assert_allclose(left[0, 3:], ref, atol=1e-5)


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_xla_and_reference_attention_agree(kv_heads):
    model = randomised(TEST_CONFIG.replace(num_key_value_heads=kv_heads))
    ids = tokens(3, 11)
    mask = jnp.array([[1] * 11, [0] * 4 + [1] * 7, [1] * 8 + [0] * 3])
    xla = model(ids, mask, attention_impl="xla")
    ref = model(ids, mask, attention_impl="reference")
    keep = np.asarray(mask, bool)
    assert np.abs(np.asarray(xla - ref))[keep].max() <= 1e-5
    with pytest.raises(ConfigError, match="attention_impl"):
        model(ids, attention_impl="flash")


@pytest.mark.parametrize("impl", ["xla", "reference", "blocked"])
def test_no_mask_is_plain_causal_attention(impl):
    """model(ids) (is_causal, no (T, T) mask built) equals model(ids, all-ones mask) (explicit mask)."""
    model = randomised(TEST_CONFIG)
    ids = tokens(2, 9)
    np.testing.assert_allclose(model(ids, attention_impl=impl), model(ids, jnp.ones_like(ids), attention_impl=impl),
                               atol=1e-6)


def test_auto_attention_resolves_per_backend():
    from probsig_jax.models.qwen2.config import resolve_attention_impl

    assert Qwen2Config().attention_impl == "auto"
    expected = {"cpu": "blocked", "gpu": "cudnn"}.get(jax.default_backend(), "xla")
    assert resolve_attention_impl("auto", "bfloat16") == expected
    assert resolve_attention_impl("auto", "float32") == ("blocked" if jax.default_backend() == "cpu" else "xla")
    assert resolve_attention_impl("xla", "float32") == "xla"
    with pytest.raises(ConfigError, match="attention_impl"):
        resolve_attention_impl("flash", "float32")


@pytest.mark.skipif(jax.default_backend() == "gpu",
                    reason="on a GPU 'cudnn' is valid (test_cudnn_attention_matches_xla_on_gpu runs it); "
                           "this test checks the error off a GPU")
def test_cudnn_attention_off_gpu_is_a_clear_error():
    model = Qwen2LM(TEST_CONFIG.replace(dtype="bfloat16"), rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="attention_impl.*needs a GPU"):
        model(tokens(1, 4), attention_impl="cudnn")


@pytest.mark.gpu
def test_cudnn_attention_matches_xla_on_gpu():
    """GPU only: cuDNN flash attention vs XLA, bfloat16, causal and padded (within bf16 rounding)."""
    model = randomised(TEST_CONFIG.replace(dtype="bfloat16", num_attention_heads=2, num_key_value_heads=1,
                                           head_dim=64))
    ids = tokens(2, 128)
    xla, cudnn = model(ids, attention_impl="xla"), model(ids, attention_impl="cudnn")
    scale = float(jnp.abs(xla).max())
    assert float(jnp.abs(cudnn - xla).max()) <= 0.02 * scale


def test_bfloat16_compute_is_close_to_float32():
    """bfloat16 params and compute: logits within 5% of the float32 logit range (bf16 has ~3 significant digits)."""
    model32 = randomised(TEST_CONFIG)
    model16 = Qwen2LM(TEST_CONFIG.replace(param_dtype="bfloat16", dtype="bfloat16"), rngs=nnx.Rngs(0))
    nnx.update(model16, jax.tree.map(lambda x: x.astype(jnp.bfloat16), nnx.state(model32, nnx.Param)))
    assert model16.layers[0].mlp.up_proj.kernel[...].dtype == jnp.bfloat16
    ids = tokens(2, 9)
    l32, l16 = model32(ids), model16(ids)
    assert l16.dtype == jnp.float32 and np.isfinite(np.asarray(l16)).all()
    scale = float(jnp.abs(l32).max())
    assert float(jnp.abs(l16 - l32).max()) <= 0.05 * scale
    # mixed: float32 storage, bfloat16 compute
    mixed = Qwen2LM(TEST_CONFIG.replace(dtype="bfloat16"), rngs=nnx.Rngs(0))
    nnx.update(mixed, nnx.state(model32, nnx.Param))
    assert float(jnp.abs(mixed(ids) - l32).max()) <= 0.05 * scale


def test_jit_and_loss_gradient():
    model = randomised(TEST_CONFIG)
    ids, mask = tokens(2, 8), jnp.array([[1] * 8, [1] * 5 + [0] * 3])

    @nnx.jit
    def step(m):
        return nnx.value_and_grad(lambda m: next_token_loss(m(ids, mask), ids, mask))(m)

    loss, grads = step(model)
    eager = next_token_loss(model(ids, mask), ids, mask)
    np.testing.assert_allclose(loss, eager, rtol=1e-6)
    assert 0.0 < float(loss) < 3 * math.log(61)
    g_emb = np.asarray(grads.embed_tokens.embedding[...])
    assert g_emb.shape == (61, 32) and np.isfinite(g_emb).all()
    untouched = sorted(set(range(61)) - set(np.asarray(ids[:, :-1][mask[:, :-1] > 0]).tolist()))
    assert np.abs(g_emb[untouched]).max() == 0.0  # untied: only tokens that were inputs get embedding gradient
