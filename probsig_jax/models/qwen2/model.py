"""The Qwen2 / Qwen2.5 decoder (PAPER section 6) as a Flax NNX module, numerically equal to HF ``Qwen2ForCausalLM``;
by ``config.model_type`` also HF ``LlamaForCausalLM`` and ``MistralForCausalLM`` (same architecture, other biases).

Parameter tree (the names checkpoint.py maps to HF and sharding rules can match on)::

    embed_tokens/embedding                       (V, H)
    layers/{i}/input_layernorm/scale             (H,)
    layers/{i}/self_attn/{q,k,v}_proj/kernel     (H, heads * D), (H, kv * D)   + bias if attention_bias
    layers/{i}/self_attn/o_proj/kernel           (heads * D, H)                + bias (H,) if llama attention_bias
    layers/{i}/post_attention_layernorm/scale    (H,)
    layers/{i}/mlp/{gate,up}_proj/kernel         (H, I)                        + bias (I,) if mlp_bias (llama)
    layers/{i}/mlp/down_proj/kernel              (I, H)                        + bias (H,) if mlp_bias (llama)
    norm/scale                                   (H,)
    lm_head/kernel                               (H, V)   only when embeddings are untied

Shape letters: N batch, T sequence, H hidden, D head dim, Q query heads, K key/value heads, V vocabulary.
How attention and the MLP / output products are computed and differentiated is chosen per backend
(``config.attention_impl``, ``config.dense_impl``; "auto" picks the fastest measured): the function is the same.
Numerics follow HF: RMSNorm statistics in float32 then cast back, rotary embeddings with the
``rotate_half`` convention and float32 angles, softmax in float32, logits returned in float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from probsig_jax.models.qwen2.blocked_attention import blocked_causal_attention
from probsig_jax.models.qwen2.config import Qwen2Config, resolve_attention_impl, resolve_dense_impl
from probsig_jax.models.qwen2.dense import dense
from probsig_jax.validation import require


class RMSNorm(nnx.Module):
    """``scale * x / sqrt(mean(x^2) + eps)`` with the statistics in float32 (as HF ``Qwen2RMSNorm``)."""

    def __init__(self, dim: int, eps: float, param_dtype):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))

    def __call__(self, x_NxTxH: jax.Array) -> jax.Array:
        x32 = x_NxTxH.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return self.scale[...].astype(x_NxTxH.dtype) * x32.astype(x_NxTxH.dtype)


def rotary_cos_sin(positions_NxT: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """(N, T, D) cos and sin of the rotary angles, in float32 (HF default RoPE)."""
    inv_freq_D2 = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles_NxTxD2 = positions_NxT.astype(jnp.float32)[..., None] * inv_freq_D2
    angles_NxTxD = jnp.concatenate([angles_NxTxD2, angles_NxTxD2], axis=-1)
    return jnp.cos(angles_NxTxD), jnp.sin(angles_NxTxD)


def apply_rotary(x_NxHxTxD: jax.Array, cos_NxTxD: jax.Array, sin_NxTxD: jax.Array) -> jax.Array:
    """``x cos + rotate_half(x) sin`` with ``rotate_half(x) = (-x2, x1)`` (HF convention), heads-first x."""
    x1, x2 = jnp.split(x_NxHxTxD, 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    cos = cos_NxTxD[:, None].astype(x_NxHxTxD.dtype)
    sin = sin_NxTxD[:, None].astype(x_NxHxTxD.dtype)
    return x_NxHxTxD * cos + rotated * sin


def reference_attention(q_NxQxTxD, k_NxKxSxD, v_NxKxSxD, mask_Nx1xTxS, scale: float) -> jax.Array:
    """Plain einsum grouped-query attention, heads-first: (N, Q, T, D) queries over (N, K, S, D) keys/values.

    ``mask_Nx1xTxS``: True where query t may attend to key s; ``None`` means causal (S = T). Query head h
    uses kv head h // (Q // K), as HF ``repeat_kv``. Softmax in float32. Returns (N, Q, T, D).
    """
    N, Q, T, D = q_NxQxTxD.shape
    K, S = k_NxKxSxD.shape[1], k_NxKxSxD.shape[2]
    if mask_Nx1xTxS is None:
        mask_Nx1xTxS = jnp.tril(jnp.ones((T, S), dtype=bool))[None, None]
    q_NxKxGxTxD = q_NxQxTxD.reshape(N, K, Q // K, T, D)
    scores_NxKxGxTxS = jnp.einsum("nkgtd,nksd->nkgts", q_NxKxGxTxD, k_NxKxSxD).astype(jnp.float32) * scale
    scores_NxKxGxTxS = jnp.where(mask_Nx1xTxS[:, :, None], scores_NxKxGxTxS, jnp.finfo(jnp.float32).min)
    probs_NxKxGxTxS = jax.nn.softmax(scores_NxKxGxTxS, axis=-1).astype(v_NxKxSxD.dtype)
    out_NxKxGxTxD = jnp.einsum("nkgts,nksd->nkgtd", probs_NxKxGxTxS, v_NxKxSxD)
    return out_NxKxGxTxD.reshape(N, Q, T, D)


class Attention(nnx.Module):
    """Grouped-query self-attention with rotary embeddings; bias on q/k/v (``attention_bias``) and, for llama
    with ``attention_bias``, on o_proj (``config.o_proj_bias``).

    Queries, keys and values are kept heads-first, (N, heads, T, D): the projections write that layout
    directly (one einsum each), so the attention products need no transposes. On a CPU this made the
    training step about 10 % faster than the (N, T, heads, D) layout (``benchmarks/qwen2_train_step.py``).
    """

    def __init__(self, config: Qwen2Config, *, rngs: nnx.Rngs):
        c = config
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        linear = dict(dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype), rngs=rngs,
                      kernel_init=nnx.initializers.normal(c.initializer_range))
        self.q_proj = nnx.Linear(c.hidden_size, c.num_attention_heads * c.head_dim, use_bias=c.attention_bias, **linear)
        self.k_proj = nnx.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, use_bias=c.attention_bias, **linear)
        self.v_proj = nnx.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, use_bias=c.attention_bias, **linear)
        self.o_proj = nnx.Linear(c.num_attention_heads * c.head_dim, c.hidden_size, use_bias=c.o_proj_bias, **linear)
        self.compute_dtype = jnp.dtype(c.dtype)

    def _project(self, linear: nnx.Linear, x_NxTxH: jax.Array, heads: int) -> jax.Array:
        """``linear(x)`` split into heads, written heads-first: (N, heads, T, D)."""
        kernel_HxhxD = linear.kernel[...].astype(self.compute_dtype).reshape(-1, heads, self.head_dim)
        y_NxhxTxD = jnp.einsum("nth,hqd->nqtd", x_NxTxH.astype(self.compute_dtype), kernel_HxhxD)
        if linear.bias is not None:
            y_NxhxTxD = y_NxhxTxD + linear.bias[...].astype(self.compute_dtype).reshape(heads, 1, self.head_dim)
        return y_NxhxTxD

    def qkv(self, x_NxTxH, cos_NxTxD, sin_NxTxD) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Rotated queries (N, Q, T, D), rotated keys and values (N, K, T, D) (heads-first)."""
        q_NxQxTxD = apply_rotary(self._project(self.q_proj, x_NxTxH, self.num_heads), cos_NxTxD, sin_NxTxD)
        k_NxKxTxD = apply_rotary(self._project(self.k_proj, x_NxTxH, self.num_kv_heads), cos_NxTxD, sin_NxTxD)
        v_NxKxTxD = self._project(self.v_proj, x_NxTxH, self.num_kv_heads)
        return q_NxQxTxD, k_NxKxTxD, v_NxKxTxD

    def attend(self, q_NxQxTxD, k_NxKxSxD, v_NxKxSxD, mask_Nx1xTxS, attention_impl: str) -> jax.Array:
        """Attention of T queries over S keys (S = T, or a KV cache), then the output projection (N, T, H).

        ``mask_Nx1xTxS``: an explicit boolean mask, or ``None`` for plain causal attention (S = T), which
        lets the fused kernels skip the masked half instead of reading a (T, S) mask.
        """
        N, Q, T, D = q_NxQxTxD.shape
        scale = self.head_dim ** -0.5
        if attention_impl == "blocked" and mask_Nx1xTxS is None:
            out_NxQxTxD = blocked_causal_attention(q_NxQxTxD, k_NxKxSxD, v_NxKxSxD, scale)
        elif attention_impl in ("reference", "blocked"):
            out_NxQxTxD = reference_attention(q_NxQxTxD, k_NxKxSxD, v_NxKxSxD, mask_Nx1xTxS, scale)
        else:  # jax.nn.dot_product_attention takes (N, T, heads, D)
            out_NxTxQxD = jax.nn.dot_product_attention(
                q_NxQxTxD.transpose(0, 2, 1, 3), k_NxKxSxD.transpose(0, 2, 1, 3), v_NxKxSxD.transpose(0, 2, 1, 3),
                mask=mask_Nx1xTxS, scale=scale, is_causal=mask_Nx1xTxS is None, implementation=attention_impl)
            out_NxQxTxD = out_NxTxQxD.transpose(0, 2, 1, 3)
        kernel_QxDxH = self.o_proj.kernel[...].astype(out_NxQxTxD.dtype).reshape(Q, D, -1)
        out_NxTxH = jnp.einsum("nqtd,qdh->nth", out_NxQxTxD, kernel_QxDxH)
        if self.o_proj.bias is not None:
            out_NxTxH = out_NxTxH + self.o_proj.bias[...].astype(out_NxTxH.dtype)
        return out_NxTxH

    def __call__(self, x_NxTxH, cos_NxTxD, sin_NxTxD, mask_Nx1xTxT, attention_impl: str) -> jax.Array:
        return self.attend(*self.qkv(x_NxTxH, cos_NxTxD, sin_NxTxD), mask_Nx1xTxT, attention_impl)


