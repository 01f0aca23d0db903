"""HF-format checkpoints without torch: round trips (tied, untied, bfloat16, no q/k/v bias, sharded index),
atomic writes, and bad checkpoints refused with one ConfigError listing every problem.

Loading into transformers and numerical parity with it live in test_qwen2_hf_parity.py.
"""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from probsig_jax.models.qwen2 import Qwen2Config, Qwen2LM, load_pretrained, save_pretrained
from probsig_jax.validation import ConfigError

CONFIG = Qwen2Config(vocab_size=53, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, initializer_range=0.2)
IDS = jnp.asarray(np.random.default_rng(0).integers(0, 53, size=(2, 7)), dtype=jnp.int32)


def params(model) -> dict:
    return {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def assert_same_model(a, b):
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=str(k))
    np.testing.assert_array_equal(a(IDS), b(IDS))


@pytest.mark.parametrize("tied", [False, True])
def test_round_trip(tmp_path, tied):
    config = CONFIG.replace(tie_word_embeddings=tied)
    model = Qwen2LM(config, rngs=nnx.Rngs(0))
    out = save_pretrained(model, config, tmp_path / "ckpt")
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    assert os.listdir(tmp_path) == ["ckpt"]  # no temporary directory left behind
    hf = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert hf["architectures"] == ["Qwen2ForCausalLM"] and hf["model_type"] == "qwen2"
    assert hf["torch_dtype"] == "float32" and hf["tie_word_embeddings"] is tied and hf["rope_theta"] == 1e6
    names = set(load_file(tmp_path / "ckpt" / "model.safetensors"))
    assert ("lm_head.weight" in names) is (not tied)
    assert "model.layers.1.self_attn.q_proj.bias" in names and "model.layers.1.self_attn.o_proj.bias" not in names
    loaded_config, loaded = load_pretrained(tmp_path / "ckpt")
    assert loaded_config == config
    assert_same_model(model, loaded)


def test_weights_are_stored_in_hf_layout(tmp_path):
    model = Qwen2LM(CONFIG, rngs=nnx.Rngs(1))
    save_pretrained(model, None, tmp_path / "ckpt")
    tensors = load_file(tmp_path / "ckpt" / "model.safetensors")
    np.testing.assert_array_equal(tensors["model.layers.0.mlp.gate_proj.weight"],
                                  np.asarray(model.layers[0].mlp.gate_proj.kernel[...]).T)  # (out, in)
    assert tensors["model.layers.0.self_attn.k_proj.weight"].shape == (16, 32)
    np.testing.assert_array_equal(tensors["lm_head.weight"], np.asarray(model.output_embeddings()))
    np.testing.assert_array_equal(tensors["model.embed_tokens.weight"], np.asarray(model.input_embeddings()))


def test_bfloat16_round_trip(tmp_path):
    config = CONFIG.replace(param_dtype="bfloat16", dtype="bfloat16")
    model = Qwen2LM(config, rngs=nnx.Rngs(0))
    save_pretrained(model, config, tmp_path / "bf16")
    with safe_open(tmp_path / "bf16" / "model.safetensors", framework="np") as f:
        assert f.get_slice("model.norm.weight").get_dtype() == "BF16"
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    _, loaded = load_pretrained(tmp_path / "bf16", param_dtype="bfloat16", dtype="bfloat16")
    assert_same_model(model, loaded)
    _, upcast = load_pretrained(tmp_path / "bf16")  # float32 by default, exact upcast
    assert upcast.layers[0].mlp.up_proj.kernel[...].dtype == jnp.float32
    np.testing.assert_array_equal(upcast.layers[0].mlp.up_proj.kernel[...],
                                  model.layers[0].mlp.up_proj.kernel[...].astype(jnp.float32))


def test_no_qkv_bias_saves_zero_biases(tmp_path):
    config = CONFIG.replace(attention_bias=False)
    model = Qwen2LM(config, rngs=nnx.Rngs(0))
    save_pretrained(model, config, tmp_path / "nb")
    tensors = load_file(tmp_path / "nb" / "model.safetensors")
    assert not tensors["model.layers.0.self_attn.v_proj.bias"].any()  # HF always has the bias: store zeros
    loaded_config, loaded = load_pretrained(tmp_path / "nb")
    assert loaded_config.attention_bias is False
    assert_same_model(model, loaded)


