"""probsig-jax: probability signatures and the embedding geometry of language models.

The probability-signature theory (Yao & Xu, arXiv 2509.20124): under gradient flow from small initialisation
each token's embedding is driven by simple conditional distributions of the data (its signatures), so
embedding similarity can be predicted from the data before any training.

Packages (each name below is importable from ``probsig_jax`` directly, loaded on first use)::

    data          Dataset, the composite addition tasks (CompositeAdditionConfig, presets), typed DataEdit
    signatures    the signature matrix M and the signatures Q, R, K, J; corpus-scale sparse counts
    theory        the sympy derivation, its lambdified JAX functions, the linear closed form and flows,
                  the corpus-scale truncated prediction
    models        LinearEmbeddingModel, FeedForwardModel, Qwen2LM (+ HF safetensors checkpoints)
    training      the jit-compiled loops: train (data sets), train_language_model (sharded LM training)
    analysis      alignment metrics, the alignment pipeline (AlignmentConfig, AlignmentTracker), plots
    corpus        corpora, tokenizers, token shards, vocabulary compaction, token sets
    experiments   E1-E5, one module each, their registry and run_experiment
    simulate      the command line (python -m probsig_jax.simulate)

Example::

    import probsig_jax as ps
    task = ps.make_composite_addition(ps.CompositeAdditionConfig())
    M = ps.signature_matrix(task.train)
    config = ps.get_experiment("linear").config_class(seed=1, dim=64)      # LinearExperimentConfig
    out = ps.run_experiment("linear", config, out="runs/e1-seed1")     # config.json, metrics.json, figures
"""

from probsig_jax._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    # data and signatures
    "Dataset": "probsig_jax.data",
    "CompositeAdditionConfig": "probsig_jax.data",
    "make_composite_addition": "probsig_jax.data",
    "DataEdit": "probsig_jax.data",
    "signature_matrix": "probsig_jax.signatures",
    "similarity_by_name": "probsig_jax.signatures",
    # theory
    "derive_linear_flow": "probsig_jax.theory.derivation",
    "closed_form": "probsig_jax.theory.linear",
    "integrate_flow": "probsig_jax.theory.linear",
    "escape_time": "probsig_jax.theory.linear",
    "predicted_embedding_gram": "probsig_jax.theory.linear",
    # models
    "LinearEmbeddingModel": "probsig_jax.models.linear",
    "FeedForwardModel": "probsig_jax.models.ffn",
    "Qwen2Config": "probsig_jax.models.qwen2",
    "Qwen2LM": "probsig_jax.models.qwen2",
    "load_pretrained": "probsig_jax.models.qwen2",
    # training
    "TrainConfig": "probsig_jax.training.supervised",
    "train": "probsig_jax.training.supervised",
    "LMTrainConfig": "probsig_jax.training.lm_optimizer",
    "LMRunConfig": "probsig_jax.training.lm_loop",
    "train_language_model": "probsig_jax.training.lm_loop",
    "TrainingDiverged": "probsig_jax.training.divergence",
    # analysis
    "AlignmentConfig": "probsig_jax.analysis.alignment",
    "AlignmentTracker": "probsig_jax.analysis.alignment",
    "alignment_metrics": "probsig_jax.analysis.metrics",
    "plots": "probsig_jax.analysis.plots",
    # corpora
    "CorpusConfig": "probsig_jax.corpus",
    "tokenize_corpus": "probsig_jax.corpus",
    # experiments
    "run_experiment": "probsig_jax.experiments.runner",
    "load_config": "probsig_jax.experiments.runner",
    "get_experiment": "probsig_jax.experiments",
    "ConfigError": "probsig_jax.validation",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
