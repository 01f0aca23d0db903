"""The timed runners of ``qwen2_train_step.py``: our sharded train step (and its variants) and the HF
``transformers`` PyTorch reference, each wrapped as a :class:`Runner` whose ``step()`` takes one synchronised
training step. The timing, FLOP counts and reporting live in ``qwen2_train_step.py``.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Callable

import jax
import numpy as np


class Runner:
    """One implementation: ``step()`` takes a training step (synchronised) and returns the loss before it."""

    def __init__(self, name: str, framework: str, attention: str, step: Callable[[], float],
                 forward: Callable[[], Any] | None = None, forward_backward: Callable[[], Any] | None = None,
                 setup: dict[str, Any] | None = None):
        self.name, self.framework, self.attention = name, framework, attention
        self.step, self.forward, self.forward_backward = step, forward, forward_backward
        self.setup = setup or {}
        self.losses: list[float] = []
        self.warmup_s: list[float] = []
        self.times_s: list[float] = []
        self.breakdown: dict[str, Any] = {}

    def timed_step(self) -> float:
        tic = time.perf_counter()
        self.losses.append(self.step())
        return time.perf_counter() - tic


def sliced_head_fns(padding_mask: bool):
    """``(apply_fn, loss_fn)`` for make_sharded_train_step that project only the hidden states of positions
    0..T-2 (the ones with a next token) to the vocabulary: the step never builds, slices or pads the
    (N, T, V) logits (the model's own full logits are computed but unused, and XLA drops them)."""
    import jax.numpy as jnp
    import optax

    def apply_fn(model, tokens_NxT, mask_NxT):
        _, hidden = model(tokens_NxT, mask_NxT if padding_mask else None, return_hidden_states=True)
        x_NxT1xH = hidden[-1][:, :-1]                        # final-normed hidden states, positions 0..T-2
        w_VxH = model.output_embeddings().astype(x_NxT1xH.dtype)
        return jnp.einsum("nth,vh->ntv", x_NxT1xH, w_VxH).astype(jnp.float32)

    def loss_fn(logits_NxT1xV, tokens_NxT, mask_NxT):       # = losses.next_token_loss on the full logits
        mask = mask_NxT.astype(jnp.float32)
        valid_NxT1 = mask[:, 1:] * mask[:, :-1]
        losses_NxT1 = optax.softmax_cross_entropy_with_integer_labels(logits_NxT1xV, tokens_NxT[:, 1:])
        return (losses_NxT1 * valid_NxT1).sum() / jnp.maximum(valid_NxT1.sum(), 1.0)

    return apply_fn, loss_fn


def make_ours(config, attention: str, args, mesh, tokens, mask, lm_cfg, variant: str = "library",
              dense: str = "auto") -> Runner:
    """Our library step (``variant`` "library"), or a variant of it, with ``attention`` / ``dense`` as the model's
    ``attention_impl`` / ``dense_impl`` (resolved for this backend). The runner keeps the compiled step
    (``runner.compiled``) and the state it updates (``runner.state``)."""
    from flax import nnx

    from probsig_jax.models.qwen2 import Qwen2LM
    from probsig_jax.models.qwen2.config import resolve_attention_impl, resolve_dense_impl
    from probsig_jax.training.lm_optimizer import make_lm_optimizer, make_lm_schedule
    from probsig_jax.training.losses import next_token_loss
    from probsig_jax.training.sharded_step import (apply_prefix, apply_prefix_with_attention_mask,
                                                   apply_with_attention_mask, apply_without_mask, init_sharded_model,
                                                   make_sharded_train_step)
    from probsig_jax.training.sharding import batch_sharding, init_opt_state, opt_state_shardings, replicated

    attention = resolve_attention_impl(attention, config.dtype)   # "auto" -> what it runs here
    dense = resolve_dense_impl(dense)
    config = config.replace(attention_impl=attention, dense_impl=dense)
    tic = time.perf_counter()
    graphdef, params, rest, p_sh = init_sharded_model(lambda: Qwen2LM(config, rngs=nnx.Rngs(args.seed)), mesh,
                                                      on_host=args.host_init)
    optimizer = make_lm_optimizer(lm_cfg)
    o_sh = opt_state_shardings(optimizer, params, mesh)
    opt_state = init_opt_state(optimizer, params, o_sh)
    jax.block_until_ready((params, opt_state))
    init_s = time.perf_counter() - tic
    if variant == "sliced head":
        apply_fn, loss_fn = sliced_head_fns(args.padding_mask)
    elif variant == "full logits":
        apply_fn, loss_fn = (apply_with_attention_mask if args.padding_mask else apply_without_mask), next_token_loss
    else:  # the library default (make_sharded_train_step's apply_fn), or its masked twin
        apply_fn, loss_fn = (apply_prefix_with_attention_mask if args.padding_mask else apply_prefix), next_token_loss
    step = make_sharded_train_step(graphdef, optimizer, mesh, p_sh, o_sh, rest=rest,
                                   lr_schedule=make_lm_schedule(lm_cfg), apply_fn=apply_fn, loss_fn=loss_fn)
    batch = batch_sharding(mesh)
    tokens_d, mask_d = jax.device_put(tokens, batch), jax.device_put(mask, batch)
    tic = time.perf_counter()
    lowered = step.lower(params, opt_state, tokens_d, mask_d)
    trace_s = time.perf_counter() - tic
    tic = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - tic
    state = {"params": params, "opt": opt_state}

    def run() -> float:
        params, opt_state, metrics = compiled(state["params"], state["opt"], tokens_d, mask_d)
        jax.block_until_ready((params, opt_state, metrics))
        state["params"], state["opt"] = params, opt_state
        return float(metrics["loss"])

    def loss_of(p, tokens_NxT, mask_NxT):
        return loss_fn(apply_fn(nnx.merge(graphdef, p, rest), tokens_NxT, mask_NxT), tokens_NxT, mask_NxT)

    # Placed as in the step: the batch is an argument in the batch sharding (closed over, it would be a constant
    # that every device computes in full), parameters in their shardings, the loss replicated.
    shardings = dict(in_shardings=(p_sh, batch, batch))
    fwd = jax.jit(loss_of, out_shardings=replicated(mesh), **shardings)
    fwd_bwd = jax.jit(jax.value_and_grad(loss_of), out_shardings=(replicated(mesh), p_sh), **shardings)
    setup = {"init_s": init_s, "trace_s": trace_s, "compile_s": compile_s, "attention_impl": attention,
             "dense_impl": dense, "variant": variant}
    name = f"ours ({attention}, {dense}{'' if variant == 'library' else ', ' + variant})"
    runner = Runner(name, "jax", attention, run,
                    forward=lambda: jax.block_until_ready(fwd(state["params"], tokens_d, mask_d)),
                    forward_backward=lambda: jax.block_until_ready(fwd_bwd(state["params"], tokens_d, mask_d)),
                    setup=setup)
    runner.compiled, runner.state = compiled, state
    return runner


def save_initial_weights(config, seed: int, directory: str) -> str:
    """Our initial parameters (the same values ``init_sharded_model`` gives) as a HF checkpoint."""
    from flax import nnx

    from probsig_jax.models.qwen2 import Qwen2LM, save_pretrained

    model = Qwen2LM(config, rngs=nnx.Rngs(seed))
    return save_pretrained(model, config, os.path.join(directory, "init"))


def make_torch(config, attention: str, args, tokens, mask, lm_cfg, checkpoint: str | None, lrs: np.ndarray,
               device: str) -> Runner:
    import torch
    import transformers

    hf_dict = config.to_hf_dict()
    tic = time.perf_counter()
    weights = "ours (save_pretrained -> from_pretrained)"
    if checkpoint is not None:
        model = transformers.Qwen2ForCausalLM.from_pretrained(checkpoint, attn_implementation=attention,
                                                              dtype=torch.float32)
    else:
        weights = "transformers random init (seed --seed)"
        torch.manual_seed(args.seed)
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**hf_dict, attn_implementation=attention))
    model = model.to(device=device, dtype=torch.float32).train()
    decay = [p for p in model.parameters() if p.ndim >= 2]           # as our decay_mask: matrices only
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    impl = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}[args.torch_adamw]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": lm_cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=float(lrs[0]), betas=(lm_cfg.b1, lm_cfg.b2), eps=lm_cfg.eps, **impl)
    init_s = time.perf_counter() - tic
    ids = torch.as_tensor(tokens, dtype=torch.long, device=device)
    mask_t = torch.as_tensor(mask, dtype=torch.long, device=device)
    prev = torch.cat([torch.zeros_like(mask_t[:, :1]), mask_t[:, :-1]], dim=1)
    labels = torch.where((mask_t > 0) & (prev > 0), ids, torch.full_like(ids, -100))  # HF shifts them
    attn_mask = mask_t if args.padding_mask else None
    autocast = (torch.autocast(device_type=device, dtype=torch.bfloat16) if args.dtype == "bfloat16"
                else contextlib.nullcontext())
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    count = [0]

    def run() -> float:
        lr = float(lrs[min(count[0], len(lrs) - 1)])  # optax uses the count before the update
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast:
            loss = model(input_ids=ids, attention_mask=attn_mask, labels=labels).loss
        loss.backward()
        if lm_cfg.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), lm_cfg.grad_clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        count[0] += 1
        value = float(loss.detach())
        sync()
        return value

    def forward():
        with torch.no_grad(), autocast:
            loss = model(input_ids=ids, attention_mask=attn_mask, labels=labels).loss
        sync()
        return float(loss)

    def forward_backward():
        with autocast:
            loss = model(input_ids=ids, attention_mask=attn_mask, labels=labels).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        sync()
        return float(loss.detach())

    setup = {"init_s": init_s, "attn_implementation": attention, "weights": weights,
             "adamw": args.torch_adamw, "device": device}
    return Runner(f"torch {attention}", "torch", attention, run, forward=forward,
                  forward_backward=forward_backward, setup=setup)