def test_sharded_checkpoint_and_tied_with_lm_head(tmp_path):
    config = CONFIG.replace(tie_word_embeddings=True)
    model = Qwen2LM(config, rngs=nnx.Rngs(2))
    save_pretrained(model, config, tmp_path / "one")
    tensors = load_file(tmp_path / "one" / "model.safetensors")
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]  # some tied checkpoints carry it
    shard = tmp_path / "sharded"
    shard.mkdir()
    (shard / "config.json").write_text((tmp_path / "one" / "config.json").read_text())
    names = sorted(tensors)
    parts = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
             "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for file, part in parts.items():
        save_file({n: tensors[n] for n in part}, shard / file, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {n: file for file, part in parts.items() for n in part}}
    (shard / "model.safetensors.index.json").write_text(json.dumps(index))
    _, loaded = load_pretrained(shard)
    assert_same_model(model, loaded)


def test_existing_directory_is_not_overwritten(tmp_path):
    model = Qwen2LM(CONFIG, rngs=nnx.Rngs(0))
    save_pretrained(model, CONFIG, tmp_path / "ckpt")
    other = Qwen2LM(CONFIG, rngs=nnx.Rngs(1))
    with pytest.raises(ConfigError, match="^path: .* exists"):
        save_pretrained(other, CONFIG, tmp_path / "ckpt")
    assert_same_model(model, load_pretrained(tmp_path / "ckpt")[1])
    save_pretrained(other, CONFIG, tmp_path / "ckpt", overwrite=True)
    assert_same_model(other, load_pretrained(tmp_path / "ckpt")[1])
    assert os.listdir(tmp_path) == ["ckpt"]


def test_bad_checkpoint_lists_every_problem_in_one_error(tmp_path):
    model = Qwen2LM(CONFIG, rngs=nnx.Rngs(0))
    save_pretrained(model, CONFIG, tmp_path / "ckpt")
    file = tmp_path / "ckpt" / "model.safetensors"
    tensors = load_file(file)
    del tensors["model.layers.1.self_attn.k_proj.bias"]
    del tensors["lm_head.weight"]
    tensors["model.layers.0.self_attn.o_proj.bias"] = np.zeros(32, np.float32)
    tensors["model.layers.1.mlp.up_proj.weight"] = tensors["model.layers.1.mlp.up_proj.weight"][:, :-1]
    save_file(tensors, file)
    with pytest.raises(ConfigError) as info:
        load_pretrained(tmp_path / "ckpt")
    message = str(info.value)
    assert info.value.field == "checkpoint" and "2 missing, 1 unexpected, 1 mis-shaped" in message
    for name in ("model.layers.1.self_attn.k_proj.bias", "lm_head.weight", "model.layers.0.self_attn.o_proj.bias",
                 "model.layers.1.mlp.up_proj.weight: expected (40, 32), got (40, 31)"):
        assert name in message


def test_bad_config_json_is_refused(tmp_path):
    model = Qwen2LM(CONFIG, rngs=nnx.Rngs(0))
    save_pretrained(model, CONFIG, tmp_path / "ckpt")
    cfg_file = tmp_path / "ckpt" / "config.json"
    hf = json.loads(cfg_file.read_text())
    cfg_file.write_text(json.dumps({**hf, "use_sliding_window": True, "sliding_window": 4096}))
    with pytest.raises(ConfigError, match="^use_sliding_window: "):
        load_pretrained(tmp_path / "ckpt")
    cfg_file.write_text(json.dumps({**hf, "num_hidden_layers": 3}))  # config and tensors disagree
    with pytest.raises(ConfigError, match="missing .*model.layers.2.mlp.up_proj.weight"):
        load_pretrained(tmp_path / "ckpt")
    os.remove(cfg_file)
    with pytest.raises(ConfigError, match="^config: no such file"):
        load_pretrained(tmp_path / "ckpt")
    with pytest.raises(ConfigError, match="^path: "):
        load_pretrained(tmp_path / "nowhere")