def apply_linear(layer: nnx.Linear, x_BxK: jax.Array, dense_impl: str) -> jax.Array:
    """``layer(x)`` (an ``nnx.Linear``); with ``dense_impl="explicit_transpose"`` the product is
    :func:`~probsig_jax.models.qwen2.dense.dense` (same values, a backward pass laid out for XLA:CPU)."""
    if dense_impl == "einsum":
        return layer(x_BxK)
    dtype = layer.dtype or x_BxK.dtype
    y_BxN = dense(x_BxK.astype(dtype), layer.kernel[...].astype(dtype))
    return y_BxN if layer.bias is None else y_BxN + layer.bias[...].astype(dtype)


class MLP(nnx.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``; biases only with ``mlp_bias`` (llama)."""

    def __init__(self, config: Qwen2Config, *, rngs: nnx.Rngs):
        c = config
        linear = dict(use_bias=c.mlp_bias, dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype), rngs=rngs,
                      kernel_init=nnx.initializers.normal(c.initializer_range))
        self.gate_proj = nnx.Linear(c.hidden_size, c.intermediate_size, **linear)
        self.up_proj = nnx.Linear(c.hidden_size, c.intermediate_size, **linear)
        self.down_proj = nnx.Linear(c.intermediate_size, c.hidden_size, **linear)

    def __call__(self, x_NxTxH: jax.Array, dense_impl: str = "einsum") -> jax.Array:
        gate_NxTxI = apply_linear(self.gate_proj, x_NxTxH, dense_impl)
        up_NxTxI = apply_linear(self.up_proj, x_NxTxH, dense_impl)
        return apply_linear(self.down_proj, jax.nn.silu(gate_NxTxI) * up_NxTxI, dense_impl)


class DecoderLayer(nnx.Module):
    """Pre-norm residual block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, config: Qwen2Config, *, rngs: nnx.Rngs):
        pdt = jnp.dtype(config.param_dtype)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, pdt)
        self.self_attn = Attention(config, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, pdt)
        self.mlp = MLP(config, rngs=rngs)

    def __call__(self, x_NxTxH, cos_NxTxD, sin_NxTxD, mask_Nx1xTxT, attention_impl: str,
                 dense_impl: str = "einsum") -> jax.Array:
        x_NxTxH = x_NxTxH + self.self_attn(self.input_layernorm(x_NxTxH), cos_NxTxD, sin_NxTxD, mask_Nx1xTxT,
                                           attention_impl)
        return x_NxTxH + self.mlp(self.post_attention_layernorm(x_NxTxH), dense_impl)


