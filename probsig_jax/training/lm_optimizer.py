"""The language-model optimiser: AdamW (or plain SGD, for the ladder's gradient-descent rung) with linear warmup,
cosine decay, global-norm clipping and weight decay on matrices only, configured by :class:`LMTrainConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax

from probsig_jax.config_base import Config
from probsig_jax.validation import MAX_STEPS, require, require_float, require_int, require_seed


@dataclass(frozen=True)
class LMTrainConfig(Config):
    """AdamW (or SGD) with linear warmup, cosine decay and global-norm clipping.

    Attributes:
      optimizer: "adamw", or "sgd" (plain stochastic gradient descent at the same schedule; its weight decay is
        the L2 gradient ``weight_decay * theta`` on matrices, which for SGD is decoupled decay scaled by the rate).
      learning_rate: peak learning rate (> 0), reached after ``warmup_steps``.
      warmup_steps: linear warmup from 0 (>= 0, < total_steps).
      total_steps: length of the schedule including warmup (>= 1); after it the rate stays at the end value.
      min_lr_ratio: end value of the cosine decay as a fraction of the peak, in [0, 1].
      weight_decay: decoupled weight decay (>= 0), applied to matrices only (ndim >= 2), not to
        biases and norm scales.
      b1, b2: Adam moment decay rates, in [0, 1).
      eps: Adam epsilon (> 0).
      grad_clip_norm: clip the global gradient norm to this (> 0); 0 disables clipping.
      seed: seed of the parameter initialisation and data order (>= 0).
    """

    optimizer: Literal["adamw", "sgd"] = "adamw"
    learning_rate: float = 3e-4
    warmup_steps: int = 100
    total_steps: int = 10_000
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    grad_clip_norm: float = 1.0
    seed: int = 0

    def _check(self) -> None:
        require(self.optimizer in ("adamw", "sgd"), "optimizer", f"must be adamw or sgd, got {self.optimizer!r}")
        require_float(self.learning_rate, "learning_rate", minimum=0.0, strict_minimum=True)
        require_int(self.total_steps, "total_steps", minimum=1, maximum=MAX_STEPS)
        require_int(self.warmup_steps, "warmup_steps", minimum=0)
        require(self.warmup_steps < self.total_steps, "warmup_steps",
                f"must be < total_steps ({self.total_steps}), got {self.warmup_steps}")
        require_float(self.min_lr_ratio, "min_lr_ratio", minimum=0.0, maximum=1.0)
        require_float(self.weight_decay, "weight_decay", minimum=0.0)
        for name in ("b1", "b2"):
            value = require_float(getattr(self, name), name, minimum=0.0)
            require(value < 1.0, name, f"must be in [0, 1), got {value:g}")
        require_float(self.eps, "eps", minimum=0.0, strict_minimum=True)
        require_float(self.grad_clip_norm, "grad_clip_norm", minimum=0.0)
        require_seed(self.seed)


def make_lm_schedule(cfg: LMTrainConfig) -> optax.Schedule:
    """0 -> ``learning_rate`` linearly over ``warmup_steps``, then cosine to ``min_lr_ratio * learning_rate``."""
    cfg = cfg.validate()
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
        decay_steps=cfg.total_steps, end_value=cfg.learning_rate * cfg.min_lr_ratio)


def decay_mask(params: Any) -> Any:
    """True for leaves that get weight decay: matrices (ndim >= 2), not biases or norm scales."""
    return jax.tree_util.tree_map(lambda x: jnp.ndim(x) >= 2, params)


def make_lm_optimizer(cfg: LMTrainConfig) -> optax.GradientTransformation:
    """``optax.chain(clip_by_global_norm, adamw(warmup-cosine schedule))``; for ``sgd`` the second link is
    ``chain(add_decayed_weights(weight_decay, matrices), sgd(schedule))``."""
    cfg = cfg.validate()
    if cfg.optimizer == "adamw":
        update = optax.adamw(make_lm_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                             weight_decay=cfg.weight_decay, mask=decay_mask)
    else:
        update = optax.chain(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
                             optax.sgd(make_lm_schedule(cfg)))
    if cfg.grad_clip_norm == 0:
        return optax.chain(optax.identity(), update)  # same state layout with or without clipping
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), update)
