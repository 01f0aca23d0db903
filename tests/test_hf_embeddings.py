"""read_embeddings against transformers: random tiny models of every supported family saved by ``save_pretrained``
(safetensors), single-file and sharded; padding rows; every bad input as a one-line ConfigError naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from probsig_jax.models import hf_embeddings
from probsig_jax.models.hf_embeddings import ARCHITECTURES, locate_embeddings, read_embeddings
from probsig_jax.validation import ConfigError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

V, H = 96, 16
DECODER = dict(vocab_size=V, hidden_size=H, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
               num_key_value_heads=1, max_position_embeddings=64)


def tiny_model(kind: str, vocab_size: int = V, **overrides):
    """A random tiny transformers model of family ``kind`` (seeded)."""
    T = transformers
    torch.manual_seed(0)
    if kind in ("gpt2", "gpt2-base"):
        config = T.GPT2Config(vocab_size=vocab_size, n_embd=H, n_layer=1, n_head=2, n_positions=64,
                              bos_token_id=0, eos_token_id=0, **overrides)
        return (T.GPT2Model if kind == "gpt2-base" else T.GPT2LMHeadModel)(config)
    if kind == "gpt_neox":
        config = T.GPTNeoXConfig(vocab_size=vocab_size, hidden_size=H, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=0,
                                 **overrides)
        return T.GPTNeoXForCausalLM(config)
    family, _, variant = kind.partition("-")
    names = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3", "gemma": "Gemma",
             "gemma2": "Gemma2"}[family]
    extra = {"head_dim": 8} if family in ("qwen3", "gemma", "gemma2") else {}
    if variant == "tied":
        extra["tie_word_embeddings"] = True
    config = getattr(T, f"{names}Config")(**{**DECODER, "vocab_size": vocab_size, **extra, **overrides})
    return getattr(T, f"{names}ForCausalLM")(config)


def save_tiny(kind: str, path: Path, **kwargs) -> tuple[Path, object]:
    model = tiny_model(kind, **{k: v for k, v in kwargs.items() if k != "max_shard_size"})
    save = {"max_shard_size": kwargs["max_shard_size"]} if "max_shard_size" in kwargs else {}
    model.save_pretrained(path, **save)
    return Path(path), model


def torch_weights(model) -> tuple[np.ndarray, np.ndarray]:
    inp = model.get_input_embeddings().weight.detach().float().numpy()
    out = model.get_output_embeddings()
    return inp, (inp if out is None else out.weight.detach().float().numpy())


KINDS = {"gpt2": ("GPT2LMHeadModel", True), "gpt2-base": ("GPT2Model", True), "gpt_neox": ("GPTNeoXForCausalLM", False),
         "llama": ("LlamaForCausalLM", False), "llama-tied": ("LlamaForCausalLM", True),
         "mistral": ("MistralForCausalLM", False), "qwen2": ("Qwen2ForCausalLM", False),
         "qwen3": ("Qwen3ForCausalLM", False), "gemma": ("GemmaForCausalLM", True),
         "gemma2": ("Gemma2ForCausalLM", True)}


@pytest.mark.parametrize("kind", list(KINDS))
def test_embeddings_equal_the_torch_modules(kind, tmp_path):
    path, model = save_tiny(kind, tmp_path / kind)
    e = read_embeddings(path)
    inp, out = torch_weights(model)
    assert e.embedding.dtype == np.float32 and e.embedding.shape == (V, H)
    np.testing.assert_array_equal(e.embedding, inp)
    np.testing.assert_array_equal(e.unembedding, out)
    assert (e.architecture, e.tied) == KINDS[kind]
    assert (e.unembedding is e.embedding) == e.tied and e.tensor_names[0] in ARCHITECTURES[e.model_type].embedding
    assert e.rows_dropped == 0 and e.rows_in_file == V and e.num_layers == 1 and e.path == path


def test_defaults_of_tie_word_embeddings_match_transformers():
    for family, layout in ARCHITECTURES.items():
        config = transformers.AutoConfig.for_model(family)
        assert config.tie_word_embeddings == layout.tied_default, family


def test_a_sharded_checkpoint_reads_the_same_and_only_two_tensors(tmp_path, monkeypatch):
    single, model = save_tiny("llama", tmp_path / "single", num_hidden_layers=2)
    path, _ = save_tiny("llama", tmp_path / "sharded", num_hidden_layers=2, max_shard_size="4KB")
    weight_map = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(weight_map.values())) > 3
    opened, read = [], []
    real = hf_embeddings.safe_open

    class Spy:
        def __init__(self, file, framework):
            opened.append(Path(file).name)
            self._handle = real(file, framework=framework)

        def __enter__(self):
            self._f = self._handle.__enter__()
            return self

        def __exit__(self, *exc):
            return self._handle.__exit__(*exc)

        def get_tensor(self, name):
            read.append(name)
            return self._f.get_tensor(name)

        def __getattr__(self, name):
            return getattr(self._f, name)

    monkeypatch.setattr(hf_embeddings, "safe_open", Spy)
    e = read_embeddings(path)
    assert read == ["model.embed_tokens.weight", "lm_head.weight"]
    assert set(opened) == {weight_map["model.embed_tokens.weight"], weight_map["lm_head.weight"]}
    inp, out = torch_weights(model)
    np.testing.assert_array_equal(e.embedding, inp)
    np.testing.assert_array_equal(e.unembedding, out)
    np.testing.assert_array_equal(e.embedding, read_embeddings(single).embedding)
    assert len(e.files) == 2


def test_padding_rows_are_cut_and_counted(tmp_path):
    path, model = save_tiny("gpt_neox", tmp_path / "neox", vocab_size=128)       # Pythia pads 50277 ids to 50304
    e = read_embeddings(path, vocab_size=100)
    inp, out = torch_weights(model)
    assert e.embedding.shape == (100, H) and e.rows_dropped == 28 and e.rows_in_file == 128
    np.testing.assert_array_equal(e.unembedding, out[:100])
    assert read_embeddings(path).truncated(128).rows_dropped == 0
    with pytest.raises(ConfigError, match=r"vocab_size: .*neox/model.safetensors: .* 128 rows, fewer than the 130"):
        read_embeddings(path, vocab_size=130)


def test_bfloat16_checkpoints_are_read_as_float32(tmp_path):
    model = tiny_model("qwen2").to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    e = read_embeddings(tmp_path / "bf16")
    inp, out = torch_weights(model)
    assert e.embedding.dtype == np.float32
    np.testing.assert_array_equal(e.embedding, inp)
    np.testing.assert_array_equal(e.unembedding, out)


def test_tensor_names_by_hand_for_an_unknown_architecture(tmp_path):
    path, model = save_tiny("llama", tmp_path / "foo")
    config = json.loads((path / "config.json").read_text())
    config.update(model_type="foo", architectures=["FooForCausalLM"])
    (path / "config.json").write_text(json.dumps(config))
    e = read_embeddings(path, embedding_tensor="model.embed_tokens.weight", unembedding_tensor="lm_head.weight")
    np.testing.assert_array_equal(e.unembedding, torch_weights(model)[1])
    tied = read_embeddings(path, embedding_tensor="lm_head.weight", unembedding_tensor="lm_head.weight")
    assert tied.tied and tied.unembedding is tied.embedding
    with pytest.raises(ConfigError, match="unembedding_tensor: .*tie_word_embeddings"):
        read_embeddings(path, embedding_tensor="model.embed_tokens.weight")


def _one_line_error(call) -> str:
    with pytest.raises(ConfigError) as info:
        call()
    text = str(info.value)
    assert "\n" not in text, text
    return text


def _rewrite_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("case", ["unknown_architecture", "missing_embedding", "missing_unembedding",
                                  "missing_named_tensor", "bin_only", "no_config", "invalid_json", "bad_field",
                                  "truncated", "garbage", "bad_index", "missing_shard", "not_a_directory"])
def test_bad_checkpoints_are_one_line_errors_naming_the_file(case, tmp_path):
    from safetensors.numpy import load_file, save_file

    path, model = save_tiny("llama", tmp_path / "ckpt")
    weights = path / "model.safetensors"
    kwargs = {}
    if case == "unknown_architecture":
        _rewrite_config(path, model_type="foo", architectures=["FooForCausalLM"])
        expect = ["config.json", "FooForCausalLM", "known: gpt2", "llama", "embedding_tensor", "unembedding_tensor"]
    elif case in ("missing_embedding", "missing_unembedding"):
        tensors = load_file(weights)
        gone = "model.embed_tokens.weight" if case == "missing_embedding" else "lm_head.weight"
        save_file({k: v for k, v in tensors.items() if k != gone}, weights)
        expect = ["model.safetensors", gone, "embedding_tensor"]
    elif case == "missing_named_tensor":
        kwargs = {"unembedding_tensor": "head.weight"}
        expect = ["unembedding_tensor", "model.safetensors", "head.weight"]
    elif case == "bin_only":
        torch.save(model.state_dict(), path / "pytorch_model.bin")
        weights.unlink()
        expect = ["pytorch_model.bin", "safe_serialization=True"]
    elif case == "no_config":
        (path / "config.json").unlink()
        expect = ["no config.json in", str(path)]
    elif case == "invalid_json":
        (path / "config.json").write_text("{not json")
        expect = ["config.json is not valid JSON"]
    elif case == "bad_field":
        _rewrite_config(path, tie_word_embeddings="yes")
        expect = ["config.json", "tie_word_embeddings"]
    elif case == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        expect = ["model.safetensors is not a readable safetensors file"]
    elif case == "garbage":
        weights.write_bytes(os.urandom(weights.stat().st_size))
        expect = ["model.safetensors is not a readable safetensors file"]
    elif case in ("bad_index", "missing_shard"):
        path, _ = save_tiny("llama", tmp_path / "sharded", max_shard_size="4KB")
        index = path / "model.safetensors.index.json"
        if case == "bad_index":
            index.write_text(json.dumps({"metadata": {}}))
            expect = ["model.safetensors.index.json has no weight_map"]
        else:
            shard = json.loads(index.read_text())["weight_map"]["lm_head.weight"]
            (path / shard).unlink()
            expect = ["no such safetensors shard", shard, "lm_head.weight"]
    else:
        path = weights
        expect = ["checkpoint", "model.safetensors"]
    text = _one_line_error(lambda: read_embeddings(path, **kwargs))
    for piece in expect:
        assert piece in text, (piece, text)


def test_locate_reads_no_tensor_data(tmp_path, monkeypatch):
    path, _ = save_tiny("gpt_neox", tmp_path / "neox")
    monkeypatch.setattr(hf_embeddings, "_read_tensor", lambda *a: pytest.fail("tensor data read"))
    loc = locate_embeddings(path)
    assert loc.shape == (V, H) and loc.tensor_names == ("gpt_neox.embed_in.weight", "embed_out.weight")
    assert not loc.tied and loc.architecture == "GPTNeoXForCausalLM"
