"""Jit-compiled optax training loops for any NNX model mapping token ids (N, L) to logits (N, V), trained on a
:class:`~probsig_jax.data.Dataset` of (x, y) pairs (the composite addition tasks).

The model is split once into ``(graphdef, state)``; :func:`make_train_step` builds the pure step over the
state (public, so benchmarks time exactly what :func:`train` runs), and ``lax.scan`` runs ``record_every``
steps per call so the host only wakes up to record weights and update the progress bar (LESSONS: NNX
overhead, progress bars in jitted loops).

``optimizer="gd"`` is full-batch gradient descent: after k steps of learning rate eta it approximates the
gradient flow at ``t = k * eta``.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from probsig_jax.config_base import Config
from probsig_jax.data.dataset import Dataset
from probsig_jax.progress import progress_bar
from probsig_jax.signatures.dense import SignatureCounts
from probsig_jax.training.divergence import TrainingDiverged
from probsig_jax.training.losses import count_cross_entropy, weighted_cross_entropy
from probsig_jax.validation import MAX_STEPS, ConfigError, require, require_float, require_int, require_seed


@dataclass(frozen=True)
class TrainConfig(Config):
    """Optimisation settings.

    Attributes:
      optimizer: "gd" (full-batch gradient descent, the flow discretisation), "sgd" or "adam".
      learning_rate: eta > 0.
      steps: number of optimisation steps.
      batch_size: mini-batch size for "sgd"/"adam" (0 = full batch); rows are drawn with
        probability proportional to their weights, so a weighted data set is sampled correctly.
      record_every: record weights and loss every this many steps (and at step 0).
      seed: seed of the mini-batch sampler.
      weight_decay: lambda >= 0 of a *coupled* L2 penalty ``(lambda / 2) ||theta||^2`` added to the loss, so its
        gradient ``lambda theta`` goes through the optimiser (as ``torch.optim.Adam(weight_decay=...)``; not
        AdamW's decoupled decay). For "gd" this is the flow ``d theta / dt = -grad loss - lambda theta``.
      schedule: "constant", or "warmup_cosine": linear warmup from 0 to ``learning_rate`` over
        ``warmup_steps``, then cosine decay to ``final_learning_rate`` at ``schedule_steps``.
      warmup_steps: length of the warmup (``schedule="warmup_cosine"`` only), < the schedule's horizon.
      final_learning_rate: end value of the cosine decay, in [0, learning_rate].
      schedule_steps: horizon of the cosine decay; 0 (default) means ``steps``. A larger value trains only the
        first ``steps`` of a longer schedule (e.g. the early epochs of a long run, at the rates that run had).
    """

    optimizer: Literal["gd", "sgd", "adam"] = "gd"
    learning_rate: float = 0.05
    steps: int = 4000
    batch_size: int = 0
    record_every: int = 20
    seed: int = 0
    weight_decay: float = 0.0
    schedule: Literal["constant", "warmup_cosine"] = "constant"
    warmup_steps: int = 0
    final_learning_rate: float = 0.0
    schedule_steps: int = 0

    def _check(self) -> None:
        require(self.optimizer in ("gd", "sgd", "adam"), "optimizer",
                f"must be one of gd, sgd, adam, got {self.optimizer!r}")
        require_float(self.learning_rate, "learning_rate", minimum=0.0, strict_minimum=True)
        require_int(self.steps, "steps", minimum=1, maximum=MAX_STEPS)
        require_int(self.batch_size, "batch_size", minimum=0)
        require(not (self.optimizer == "gd" and self.batch_size), "batch_size",
                "must be 0 for optimizer='gd' (full-batch gradient descent)")
        require_int(self.record_every, "record_every", minimum=1, maximum=self.steps)
        require_seed(self.seed)
        require_float(self.weight_decay, "weight_decay", minimum=0.0)
        require(self.schedule in ("constant", "warmup_cosine"), "schedule",
                f"must be 'constant' or 'warmup_cosine', got {self.schedule!r}")
        require_int(self.schedule_steps, "schedule_steps", minimum=0, maximum=MAX_STEPS)
        require(self.schedule == "warmup_cosine" or self.schedule_steps == 0, "schedule_steps",
                "is only used with schedule='warmup_cosine'; leave it 0")
        require(self.schedule_steps == 0 or self.schedule_steps >= self.steps, "schedule_steps",
                f"must be 0 (= steps) or at least steps={self.steps}, got {self.schedule_steps}")
        require_int(self.warmup_steps, "warmup_steps", minimum=0, maximum=self.horizon - 1)
        require(self.schedule == "warmup_cosine" or self.warmup_steps == 0, "warmup_steps",
                "is only used with schedule='warmup_cosine'; leave it 0")
        require_float(self.final_learning_rate, "final_learning_rate", minimum=0.0, maximum=self.learning_rate)

    @property
    def horizon(self) -> int:
        """The step at which the cosine decay ends: ``schedule_steps``, or ``steps`` when it is 0."""
        return self.schedule_steps or self.steps


@dataclass(frozen=True)
class TrainResult:
    """What a run recorded.

    Attributes:
      steps: (T,) int, the step of each record (0, record_every, ..., steps).
      times: (T,) float, ``steps * learning_rate`` (the flow time for "gd" at a constant rate).
      loss: (T,) float, full-data loss at each record.
      weights: name -> (T, ...) arrays from the model's ``weights()``.
      final_state: the model's NNX state at the end.
    """

    steps: np.ndarray
    times: np.ndarray
    loss: np.ndarray
    weights: dict[str, np.ndarray]
    final_state: nnx.State = dataclasses.field(repr=False)


def make_schedule(config: TrainConfig) -> optax.ScalarOrSchedule:
    """The learning rate: a constant, or linear warmup then cosine decay (see :class:`TrainConfig`)."""
    if config.schedule == "constant":
        return config.learning_rate
    return optax.warmup_cosine_decay_schedule(init_value=0.0, peak_value=config.learning_rate,
                                              warmup_steps=config.warmup_steps, decay_steps=config.horizon,
                                              end_value=config.final_learning_rate)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """``adam`` or ``sgd`` (also "gd") at :func:`make_schedule`'s rate, after the coupled L2 gradient
    ``weight_decay x theta`` is added (``optax.add_decayed_weights`` before the optimiser)."""
    rate = make_schedule(config)
    tx = optax.adam(rate) if config.optimizer == "adam" else optax.sgd(rate)
    if config.weight_decay == 0:
        return tx
    return optax.chain(optax.add_decayed_weights(config.weight_decay), tx)


class TrainStep(NamedTuple):
    """The pure functions :func:`train` compiles, over the split state of a model.

    Attributes:
      step: ``(state, opt_state, key) -> (state, opt_state, key)``, one optimisation step: the full data set
        (``gd``, or ``batch_size`` 0), else a mini-batch of rows drawn with probability proportional to their
        weights using ``key``.
      loss: ``state -> scalar``, the weighted cross-entropy on the whole data set.
      optimizer: the optax transformation (``optimizer.init(state)`` gives the initial ``opt_state``).
    """

    step: Callable
    loss: Callable
    optimizer: optax.GradientTransformation


def _count_train_step(graphdef: nnx.GraphDef, counts: SignatureCounts, config: TrainConfig, dtype) -> TrainStep:
    require(counts.seq_len == 1, "data", f"count-matrix training needs single-token inputs, got seq_len "
                                         f"{counts.seq_len}")
    require(config.batch_size == 0, "batch_size", "count-matrix data trains full batch: use 0")
    inputs = jnp.arange(counts.num_features, dtype=jnp.int32)[:, None]
    joint = jnp.asarray(counts.joint, dtype=dtype)
    total = float(counts.total_weight)
    tx = make_optimizer(config)

    def loss(state):
        return count_cross_entropy(nnx.merge(graphdef, state)(inputs), joint, total)

    def step(state, opt_state, key):
        grads = jax.grad(loss)(state)
        updates, opt_state = tx.update(grads, opt_state, state)
        return optax.apply_updates(state, updates), opt_state, key

    return TrainStep(step, loss, tx)


def make_train_step(graphdef: nnx.GraphDef, dataset: Dataset | SignatureCounts, config: TrainConfig, dtype
                    ) -> TrainStep:
    """The step and loss of :func:`train` for a model split as ``graphdef, state = nnx.split(model)``;
    ``dtype`` is the parameters' dtype (the sample weights are cast to it). ``dataset`` may also be the count
    matrix of single-token data (:class:`~probsig_jax.signatures.SignatureCounts` with ``seq_len`` 1, e.g. a
    corpus's pooled bigram counts): the loss is then :func:`~probsig_jax.training.losses.count_cross_entropy`,
    one forward pass per input token, full batch."""
    config = config.validate()
    if isinstance(dataset, SignatureCounts):
        return _count_train_step(graphdef, dataset, config, dtype)
    inputs = jnp.asarray(dataset.inputs)
    labels = jnp.asarray(dataset.labels)
    weights = jnp.asarray(dataset.sample_weights(), dtype=dtype)
    full_batch = config.batch_size == 0
    tx = make_optimizer(config)

    def batch_loss(state, x, y, w):
        return weighted_cross_entropy(nnx.merge(graphdef, state)(x), y, w)

    def step(state, opt_state, key):
        if full_batch:
            x, y, w = inputs, labels, weights
        else:
            key, sub = jax.random.split(key)
            idx = jax.random.choice(sub, inputs.shape[0], (config.batch_size,), p=weights)
            x, y, w = inputs[idx], labels[idx], jnp.ones((config.batch_size,), dtype)
        grads = jax.grad(batch_loss)(state, x, y, w)
        updates, opt_state = tx.update(grads, opt_state, state)
        return optax.apply_updates(state, updates), opt_state, key

    def loss(state):
        return batch_loss(state, inputs, labels, weights)

    return TrainStep(step, loss, tx)


def train(model: nnx.Module, dataset: Dataset | SignatureCounts, config: TrainConfig, *,
          record: Callable[[nnx.Module], dict[str, jax.Array]] | None = None,
          quiet: bool = False, description: str = "train") -> TrainResult:
    """Train ``model`` on ``dataset`` and record ``record(model)`` every ``record_every`` steps.

    ``dataset`` is a :class:`Dataset` of rows, or the count matrix of single-token data
    (:class:`~probsig_jax.signatures.SignatureCounts`, full batch; see :func:`make_train_step`).

    The model is not modified; the trained state is returned in the result.
    ``record`` defaults to ``model.weights()``. Raises :class:`TrainingDiverged` when the loss stops being
    finite.
    """
    config = config.validate()
    if not isinstance(dataset, SignatureCounts):
        require(dataset.num_samples > 0, "dataset", "is empty")
    model_vocab = getattr(model, "vocab_size", None)
    if isinstance(model_vocab, (int, np.integer)):
        # Labels >= the model's vocabulary would index past the logits (silently wrong inside jit).
        check_dataset_fits(int(model_vocab), dataset)
    record = record or (lambda m: m.weights())
    graphdef, state = nnx.split(model)
    param_dtype = jax.tree_util.tree_leaves(state)[0].dtype
    train_step = make_train_step(graphdef, dataset, config, param_dtype)

    @functools.partial(jax.jit, static_argnums=3)
    def run_chunk(state, opt_state, key, n_steps):
        def body(carry, _):
            return train_step.step(*carry), None

        return jax.lax.scan(body, (state, opt_state, key), None, length=n_steps)[0]

    @jax.jit
    def observe(state):
        return train_step.loss(state), record(nnx.merge(graphdef, state))

    opt_state = train_step.optimizer.init(state)
    key = jax.random.key(config.seed)
    n_chunks = config.steps // config.record_every
    rest = config.steps - n_chunks * config.record_every
    rec_steps, rec_loss, rec_weights = [], [], []

    def log(step_count, state):
        loss, obs = observe(state)
        rec_steps.append(step_count)
        rec_loss.append(float(loss))
        rec_weights.append(jax.device_get(obs))
        return float(loss)

    log(0, state)
    with progress_bar(total=config.steps, desc=description, quiet=quiet, unit="step") as bar:
        for i in range(n_chunks):
            state, opt_state, key = run_chunk(state, opt_state, key, config.record_every)
            loss = log((i + 1) * config.record_every, state)
            if not np.isfinite(loss):
                raise TrainingDiverged(f"training diverged: loss {loss} at step {(i + 1) * config.record_every}; "
                                       f"lower learning_rate (now {config.learning_rate})",
                                       history={"step": list(rec_steps), "loss": list(rec_loss)})
            bar.update(config.record_every)
            bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        if rest:  # a final partial chunk
            state, opt_state, key = run_chunk(state, opt_state, key, rest)
            bar.update(rest)
            log(config.steps, state)

    steps_arr = np.asarray(rec_steps)
    stacked = {k: np.stack([w[k] for w in rec_weights]) for k in rec_weights[0]}
    return TrainResult(steps_arr, steps_arr * config.learning_rate, np.asarray(rec_loss), stacked, state)


def data_loss(model: nnx.Module, dataset: Dataset) -> float:
    """Weighted cross-entropy of ``model`` on the whole data set."""
    logits = model(jnp.asarray(dataset.inputs))
    w = jnp.asarray(dataset.sample_weights(), dtype=logits.dtype)
    return float(weighted_cross_entropy(logits, jnp.asarray(dataset.labels), w))


def check_dataset_fits(model_vocab: int, dataset: Dataset | SignatureCounts) -> None:
    """Raise ConfigError if the data set's vocabulary (for counts: labels or input tokens) exceeds the model's."""
    if isinstance(dataset, SignatureCounts):
        if max(dataset.vocab_size, dataset.num_features) > model_vocab:
            raise ConfigError("vocab_size", f"model vocabulary {model_vocab} < the counts' "
                                            f"{max(dataset.vocab_size, dataset.num_features)} tokens")
        return
    if dataset.vocab_size > model_vocab:
        raise ConfigError("vocab_size", f"model vocabulary {model_vocab} < data set vocabulary {dataset.vocab_size}")
