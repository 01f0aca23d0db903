"""The decoder's CPU kernels against independent references: blocked causal attention (custom VJP) against the
einsum reference attention differentiated by JAX, the explicit-transpose ``dense`` against ``x @ w`` differentiated
by JAX and against central finite differences (float64), and the whole model's loss gradient with both kernels
against the plain implementations. HF parity of the forward pass (which uses the defaults) is in
test_qwen2_hf_parity.py / test_llama_hf_parity.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from probsig_jax.models.qwen2 import Qwen2Config, Qwen2LM
from probsig_jax.models.qwen2.blocked_attention import blocked_causal_attention, query_blocks
from probsig_jax.models.qwen2.config import resolve_dense_impl
from probsig_jax.models.qwen2.dense import dense, matmul
from probsig_jax.models.qwen2.model import reference_attention
from probsig_jax.training.losses import next_token_loss
from probsig_jax.validation import ConfigError


def _qkv(N, Q, K, T, D, dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v, dout = (jnp.asarray(rng.standard_normal(shape), dtype)
                     for shape in ((N, Q, T, D), (N, K, T, D), (N, K, T, D), (N, Q, T, D)))
    return q, k, v, dout


def _value_and_grads(attention, q, k, v, dout):
    """``<attention(q, k, v), dout>`` and its gradient w.r.t. q, k, v (a random cotangent, not a sum)."""
    return jax.jit(jax.value_and_grad(lambda q, k, v: jnp.vdot(attention(q, k, v), dout), argnums=(0, 1, 2)))(q, k, v)


def _rel_err(a, b, floor: float = 1e-30) -> float:
    """max |a - b| over max(max |b|, floor): relative to the reference's scale (``floor`` where that can be 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), floor))


# --- blocked causal attention ------------------------------------------------------------------------

@pytest.mark.parametrize("T,block_size,kv_heads", [(1, 32, 2), (5, 2, 1), (32, 32, 4), (33, 32, 2), (70, 16, 1),
                                                   (70, 16, 2), (70, 16, 4), (40, 64, 2)])
def test_blocked_attention_matches_reference_values_and_gradients(T, block_size, kv_heads):
    """Several query blocks (incl. a short last one, one block larger than T), MHA / GQA / MQA; float32 rounding."""
    q, k, v, dout = _qkv(2, 4, kv_heads, T, 8)
    scale = 8 ** -0.5
    out, grads = _value_and_grads(lambda q, k, v: blocked_causal_attention(q, k, v, scale, block_size), q, k, v, dout)
    ref_out, ref_grads = _value_and_grads(lambda q, k, v: reference_attention(q, k, v, None, scale), q, k, v, dout)
    assert abs(float(out - ref_out)) <= 1e-5 * max(1.0, abs(float(ref_out)))
    np.testing.assert_allclose(jax.jit(blocked_causal_attention, static_argnums=(3, 4))(q, k, v, scale, block_size),
                               reference_attention(q, k, v, None, scale), atol=2e-6, rtol=1e-5)
    for name, g, g_ref in zip("qkv", grads, ref_grads):
        assert g.shape == g_ref.shape and g.dtype == g_ref.dtype
        # floor 1 (the inputs' scale): with T = 1, dq is exactly 0 in the reference and rounding-small here
        assert _rel_err(g, g_ref, floor=1.0) <= 2e-6, f"d{name}: {_rel_err(g, g_ref, floor=1.0):.2e}"


def test_blocked_attention_is_causal_and_jits():
    """Changing a future key/value leaves earlier outputs unchanged (and compiles under jit)."""
    q, k, v, _ = _qkv(1, 2, 1, 20, 4)
    fn = jax.jit(lambda q, k, v: blocked_causal_attention(q, k, v, 0.5, 6))
    base = fn(q, k, v)
    changed = fn(q, k.at[:, :, 13].add(5.0), v.at[:, :, 13].add(5.0))
    np.testing.assert_array_equal(base[:, :, :13], changed[:, :, :13])
    assert float(jnp.abs(base[:, :, 13:] - changed[:, :, 13:]).max()) > 1e-3


def test_blocked_attention_bfloat16_close_to_reference():
    q, k, v, dout = _qkv(2, 4, 2, 45, 16, dtype=jnp.bfloat16)
    out, grads = _value_and_grads(lambda q, k, v: blocked_causal_attention(q, k, v, 0.25, 16), q, k, v, dout)
    ref_out, ref_grads = _value_and_grads(lambda q, k, v: reference_attention(q, k, v, None, 0.25), q, k, v, dout)
    for g, g_ref in zip(grads, ref_grads):
        assert g.dtype == jnp.bfloat16
        assert _rel_err(g, g_ref) <= 0.02  # bfloat16 has ~3 significant digits


def test_query_blocks_cover_the_sequence():
    assert query_blocks(70, 32) == [(0, 32), (32, 64), (64, 70)]
    assert query_blocks(5, 8) == [(0, 5)]


