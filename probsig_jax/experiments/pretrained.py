"""E5: the embedding geometry of a local pretrained Qwen2/Qwen2.5 checkpoint against corpus signatures.

:func:`run_pretrained` loads a local Hugging Face checkpoint directory (``config.json`` + safetensors; no
download), tokenizes the corpus with the checkpoint's own ``tokenizer.json`` when the directory has one
(else the offline Qwen2.5 tokenizer), counts the windowed (context, next-token) pairs over the model's
vocabulary, and compares the model's input embeddings and unembeddings with the signatures and with the
linear theory's prediction, for the same token sets as E4. A checkpoint written by ``simulate llm``
(``<run>/model``) carries ``vocab_map.json``: its rows are compact ids, and the corpus is mapped the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from probsig_jax.analysis import plots
from probsig_jax.analysis.alignment import AlignmentConfig
from probsig_jax.analysis.geometry import pca_projection
from probsig_jax.config_base import Config
from probsig_jax.corpus import CorpusConfig, VocabularyMap, load_tokenizer, tokenize_corpus
from probsig_jax.experiments import Experiment
from probsig_jax.experiments.corpus_alignment import (
    CORPUS_ALIGNMENT, CorpusAlignment, CorpusAnalysisConfig, analyse_corpus, check_corpus_alignment,
    corpus_summary_lines, save_alignment_arrays, write_alignment_figures,
)
from probsig_jax.models.qwen2 import load_pretrained
from probsig_jax.validation import ConfigError, require, require_int, require_seed


@dataclass(frozen=True)
class PretrainedExperimentConfig(Config):
    """E5: alignment of a pretrained checkpoint's embeddings with the corpus signatures."""

    checkpoint: str = ""
    """Local HF checkpoint directory (config.json + model.safetensors or a sharded index)."""
    tokenizer: str = ""
    """Tokenizer ('' = the checkpoint's tokenizer.json if present, else qwen2.5)."""
    cache_dir: str = ""
    """Token-shard cache directory ('' = $PROBSIG_CACHE/shards or ~/.cache/probsig-jax/shards)."""
    num_workers: int = 2
    """Tokenizer threads."""
    seed: int = 0
    """Seed of the randomized parts (none by default; kept for the run record)."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    analysis: CorpusAnalysisConfig = field(default_factory=CorpusAnalysisConfig)
    alignment: AlignmentConfig = CORPUS_ALIGNMENT

    option_prefixes = {"corpus": "corpus_"}

    def _check(self) -> None:
        require(self.checkpoint != "", "checkpoint", "is required: a local HF checkpoint directory")
        require(Path(self.checkpoint).is_dir(), "checkpoint", f"must be a directory, got {self.checkpoint!r}")
        require_int(self.num_workers, "num_workers", minimum=1, maximum=256)
        require_seed(self.seed)
        check_corpus_alignment(self.alignment)


@dataclass
class PretrainedResult:
    config: PretrainedExperimentConfig
    metrics: dict[str, Any]
    alignment: CorpusAlignment
    weights: dict[str, np.ndarray]              # "embedding" W_E, "unembedding" W_U, (V, H)
    digit_embeddings: np.ndarray | None


def _tokenizer_for(config: PretrainedExperimentConfig):
    if config.tokenizer:
        return load_tokenizer(config.tokenizer)
    own = Path(config.checkpoint) / "tokenizer.json"
    return load_tokenizer(str(own) if own.is_file() else "qwen2.5")


def run_pretrained(config: PretrainedExperimentConfig, *, quiet: bool = False) -> PretrainedResult:
    config = config.resolved().validate()
    tic = time.perf_counter()
    model_config, model = load_pretrained(config.checkpoint)
    W_E = np.asarray(model.input_embeddings(), dtype=np.float32)
    W_U = np.asarray(model.output_embeddings(), dtype=np.float32)
    for name, W in (("input embedding", W_E), ("unembedding", W_U)):
        require(bool(np.all(np.isfinite(W))), "checkpoint",
                f"{config.checkpoint}: the {name} tensor holds {int(np.sum(~np.isfinite(W)))} NaN/inf values")
    del model
    load_s = time.perf_counter() - tic

    tokenizer = _tokenizer_for(config)
    map_path = Path(config.checkpoint) / "vocab_map.json"
    if map_path.is_file():
        vocab_map = VocabularyMap.load(map_path)
        require(vocab_map.size <= model_config.vocab_size, "checkpoint",
                f"vocab_map.json has {vocab_map.size} ids but the model only {model_config.vocab_size} rows")
    else:
        require(tokenizer.vocab_size <= model_config.vocab_size, "tokenizer",
                f"has {tokenizer.vocab_size} ids but the checkpoint's embedding only {model_config.vocab_size} rows")
        vocab_map = VocabularyMap.identity(max(tokenizer.vocab_size, 1))
    tic = time.perf_counter()
    shards = tokenize_corpus(config.corpus, tokenizer, config.cache_dir, num_workers=config.num_workers, quiet=quiet)
    stream = np.asarray(shards.tokens())
    known = vocab_map.contains(stream)
    dropped = int((~known).sum())
    if dropped == stream.size:
        raise ConfigError("corpus", "no corpus token is in the checkpoint's vocabulary (vocab_map.json)")
    ids = vocab_map.to_compact(stream[known])
    tokenize_s = time.perf_counter() - tic

    tic = time.perf_counter()
    alignment = analyse_corpus(ids, model_config.vocab_size, tokenizer, vocab_map, config.analysis,
                               config.alignment, seed=config.seed, quiet=quiet)
    weights = {"embedding": W_E, "unembedding": W_U}
    analysis_s = time.perf_counter() - tic
    digit_set = next((s for s in alignment.token_sets if s.name == "digits"), None)
    metrics = {
        "experiment": "pretrained",
        "checkpoint": str(Path(config.checkpoint).absolute()),
        "model": {"vocab_size": model_config.vocab_size, "hidden_size": model_config.hidden_size,
                  "layers": model_config.num_hidden_layers, "tied_embeddings": model_config.tie_word_embeddings,
                  "vocab_map": map_path.is_file()},
        "corpus": {"source": config.corpus.source, "tokens": int(stream.size), "dropped_tokens": dropped,
                   "documents": shards.manifest.get("documents"), "malformed": shards.malformed},
        "tokenizer": tokenizer.name, "window": config.analysis.window,
        "signature_pairs": int(alignment.counts.num_pairs),
        "theory": {"rank": alignment.theory_rank, "time": alignment.theory_time,
                   "growth": config.analysis.theory_growth, "top_singular_values": alignment.top_singular_values},
        "token_sets": alignment.metrics(weights, "pretrained"),
        "timing_s": {"load_checkpoint": load_s, "tokenize": tokenize_s, "signatures_and_theory": analysis_s},
    }
    if model_config.tie_word_embeddings:
        metrics["note"] = ("tied embeddings: W_U = W_E, so the unembedding rows are the input embeddings; "
                           "PAPER section 7 compares W_U with phi_pre on untied models")
    digits = W_E[digit_set.ids].astype(np.float64) if digit_set is not None else None
    return PretrainedResult(config, metrics, alignment, weights, digits)


def write_pretrained_outputs(result: PretrainedResult, out: Path) -> list[Path]:
    """Figures and ``arrays.npz``; returns the figures."""
    figures = write_alignment_figures(out, result.alignment, result.weights, weights_label="pretrained")
    if result.digit_embeddings is not None:
        digit_set = next(s for s in result.alignment.token_sets if s.name == "digits")
        proj, _ = pca_projection(result.digit_embeddings, 2)
        figures.append(plots.save(plots.plot_projection_trajectory(
            proj[None], np.zeros(1), list(digit_set.labels), title="digit input embeddings (PCA)"),
            out / "digits_pca.png"))
    save_alignment_arrays(out / "arrays.npz", result.alignment, result.weights)
    return figures


EXPERIMENT = Experiment(
    name="pretrained", title="E5: pretrained checkpoint, embeddings vs probability signatures",
    config_class=PretrainedExperimentConfig, run=lambda config, ctx: run_pretrained(config, quiet=ctx.quiet),
    write_outputs=write_pretrained_outputs, summary=corpus_summary_lines)
