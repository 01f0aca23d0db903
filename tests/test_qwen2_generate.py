"""Greedy generation with a KV cache: equals recomputing the whole sequence each step, and HF ``generate``.

Tolerance: exact token equality (greedy argmax on well-separated random logits, float32, highest precision).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from probsig_jax.models.qwen2 import PRESETS, Qwen2LM, generate, save_pretrained
from probsig_jax.validation import ConfigError


def tiny_model(seed: int = 0, **changes) -> Qwen2LM:
    config = dataclasses.replace(PRESETS["tiny"], vocab_size=61, initializer_range=0.2, **changes)
    return Qwen2LM(config, rngs=nnx.Rngs(seed))


def naive_greedy(model, prompt, mask, steps):
    """Reference: re-run the full model over the whole sequence for every new token (no cache).

    The sequence lives in a fixed (N, T + steps) buffer so one compiled forward serves every step; causal
    attention keeps the not-yet-written slots on the right from affecting the position being predicted.
    """
    N, T = prompt.shape
    ids = np.concatenate([prompt, np.zeros((N, steps), prompt.dtype)], axis=1)
    full_mask = np.concatenate([mask, np.ones((N, steps), mask.dtype)], axis=1)
    positions = np.maximum(np.cumsum(full_mask, axis=1) - 1, 0)
    forward = nnx.jit(lambda m, i, k, p: m(i, k, p))
    for step in range(steps):
        logits = np.asarray(forward(model, jnp.asarray(ids), jnp.asarray(full_mask), jnp.asarray(positions)))
        ids[:, T + step] = logits[:, T + step - 1].argmax(-1)
    return ids


@pytest.mark.parametrize("tied,kv_heads", [(False, 2), (True, 1), (False, 4)])
def test_cache_equals_recompute(tied, kv_heads):
    model = tiny_model(1, tie_word_embeddings=tied, num_key_value_heads=kv_heads)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, 61, size=(3, 7))
    mask = np.ones_like(prompt)
    mask[1, :2] = 0          # left padding
    mask[2, :5] = 0
    out = generate(model, prompt, 9, attention_mask=mask)
    assert out.shape == (3, 16)
    np.testing.assert_array_equal(out[:, :7], prompt)
    np.testing.assert_array_equal(out, naive_greedy(model, prompt, mask, 9))


def test_eos_stops_a_row():
    model = tiny_model(2)
    prompt = np.random.default_rng(1).integers(0, 61, size=(2, 5))
    free = generate(model, prompt, 6)
    eos = int(free[0, 7])                                   # the third generated token of row 0
    out = generate(model, prompt, 6, eos_token_id=eos)
    first = int(np.argmax(out[0, 5:] == eos)) + 5
    assert np.all(out[0, first:] == eos)
    np.testing.assert_array_equal(out[0, :first + 1], free[0, :first + 1])


def test_matches_hf_generate(tmp_path):
    torch = pytest.importorskip("torch", reason="the HF reference needs the test extra: pip install '.[test]'")
    transformers = pytest.importorskip("transformers", reason="the HF reference needs the test extra")
    model = tiny_model(3)
    save_pretrained(model, model.config, tmp_path / "ckpt")
    hf = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path / "ckpt", attn_implementation="eager").float().eval()
    prompt = np.random.default_rng(2).integers(0, 61, size=(2, 6))
    mask = np.ones_like(prompt)
    mask[1, :3] = 0
    with torch.no_grad():
        ref = hf.generate(input_ids=torch.tensor(prompt), attention_mask=torch.tensor(mask), max_new_tokens=8,
                          do_sample=False, pad_token_id=0, eos_token_id=None).numpy()
    out = generate(model, prompt, 8, attention_mask=mask)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("kwargs,field", [
    (dict(prompt_ids=np.zeros((2,), int), max_new_tokens=3), "prompt_ids"),
    (dict(prompt_ids=np.full((1, 3), 99), max_new_tokens=3), "prompt_ids"),
    (dict(prompt_ids=np.zeros((1, 3), int), max_new_tokens=0), "max_new_tokens"),
    (dict(prompt_ids=np.zeros((1, 3), int), max_new_tokens=10_000), "max_new_tokens"),
    (dict(prompt_ids=np.zeros((1, 3), int), max_new_tokens=2, attention_mask=np.array([[1, 0, 1]])), "attention_mask"),
    (dict(prompt_ids=np.zeros((1, 3), int), max_new_tokens=2, attention_mask=np.zeros((1, 3), int)), "attention_mask"),
])
def test_bad_generation_inputs(kwargs, field):
    with pytest.raises(ConfigError) as err:
        generate(tiny_model(), **kwargs)
    assert err.value.field == field
