"""Greedy generation with a key/value cache, for sanity checks of loaded checkpoints.

The prompt is run once (prefill) and writes every layer's rotated keys and values into a
fixed-size cache (N, S, K, D) with S = prompt length + ``max_new_tokens``; each further
token attends to the cache instead of recomputing the prefix. Left-padded batches are
supported through ``attention_mask`` (positions continue from each row's real length,
as HF ``generate`` does). The whole loop is one jit-compiled ``lax.scan``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from probsig_jax.models.qwen2.config import resolve_attention_impl
from probsig_jax.models.qwen2.model import Qwen2LM, rotary_cos_sin
from probsig_jax.validation import require, require_int


def _forward_with_cache(model: Qwen2LM, ids_NxT, positions_NxT, cache, start, key_mask_NxS, impl: str):
    """Logits of the last position (N, V) and the updated cache ``[(k, v)] * L``.

    ``start``: cache slot of the first of the T new tokens; ``key_mask_NxS``: which cache slots hold real tokens.
    """
    c = model.config
    N, T = ids_NxT.shape
    S = cache[0][0].shape[2]
    slots_T = start + jnp.arange(T)
    causal_TxS = jnp.arange(S)[None, :] <= slots_T[:, None]
    mask_Nx1xTxS = (causal_TxS[None] & key_mask_NxS[:, None, :])[:, None]
    cos_NxTxD, sin_NxTxD = rotary_cos_sin(positions_NxT, c.head_dim, c.rope_theta)
    x_NxTxH = model.embed_tokens(ids_NxT)
    new_cache = []
    for layer, (k_NxKxSxD, v_NxKxSxD) in zip(model.layers, cache):
        attn = layer.self_attn
        q_NxQxTxD, k_new, v_new = attn.qkv(layer.input_layernorm(x_NxTxH), cos_NxTxD, sin_NxTxD)
        k_NxKxSxD = jax.lax.dynamic_update_slice(k_NxKxSxD, k_new.astype(k_NxKxSxD.dtype), (0, 0, start, 0))
        v_NxKxSxD = jax.lax.dynamic_update_slice(v_NxKxSxD, v_new.astype(v_NxKxSxD.dtype), (0, 0, start, 0))
        x_NxTxH = x_NxTxH + attn.attend(q_NxQxTxD, k_NxKxSxD, v_NxKxSxD, mask_Nx1xTxS, impl)
        x_NxTxH = x_NxTxH + layer.mlp(layer.post_attention_layernorm(x_NxTxH))
        new_cache.append((k_NxKxSxD, v_NxKxSxD))
    h_NxH = model.norm(x_NxTxH[:, -1:])[:, 0]
    logits_NxV = (h_NxH @ model.output_embeddings().astype(h_NxH.dtype).T).astype(jnp.float32)
    return logits_NxV, new_cache


@partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "impl"))
def _generate(graphdef, state, prompt_NxT, mask_NxT, eos_id, *, max_new_tokens: int, impl: str):
    model = nnx.merge(graphdef, state)
    c = model.config
    N, T = prompt_NxT.shape
    S = T + max_new_tokens
    dtype = jnp.dtype(c.dtype)
    cache = [(jnp.zeros((N, c.num_key_value_heads, S, c.head_dim), dtype),   # heads-first, as Attention.qkv
              jnp.zeros((N, c.num_key_value_heads, S, c.head_dim), dtype)) for _ in range(c.num_hidden_layers)]
    key_mask_NxS = jnp.concatenate([mask_NxT > 0, jnp.ones((N, max_new_tokens), bool)], axis=1)
    positions_NxT = jnp.maximum(jnp.cumsum(mask_NxT, axis=1) - 1, 0)
    logits_NxV, cache = _forward_with_cache(model, prompt_NxT, positions_NxT, cache, 0, key_mask_NxS, impl)
    next_pos_N = positions_NxT[:, -1] + 1

    def step(carry, i):
        logits_NxV, cache, pos_N, done_N = carry
        token_N = jnp.argmax(logits_NxV, axis=-1).astype(prompt_NxT.dtype)
        token_N = jnp.where(done_N, eos_id, token_N)
        done_N = done_N | (token_N == eos_id)
        logits_NxV, cache = _forward_with_cache(model, token_N[:, None], pos_N[:, None], cache, T + i,
                                                key_mask_NxS, impl)
        return (logits_NxV, cache, pos_N + 1, done_N), token_N

    done0 = jnp.zeros((N,), bool)
    _, tokens_MxN = jax.lax.scan(step, (logits_NxV, cache, next_pos_N, done0), jnp.arange(max_new_tokens))
    return jnp.concatenate([prompt_NxT, tokens_MxN.T], axis=1)


def generate(model: Qwen2LM, prompt_ids, max_new_tokens: int, *, attention_mask=None, eos_token_id: int | None = None,
             attention_impl: str | None = None) -> np.ndarray:
    """Greedy continuation of ``prompt_ids`` (N, T) by ``max_new_tokens`` tokens -> (N, T + max_new_tokens).

    ``attention_mask`` (N, T): 1 for prompt tokens, 0 for left padding. After ``eos_token_id`` a row
    repeats it (HF pads finished rows the same way when pad = eos).
    """
    prompt = np.asarray(prompt_ids)
    require(prompt.ndim == 2 and prompt.shape[1] >= 1, "prompt_ids", f"must be (N, T) with T >= 1, got {prompt.shape}")
    require(np.issubdtype(prompt.dtype, np.integer), "prompt_ids", f"must be integer token ids, got {prompt.dtype}")
    V = model.config.vocab_size
    require(bool(np.all((prompt >= 0) & (prompt < V))), "prompt_ids", f"token ids must be in [0, {V - 1}]")
    require_int(max_new_tokens, "max_new_tokens", minimum=1)
    require(prompt.shape[1] + max_new_tokens <= model.config.max_position_embeddings, "max_new_tokens",
            f"prompt + new tokens must be <= max_position_embeddings = {model.config.max_position_embeddings}")
    mask = np.ones_like(prompt) if attention_mask is None else np.asarray(attention_mask)
    require(mask.shape == prompt.shape, "attention_mask", f"must have the prompt's shape {prompt.shape}, got {mask.shape}")
    require(bool(np.all(mask.sum(axis=1) > 0)), "attention_mask", "every row needs at least one prompt token")
    if attention_mask is not None:
        # Left padding only: real tokens must be the last ones of each row.
        require(bool(np.all(np.diff(mask.astype(int), axis=1) >= 0)), "attention_mask",
                "padding must be on the left (0s before 1s) for generation")
    eos = -1 if eos_token_id is None else int(eos_token_id)
    impl = resolve_attention_impl(attention_impl or model.config.attention_impl, model.config.dtype)
    graphdef, state = nnx.split(model)
    out = _generate(graphdef, state, jnp.asarray(prompt, jnp.int32), jnp.asarray(mask, jnp.int32), eos,
                    max_new_tokens=max_new_tokens, impl=impl)
    return np.asarray(out)
