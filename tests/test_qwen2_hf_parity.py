"""Parity of ``probsig_jax.models.qwen2`` with HF ``transformers.Qwen2ForCausalLM`` (CPU torch, float32, eager).

Weights travel through the checkpoint formats in both directions: HF ``save_pretrained`` -> our
``load_pretrained``, and our ``save_pretrained`` -> HF ``from_pretrained``. Tolerances: logits and hidden
states max abs diff <= 1e-4 on non-padded positions; loss and the embedding gradient rtol 1e-4 / atol 1e-5.
Every parameter is randomised (biases and norm scales too) so that a dropped bias or a wrong transpose fails.
Skipped when torch or transformers is missing (the ``test`` extra installs both).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch", reason="the HF reference needs the test extra: pip install '.[test]'")
transformers = pytest.importorskip("transformers", reason="the HF reference needs the test extra")

from probsig_jax.models.qwen2 import Qwen2Config, Qwen2LM, load_pretrained, save_pretrained  # noqa: E402
from probsig_jax.training.losses import next_token_loss  # noqa: E402

LOGIT_ATOL = 1e-4
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-5
VOCAB, HIDDEN, HEADS = 97, 32, 4


def hf_model(tied: bool, kv_heads: int, seed: int):
    torch.manual_seed(seed)
    cfg = transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=48, num_hidden_layers=2, num_attention_heads=HEADS,
        num_key_value_heads=kv_heads, max_position_embeddings=128, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=tied, use_sliding_window=False, attn_implementation="eager")
    model = transformers.Qwen2ForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in name else 0.15 * torch.randn_like(p))
    return model


def batch(seed: int, n: int, t: int, padding: str | None):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, size=(n, t))
    mask = np.ones((n, t), dtype=np.int64)
    if padding is not None:
        for row, pad in enumerate([0, 2, t // 2][:n]):
            if pad:
                if padding == "left":
                    mask[row, :pad] = 0
                else:
                    mask[row, t - pad:] = 0
    return ids, mask


def hf_forward(model, ids, mask):
    """Logits, hidden states, loss and embedding gradient of the HF model (labels -100 where we mask)."""
    ids_t, mask_t = torch.tensor(ids), torch.tensor(mask)
    prev = torch.cat([torch.zeros_like(mask_t[:, :1]), mask_t[:, :-1]], dim=1)
    labels = torch.where((mask_t > 0) & (prev > 0), ids_t, torch.full_like(ids_t, -100))
    model.zero_grad()
    out = model(input_ids=ids_t, attention_mask=mask_t, labels=labels, output_hidden_states=True)
    out.loss.backward()
    grad = model.model.embed_tokens.weight.grad.detach().numpy().copy()
    return (out.logits.detach().numpy(), [h.detach().numpy() for h in out.hidden_states], float(out.loss.detach()), grad)


@nnx.jit
def _ours_forward(model, ids, mask):
    logits, hidden = model(ids, mask, return_hidden_states=True)
    loss, grads = nnx.value_and_grad(lambda m: next_token_loss(m(ids, mask), ids, mask))(model)
    return logits, hidden, loss, grads.embed_tokens.embedding[...]


def ours_forward(model, ids, mask):
    logits, hidden, loss, grad = _ours_forward(model, jnp.asarray(ids), jnp.asarray(mask))
    return np.asarray(logits), [np.asarray(h) for h in hidden], float(loss), np.asarray(grad)


def assert_parity(hf, ours, mask):
    keep = mask.astype(bool)
    logits_hf, hidden_hf, loss_hf, grad_hf = hf
    logits, hidden, loss, grad = ours
    diff = np.abs(logits - logits_hf)[keep].max()
    assert diff <= LOGIT_ATOL, f"max abs logits diff {diff:.3g} > {LOGIT_ATOL}"
    assert len(hidden) == len(hidden_hf)
    for i, (a, b) in enumerate(zip(hidden, hidden_hf)):
        assert np.abs(a - b)[keep].max() <= LOGIT_ATOL, f"hidden state {i}"
    np.testing.assert_allclose(loss, loss_hf, rtol=GRAD_RTOL, atol=GRAD_ATOL)
    np.testing.assert_allclose(grad, grad_hf, rtol=GRAD_RTOL, atol=GRAD_ATOL)
    return diff


CASES = [  # tied, kv heads, T, padding
    (True, 1, 7, None),
    (False, 2, 9, "right"),
    (False, HEADS, 5, "left"),
    (True, 2, 11, "left"),
]


@pytest.mark.parametrize("tied,kv_heads,t,padding", CASES)
def test_hf_checkpoint_loads_with_parity(tmp_path, tied, kv_heads, t, padding):
    model_hf = hf_model(tied, kv_heads, seed=kv_heads + t)
    model_hf.save_pretrained(tmp_path / "hf")
    config, model = load_pretrained(tmp_path / "hf")
    assert config.tie_word_embeddings == tied and config.num_key_value_heads == kv_heads
    assert config.rope_theta == 1_000_000.0
    ids, mask = batch(t, 3, t, padding)
    assert_parity(hf_forward(model_hf, ids, mask), ours_forward(model, ids, mask), mask)


@pytest.mark.parametrize("tied,kv_heads", [(False, 2), (True, 1)])
def test_our_checkpoint_loads_in_transformers(tmp_path, tied, kv_heads):
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=HEADS, num_key_value_heads=kv_heads, tie_word_embeddings=tied)
    model = Qwen2LM(config, rngs=nnx.Rngs(3))
    keys = iter(jax.random.split(jax.random.key(1), 100))
    state = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda x: x + 0.15 * jax.random.normal(next(keys), x.shape, x.dtype), state))
    save_pretrained(model, config, tmp_path / "ours")
    model_hf = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path / "ours", attn_implementation="eager",
                                                             dtype=torch.float32).eval()
    assert model_hf.config.tie_word_embeddings == tied
    ids, mask = batch(5, 3, 8, "right")
    assert_parity(hf_forward(model_hf, ids, mask), ours_forward(model, ids, mask), mask)


def test_explicit_positions_match_hf_position_ids(tmp_path):
    """Left padding with positions = cumsum(mask) - 1 (what HF generate passes) agrees too."""
    model_hf = hf_model(False, 2, seed=7)
    model_hf.save_pretrained(tmp_path / "hf")
    _, model = load_pretrained(tmp_path / "hf")
    ids, mask = batch(2, 3, 9, "left")
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    with torch.no_grad():
        ref = model_hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                       position_ids=torch.tensor(positions)).logits.numpy()
    ours = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(positions)))
    assert np.abs(ours - ref)[mask.astype(bool)].max() <= LOGIT_ATOL


def test_bfloat16_checkpoint_loads_in_transformers(tmp_path):
    """A bfloat16 save is stored as BF16 and HF reads the identical weights."""
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=48, num_hidden_layers=1,
                         num_attention_heads=HEADS, num_key_value_heads=2, param_dtype="bfloat16", dtype="bfloat16")
    model = Qwen2LM(config, rngs=nnx.Rngs(0))
    save_pretrained(model, config, tmp_path / "bf16")
    model_hf = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path / "bf16")
    w_hf = model_hf.model.layers[0].self_attn.q_proj.weight
    assert w_hf.dtype == torch.bfloat16
    ours = np.asarray(model.layers[0].self_attn.q_proj.kernel[...].astype(jnp.float32)).T
    np.testing.assert_array_equal(w_hf.float().detach().numpy(), ours)