@pytest.mark.parametrize("args,match", [
    (((1, 4, 5, 8), (1, 3, 5, 8), (1, 3, 5, 8)), "must divide"),
    (((1, 4, 5, 8), (1, 2, 6, 8), (1, 2, 6, 8)), r"q \(N, Q, T, D\)"),
])
def test_blocked_attention_bad_shapes(args, match):
    q, k, v = (jnp.zeros(s) for s in args)
    with pytest.raises(ValueError, match=match):
        blocked_causal_attention(q, k, v, 1.0)
    with pytest.raises(ValueError, match="block_size"):
        blocked_causal_attention(jnp.zeros((1, 2, 4, 8)), jnp.zeros((1, 1, 4, 8)), jnp.zeros((1, 1, 4, 8)), 1.0, 0)


# --- dense with the explicit-transpose backward ------------------------------------------------------

@pytest.mark.parametrize("shape_x,shape_w", [((7, 3), (3, 5)), ((7, 5), (5, 3)), ((2, 6, 4), (4, 4))])
def test_dense_matches_matmul_and_its_autodiff(shape_x, shape_w):
    """Both branches of the weight gradient (K <= N: transpose x; K > N: transpose dy), leading batch axes."""
    rng = np.random.default_rng(1)
    x, w = jnp.asarray(rng.standard_normal(shape_x)), jnp.asarray(rng.standard_normal(shape_w))
    dy = jnp.asarray(rng.standard_normal(shape_x[:-1] + shape_w[1:]))
    np.testing.assert_allclose(dense(x, w), x @ w, rtol=1e-12)
    grads = jax.grad(lambda x, w: jnp.vdot(dense(x, w), dy), argnums=(0, 1))(x, w)
    ref = jax.grad(lambda x, w: jnp.vdot(x @ w, dy), argnums=(0, 1))(x, w)
    for g, g_ref in zip(grads, ref):
        assert g.shape == g_ref.shape and g.dtype == g_ref.dtype
        np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-12)


def test_dense_gradient_matches_finite_differences():
    """float64 central differences of a nonlinear loss through dense (independent of any autodiff rule)."""
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((4, 3)), rng.standard_normal((3, 6))

    def loss(x, w):
        return jnp.sum(jnp.tanh(dense(jnp.asarray(x), jnp.asarray(w))) ** 2)

    gx, gw = jax.grad(loss, argnums=(0, 1))(x, w)
    h = 1e-6
    for arr, grad, which in ((x, gx, 0), (w, gw, 1)):
        fd = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            plus, minus = arr.copy(), arr.copy()
            plus[idx] += h
            minus[idx] -= h
            args_p = (plus, w) if which == 0 else (x, plus)
            args_m = (minus, w) if which == 0 else (x, minus)
            fd[idx] = (float(loss(*args_p)) - float(loss(*args_m))) / (2 * h)
        np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-8)


def test_matmul_keeps_bfloat16_gradients():
    x = jnp.ones((4, 3), jnp.bfloat16)
    w = jnp.ones((3, 2), jnp.bfloat16)
    gx, gw = jax.grad(lambda x, w: matmul(x, w).astype(jnp.float32).sum(), argnums=(0, 1))(x, w)
    assert gx.dtype == gw.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(gw, np.float32), np.full((3, 2), 4.0))


# --- the whole model -----------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [
    {},                                                                         # qwen2: q/k/v biases, untied
    {"tie_word_embeddings": True, "num_key_value_heads": 1},                    # tied head (W_E^T), MQA
    {"model_type": "llama", "attention_bias": True, "mlp_bias": True},          # biases on o_proj and the MLP
])
def test_model_loss_gradient_same_with_cpu_kernels(overrides):
    """Every parameter's gradient of the next-token loss: (blocked, explicit_transpose) vs (reference, einsum)."""
    config = Qwen2Config(vocab_size=53, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, initializer_range=0.2).replace(**overrides)
    model = Qwen2LM(config, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    ids = jnp.asarray(np.random.default_rng(3).integers(0, 53, (3, 41)), jnp.int32)

    def loss(params, attention_impl, dense_impl):
        logits = nnx.merge(graphdef, params)(ids[:, :-1], attention_impl=attention_impl, dense_impl=dense_impl)
        return next_token_loss(logits, ids)

    value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=(1, 2))
    fast = value_and_grad(params, "blocked", "explicit_transpose")
    plain = value_and_grad(params, "reference", "einsum")
    assert abs(float(fast[0] - plain[0])) <= 1e-6
    flat_fast = dict(jax.tree_util.tree_leaves_with_path(fast[1]))
    for path, g_ref in jax.tree_util.tree_leaves_with_path(plain[1]):
        assert _rel_err(flat_fast[path], g_ref) <= 1e-5, jax.tree_util.keystr(path)


def test_dense_impl_config():
    assert Qwen2Config().dense_impl == "auto"
    expected = "explicit_transpose" if jax.default_backend() == "cpu" else "einsum"
    assert resolve_dense_impl("auto") == expected
    assert resolve_dense_impl("einsum") == "einsum"
    with pytest.raises(ConfigError, match="dense_impl"):
        Qwen2Config(dense_impl="fast")
    with pytest.raises(ConfigError, match="dense_impl"):
        resolve_dense_impl("fast")
    hf = Qwen2Config(dense_impl="einsum", attention_impl="blocked").to_hf_dict()
    assert "dense_impl" not in hf and "attention_impl" not in hf
    assert Qwen2Config.from_hf({**hf, "dense_impl": "einsum"}).dense_impl == "auto"  # not an HF key