class Qwen2LM(nnx.Module):
    """Qwen2 (or, by ``config.model_type``, Llama / Mistral) causal LM: ``input_ids (N, T) -> logits (N, T, V)``
    (float32).

    Args:
      config: a validated :class:`Qwen2Config` (kept as a static attribute).
      rngs: NNX random streams (uses ``params``); every weight matrix is ``N(0, initializer_range^2)``,
        norms start at 1, biases at 0 (HF's initialisation).
    """

    def __init__(self, config: Qwen2Config, *, rngs: nnx.Rngs):
        config.validate()
        self.config = config
        pdt, cdt = jnp.dtype(config.param_dtype), jnp.dtype(config.dtype)
        init = nnx.initializers.normal(config.initializer_range)
        self.embed_tokens = nnx.Embed(config.vocab_size, config.hidden_size, dtype=cdt, param_dtype=pdt,
                                      embedding_init=init, rngs=rngs)
        self.layers = nnx.List([DecoderLayer(config, rngs=rngs) for _ in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, pdt)
        self.lm_head = None if config.tie_word_embeddings else nnx.Linear(
            config.hidden_size, config.vocab_size, use_bias=False, dtype=cdt, param_dtype=pdt, kernel_init=init,
            rngs=rngs)

    def input_embeddings(self) -> jax.Array:
        """(V, H) token embedding matrix ``W_E`` (one row per token)."""
        return self.embed_tokens.embedding[...]

    def output_embeddings(self) -> jax.Array:
        """(V, H) unembedding matrix ``W_U`` (one row per token; the embedding itself when tied)."""
        return self.input_embeddings() if self.lm_head is None else self.lm_head.kernel[...].T

    def __call__(self, input_ids_NxT: jax.Array, attention_mask_NxT: jax.Array | None = None,
                 positions_NxT: jax.Array | None = None, *, return_hidden_states: bool = False,
                 attention_impl: str | None = None, dense_impl: str | None = None):
        """Logits (N, T, V) in float32; with ``return_hidden_states`` also a tuple of L + 1 (N, T, H) arrays.

        ``attention_mask_NxT``: 1 for tokens, 0 for padding (left or right). Padded keys are never attended
        to; outputs at padded positions are finite but meaningless (as in HF). ``positions_NxT`` default to
        ``arange(T)`` for every row whatever the padding (HF ``forward`` does the same; pass
        ``cumsum(mask) - 1`` to shift left-padded rows). Hidden states follow HF ``output_hidden_states``:
        the embedding output, the outputs of layers 0 .. L-2, and the final-normed output of layer L-1.
        ``attention_impl`` / ``dense_impl`` override the config's for this call (same function, other kernels).
        """
        impl = resolve_attention_impl(attention_impl or self.config.attention_impl, self.config.dtype)
        dense_impl = resolve_dense_impl(dense_impl or self.config.dense_impl)
        if impl == "cudnn":
            require(jax.default_backend() == "gpu", "attention_impl",
                    f"'cudnn' needs a GPU (JAX backend is {jax.default_backend()!r}); use 'xla' or 'reference'")
            require(self.config.dtype == "bfloat16", "dtype",
                    f"attention_impl 'cudnn' needs dtype 'bfloat16', got {self.config.dtype!r}")
        N, T = input_ids_NxT.shape
        if positions_NxT is None:
            positions_NxT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (N, T))
        mask_Nx1xTxT = None  # no padding: plain causal attention, no (T, T) mask materialised
        if attention_mask_NxT is not None:
            causal_1x1xTxT = jnp.tril(jnp.ones((T, T), dtype=bool))[None, None]
            mask_Nx1xTxT = causal_1x1xTxT & (jnp.asarray(attention_mask_NxT) > 0)[:, None, None, :]
        cos_NxTxD, sin_NxTxD = rotary_cos_sin(positions_NxT, self.config.head_dim, self.config.rope_theta)

        x_NxTxH = self.embed_tokens(input_ids_NxT)
        hidden = [x_NxTxH]
        for layer in self.layers:
            x_NxTxH = layer(x_NxTxH, cos_NxTxD, sin_NxTxD, mask_Nx1xTxT, impl, dense_impl)
            hidden.append(x_NxTxH)
        x_NxTxH = self.norm(x_NxTxH)
        hidden[-1] = x_NxTxH
        w_VxH = self.output_embeddings().astype(x_NxTxH.dtype)
        if dense_impl == "einsum":
            logits_NxTxV = jnp.einsum("nth,vh->ntv", x_NxTxH, w_VxH)
        else:
            logits_NxTxV = dense(x_NxTxH, w_VxH.T)
        logits_NxTxV = logits_NxTxV.astype(jnp.float32)
        return (logits_NxTxV, tuple(hidden)) if return_hidden_states else logits_NxTxV


def abstract_model(config: Qwen2Config) -> Qwen2LM:
    """The model with ``jax.ShapeDtypeStruct`` leaves (nothing allocated), via ``nnx.eval_shape``."""
    return nnx.eval_shape(lambda: Qwen2LM(config, rngs=nnx.Rngs(0)))


def num_parameters(config: Qwen2Config) -> int:
    """Number of parameters (tied embeddings counted once), computed from shapes without allocating."""
    state = nnx.state(abstract_model(config), nnx.Param)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(state))
