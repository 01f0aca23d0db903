"""Training: every loop, step, loss and the state they need.

==========================  ==========================================================================
module                      what it holds
==========================  ==========================================================================
``losses``                  ``weighted_cross_entropy`` (data sets of (x, y) pairs), ``count_cross_entropy``
                            (the same from a count matrix), ``next_token_loss``
``supervised``              ``TrainConfig``, ``make_train_step`` (the pure step), ``train``: jit-compiled
                            ``lax.scan`` loops for the linear model and the FFN on a ``Dataset`` or on the
                            count matrix of single-token data (``SignatureCounts``)
``divergence``              ``TrainingDiverged``, raised by every loop on a non-finite loss
``lm_optimizer``            ``LMTrainConfig``, AdamW (or SGD) with warmup + cosine and clipping
``sharded_step``            ``make_sharded_train_step`` and ``init_sharded_model`` for any NNX language model
``sharding``                device meshes, partition rules, ``NamedSharding`` of parameters / batches
``token_windows``           ``TokenWindows`` (batches as a function of (seed, step)), ``split_stream``
``checkpoints``             ``TrainCheckpointer`` (orbax, exact resume)
``metrics_log``             ``MetricsLog``: the live ``metrics.jsonl`` and TensorBoard stream of a run
``lm_loop``                 ``LMRunConfig``, ``train_language_model`` (takes a model factory)
``host_allocator``          ``tune_host_allocator``: large XLA:CPU buffers reused, not re-mapped, every step
``host_devices``            ``use_host_cores_as_devices``: one XLA:CPU device per core (data-parallel steps)
==========================  ==========================================================================

Names are imported on first use, so ``import probsig_jax.training`` alone costs nothing.
"""

from probsig_jax._lazy import lazy_exports

_EXPORTS = {
    "weighted_cross_entropy": "probsig_jax.training.losses",
    "next_token_loss": "probsig_jax.training.losses",
    "TrainConfig": "probsig_jax.training.supervised",
    "TrainResult": "probsig_jax.training.supervised",
    "TrainStep": "probsig_jax.training.supervised",
    "make_train_step": "probsig_jax.training.supervised",
    "train": "probsig_jax.training.supervised",
    "TrainingDiverged": "probsig_jax.training.divergence",
    "LMTrainConfig": "probsig_jax.training.lm_optimizer",
    "make_lm_optimizer": "probsig_jax.training.lm_optimizer",
    "make_lm_schedule": "probsig_jax.training.lm_optimizer",
    "make_sharded_train_step": "probsig_jax.training.sharded_step",
    "init_sharded_model": "probsig_jax.training.sharded_step",
    "make_mesh": "probsig_jax.training.sharding",
    "TokenWindows": "probsig_jax.training.token_windows",
    "split_stream": "probsig_jax.training.token_windows",
    "TrainCheckpointer": "probsig_jax.training.checkpoints",
    "LMRunConfig": "probsig_jax.training.lm_loop",
    "LMTrainingResult": "probsig_jax.training.lm_loop",
    "train_language_model": "probsig_jax.training.lm_loop",
    "tune_host_allocator": "probsig_jax.training.host_allocator",
    "use_host_cores_as_devices": "probsig_jax.training.host_devices",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
