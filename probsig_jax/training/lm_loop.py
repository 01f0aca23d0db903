"""The language-model training loop: the sharded train step over token windows, evaluation, checkpoints.

:func:`train_language_model` runs :func:`probsig_jax.training.sharded_step.make_sharded_train_step` on the
batches of :class:`~probsig_jax.training.token_windows.TokenWindows` (a function of seed and step), evaluates every ``eval_every``
steps (held-out loss plus whatever the caller's ``evaluate`` hook measures, e.g. the signature alignment of
the embeddings), and checkpoints with orbax. Given a ``checkpoint_dir`` that already holds checkpoints of
the same configuration, it resumes from the newest one and reproduces the uninterrupted run exactly (the
step's arithmetic is deterministic on a CPU; the batches depend only on seed and step). A non-finite loss
or gradient stops the run with :class:`TrainingDiverged`; checkpoints are only written while everything
is finite, so the newest one is always the last good state.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from probsig_jax.config_base import Config
from probsig_jax.progress import progress_bar
from probsig_jax.runs import to_jsonable
from probsig_jax.training.checkpoints import TrainCheckpointer
from probsig_jax.training.divergence import TrainingDiverged
from probsig_jax.training.lm_optimizer import LMTrainConfig, make_lm_optimizer, make_lm_schedule
from probsig_jax.training.losses import next_token_loss
from probsig_jax.training.metrics_log import MetricsLog
from probsig_jax.training.sharded_step import apply_prefix, init_sharded_model, make_sharded_train_step
from probsig_jax.training.sharding import batch_sharding, init_opt_state, make_mesh, opt_state_shardings
from probsig_jax.training.token_windows import TokenWindows
from probsig_jax.validation import ConfigError, require, require_int


@dataclass(frozen=True)
class LMRunConfig(Config):
    """Batches, evaluation and checkpoint cadence of a language-model run (its length is
    ``LMTrainConfig.total_steps``).

    Attributes:
      batch_size: sequences per step (>= 1; divisible by the mesh's data * fsdp size).
      seq_len: tokens per sequence (>= 2).
      eval_every: evaluate every this many steps (>= 1), and always before the first and after the last step.
      eval_batches: number of fixed held-out batches for the evaluation loss (>= 1).
      checkpoint_every: save a checkpoint every this many steps (>= 0; 0: only after the last step).
      keep_checkpoints: number of most recent checkpoints kept on disk (>= 1).
    """

    batch_size: int = 16
    seq_len: int = 128
    eval_every: int = 50
    eval_batches: int = 4
    checkpoint_every: int = 100
    keep_checkpoints: int = 2

    def _check(self) -> None:
        require_int(self.batch_size, "batch_size", minimum=1)
        require_int(self.seq_len, "seq_len", minimum=2)
        require_int(self.eval_every, "eval_every", minimum=1)
        require_int(self.eval_batches, "eval_batches", minimum=1)
        require_int(self.checkpoint_every, "checkpoint_every", minimum=0)
        require_int(self.keep_checkpoints, "keep_checkpoints", minimum=1)


@dataclass
class LMTrainingResult:
    """What a run produced.

    Attributes:
      model: the trained model (final parameters).
      history: per step ``step`` (0-based update index), ``loss`` (training loss before that update),
        ``grad_norm`` and ``lr``.
      evals: one dict per evaluation: ``step`` (updates applied), ``eval_loss`` and the hook's metrics.
      resumed_from: the checkpoint step the run resumed from, or ``None``.
      checkpoint_dir: where checkpoints went (``None`` if none).
    """

    model: nnx.Module
    history: dict[str, list] = field(default_factory=dict)
    evals: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None
    checkpoint_dir: Path | None = None


def resume_settings(run_record: Any, train: LMTrainConfig, run: LMRunConfig) -> dict[str, Any]:
    """Everything a resumed run must share with the checkpoints besides the tokens, as JSON."""
    return to_jsonable({"model": run_record, "train": train, "run": run})


def run_fingerprint(run_record: Any, train: LMTrainConfig, run: LMRunConfig, train_tokens: np.ndarray) -> str:
    """sha256 over ``run_record`` (JSON-able: e.g. the model config and every setting that changes a
    reported number), the configs and the training tokens: resuming requires an identical fingerprint."""
    h = hashlib.sha256()
    h.update(json.dumps(resume_settings(run_record, train, run), sort_keys=True).encode())
    h.update(np.ascontiguousarray(train_tokens).tobytes())
    return h.hexdigest()


def differing_fields(recorded: Any, current: Any, path: str = "") -> list[str]:
    """Dotted paths where two JSON values differ, e.g. ``["model.experiment.analysis.window (1 -> 2)"]``."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(recorded) | set(current), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in recorded or key not in current:
                out.append(f"{sub} ({'absent' if key not in recorded else recorded[key]!r} -> "
                           f"{'absent' if key not in current else current[key]!r})")
            else:
                out += differing_fields(recorded[key], current[key], sub)
        return out
    return [] if recorded == current else [f"{path} ({recorded!r} -> {current!r})"]


def _mismatch_message(directory: Path, record: dict[str, Any], settings: dict[str, Any]) -> str:
    differ = differing_fields(record.get("settings", {}), settings) if "settings" in record else []
    what = ("settings that differ from this run's: " + "; ".join(differ[:8]) + (" ..." if len(differ) > 8 else "")
            if differ else "the same settings but other training tokens (another corpus or tokenization)"
            if "settings" in record else "an older format without a settings record")
    return (f"{directory} holds checkpoints of another run, with {what}; rerun with the recorded settings to "
            "resume it, or remove it (or choose another --out) to start afresh")


def train_language_model(
    make_model: Callable[[nnx.Rngs], nnx.Module],
    train: LMTrainConfig,
    run: LMRunConfig,
    train_windows: TokenWindows,
    eval_windows: TokenWindows | None = None,
    *,
    run_record: Any = None,
    checkpoint_dir: str | Path | None = None,
    evaluate: Callable[[int, nnx.Module], dict[str, Any]] | None = None,
    mesh: Mesh | None = None,
    init_on_host: bool = False,
    metrics_jsonl: str | Path | None = None,
    tensorboard_dir: str | Path | None = None,
    quiet: bool = False,
) -> LMTrainingResult:
    """Train ``make_model(nnx.Rngs(train.seed))`` for ``train.total_steps`` steps of next-token prediction.

    ``make_model`` builds any NNX module mapping token ids (N, T) to logits (N, T, V), e.g.
    ``lambda rngs: Qwen2LM(config, rngs=rngs)``. ``run_record`` (JSON-able, e.g. the model config) describes
    whatever else determines the run; it enters the resume fingerprint with the configs and the tokens.
    ``evaluate(step, model)`` is called at every evaluation with the current model and returns JSON-able
    metrics (host values). ``checkpoint_dir``: see the module docstring; an existing checkpoint of another
    configuration is an error (``ConfigError`` on ``checkpoint_dir``). Raises :class:`TrainingDiverged` on a
    non-finite loss. ``init_on_host``: build the initial weights on the host CPU instead of jit-compiling
    the initialiser (see :func:`~probsig_jax.training.sharded_step.init_sharded_model`). ``metrics_jsonl`` /
    ``tensorboard_dir``: stream every step's loss, gradient norm and rate, and every evaluation's numbers, as they
    are produced (:class:`~probsig_jax.training.metrics_log.MetricsLog`; a resumed run continues the stream).
    """
    train, run = train.validate(), run.validate()
    require(train_windows.seq_len == run.seq_len, "seq_len",
            f"train_windows use {train_windows.seq_len}, the run config {run.seq_len}")
    mesh = mesh if mesh is not None else make_mesh(data=1, devices=jax.devices()[:1])

    graphdef, params, rest, p_sh = init_sharded_model(lambda: make_model(nnx.Rngs(train.seed)), mesh,
                                                      on_host=init_on_host)
    logits_shape = jax.eval_shape(lambda p: nnx.merge(graphdef, p, rest)(jnp.zeros((1, 2), jnp.int32)), params).shape
    max_id = int(train_windows.tokens.max())
    require(max_id < logits_shape[-1], "vocab_size",
            f"must exceed the largest token id in the training stream ({max_id}), got {logits_shape[-1]}")
    optimizer = make_lm_optimizer(train)
    o_sh = opt_state_shardings(optimizer, params, mesh)
    opt_state = init_opt_state(optimizer, params, o_sh)
    step_fn = make_sharded_train_step(graphdef, optimizer, mesh, p_sh, o_sh, rest=rest,
                                      lr_schedule=make_lm_schedule(train))
    batch_sh = batch_sharding(mesh)

    @jax.jit
    def eval_loss_fn(params, tokens_NxT):
        model = nnx.merge(graphdef, params, rest)
        return next_token_loss(apply_prefix(model, tokens_NxT, None), tokens_NxT)

    eval_sets = eval_windows.eval_batches(run.eval_batches, run.batch_size) if eval_windows is not None else []
    fingerprint = run_fingerprint(run_record, train, run, train_windows.tokens)
    settings = resume_settings(run_record, train, run)
    history: dict[str, list] = {"step": [], "loss": [], "grad_norm": [], "lr": []}
    evals: list[dict[str, Any]] = []
    start, resumed_from = 0, None
    checkpointer = TrainCheckpointer(checkpoint_dir, run.keep_checkpoints) if checkpoint_dir is not None else None
    restored = checkpointer.restore_newest_intact(params, opt_state, (p_sh, o_sh)) if checkpointer is not None else None
    if restored is not None:
        resumed_from, params, opt_state, record = restored
        if record.get("fingerprint") != fingerprint:
            checkpointer.close()
            raise ConfigError("checkpoint_dir", _mismatch_message(checkpointer.directory, record, settings))
        history, evals, start = record["history"], record["evals"], int(record["step"])

    def current_model():
        return nnx.merge(graphdef, params, rest)

    live = (MetricsLog(metrics_jsonl, tensorboard_dir, start_step=start)
            if metrics_jsonl is not None or tensorboard_dir is not None else None)

    def run_eval(step: int) -> None:
        record: dict[str, Any] = {"step": step}
        if eval_sets:
            losses = [float(eval_loss_fn(params, jax.device_put(b, batch_sh))) for b in eval_sets]
            record["eval_loss"] = float(np.mean(losses))
        if evaluate is not None:
            record.update(evaluate(step, current_model()))
        evals.append(record)
        if live is not None:
            live.write("eval", step, record)

    def save(step: int) -> None:
        if checkpointer is not None:
            checkpointer.save(step, params, opt_state, {"step": step, "fingerprint": fingerprint, "settings": settings,
                                                        "history": history, "evals": to_jsonable(evals)})

    if start == 0:
        run_eval(0)
    bar = progress_bar(train.total_steps, "train", quiet=quiet, unit="step")
    bar.update(start)
    try:
        for step in range(start, train.total_steps):
            tokens = jax.device_put(train_windows.train_batch(step, run.batch_size, train.seed), batch_sh)
            mask = jax.device_put(np.ones(tokens.shape, np.int32), batch_sh)
            params, opt_state, metrics = step_fn(params, opt_state, tokens, mask)
            loss, grad_norm, lr = (float(metrics[k]) for k in ("loss", "grad_norm", "lr"))
            for key, value in (("step", step), ("loss", loss), ("grad_norm", grad_norm), ("lr", lr)):
                history[key].append(value)
            if live is not None:
                live.write("train", step, {"loss": loss, "grad_norm": grad_norm, "lr": lr})
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                last = checkpointer.latest_step() if checkpointer is not None else None
                where = f"; the last good checkpoint is step {last} in {checkpointer.directory}" if last is not None \
                    else "; no checkpoint was written"
                raise TrainingDiverged(f"training diverged at step {step}: loss {loss}, gradient norm {grad_norm}"
                                       f"{where}", history, last)
            done = step + 1
            bar.update(1)
            if done % 10 == 0:
                bar.set_postfix(loss=f"{loss:.3f}")
            if done % run.eval_every == 0 or done == train.total_steps:
                run_eval(done)
            if (run.checkpoint_every and done % run.checkpoint_every == 0) or done == train.total_steps:
                save(done)
    finally:
        bar.close()
        if checkpointer is not None:
            checkpointer.close()
        if live is not None:
            live.close()
    return LMTrainingResult(model=current_model(), history=history, evals=evals, resumed_from=resumed_from,
                            checkpoint_dir=None if checkpointer is None else checkpointer.directory)

