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

from probsig_jax import plots
from probsig_jax.analysis import pca_projection
from probsig_jax.corpus import CorpusConfig, tokenize_corpus
from probsig_jax.experiments.corpus_alignment import (
    TokenSet, alignment_table, check_window, default_cache_dir, select_token_sets, similarity_targets,
    strong_pair_finding, theory_time, theory_vs_signature_table, weight_similarities,
)
from probsig_jax.models.qwen2 import load_pretrained
from probsig_jax.signatures.corpus import count_context_pairs
from probsig_jax.tokenizer import load_tokenizer
from probsig_jax.validation import ConfigError, require, require_float, require_int
from probsig_jax.vocab import VocabularyMap


@dataclass(frozen=True)
class PretrainedExperimentConfig:
    """E5: alignment of a pretrained checkpoint's embeddings with the corpus signatures."""

    checkpoint: str = ""
    """Local HF checkpoint directory (config.json + model.safetensors or a sharded index)."""
    tokenizer: str = ""
    """Tokenizer ('' = the checkpoint's tokenizer.json if present, else qwen2.5)."""
    cache_dir: str = ""
    """Token-shard cache directory ('' = $PROBSIG_CACHE/shards or ~/.cache/probsig-jax/shards)."""
    num_workers: int = 2
    """Tokenizer threads."""
    window: int = 1
    """Signature window w (1 = bigram, the paper's phi_next / phi_pre)."""
    top_tokens: int = 100
    """Size of the top-frequency token set (the end-of-text token excluded)."""
    digits: bool = True
    """Also analyse the digit tokens 0..9."""
    token_list: tuple[str, ...] = ()
    """Extra token set: strings that are single tokens (others are skipped)."""
    theory_rank: int = 64
    """Number of singular modes of M in the linear-theory prediction."""
    theory_growth: float = 2.0
    """The theory's prediction is taken when its leading mode has grown this many times (> 1)."""
    topk: int = 5
    """k of the top-k neighbour overlap."""
    strong_pair_percent: float = 5.0
    """q: strong (weak) pairs are the top (bottom) q percent by signature similarity."""
    seed: int = 0
    """Seed of the randomized parts (none by default; kept for the run record)."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)

    def validate(self) -> "PretrainedExperimentConfig":
        require(self.checkpoint != "", "checkpoint", "is required: a local HF checkpoint directory")
        require(Path(self.checkpoint).is_dir(), "checkpoint", f"must be a directory, got {self.checkpoint!r}")
        require_int(self.num_workers, "num_workers", minimum=1, maximum=256)
        check_window(self.window)
        require_int(self.top_tokens, "top_tokens", minimum=3, maximum=5000)
        require_int(self.theory_rank, "theory_rank", minimum=1, maximum=4096)
        require_float(self.theory_growth, "theory_growth", minimum=1.0, maximum=1e6, strict_minimum=True)
        require_int(self.topk, "topk", minimum=1)
        require_float(self.strong_pair_percent, "strong_pair_percent", minimum=0.0, maximum=50.0, strict_minimum=True)
        require_int(self.seed, "seed", minimum=0)
        self.corpus.validate()
        return self


@dataclass
class PretrainedResult:
    config: PretrainedExperimentConfig
    metrics: dict[str, Any]
    token_sets: list[TokenSet]
    targets: dict[str, dict[str, np.ndarray]]
    weights: dict[str, dict[str, np.ndarray]]
    digit_embeddings: np.ndarray | None


def _tokenizer_for(config: PretrainedExperimentConfig):
    if config.tokenizer:
        return load_tokenizer(config.tokenizer)
    own = Path(config.checkpoint) / "tokenizer.json"
    return load_tokenizer(str(own) if own.is_file() else "qwen2.5")


def run_pretrained(config: PretrainedExperimentConfig, *, quiet: bool = False) -> PretrainedResult:
    config = config.validate()
    tic = time.perf_counter()
    model_config, model = load_pretrained(config.checkpoint)
    W_E = np.asarray(model.input_embeddings(), dtype=np.float32)
    W_U = np.asarray(model.output_embeddings(), dtype=np.float32)
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
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    shards = tokenize_corpus(config.corpus, tokenizer, cache, num_workers=config.num_workers, quiet=quiet)
    stream = np.asarray(shards.tokens())
    known = vocab_map.contains(stream)
    dropped = int((~known).sum())
    if dropped == stream.size:
        raise ConfigError("corpus", "no corpus token is in the checkpoint's vocabulary (vocab_map.json)")
    ids = vocab_map.to_compact(stream[known])
    tokenize_s = time.perf_counter() - tic

    tic = time.perf_counter()
    pc = count_context_pairs(ids, model_config.vocab_size, config.window, quiet=quiet)
    modes, t_theory = theory_time(pc, config.theory_rank, config.theory_growth, seed=config.seed)
    token_sets = select_token_sets(pc, tokenizer, vocab_map, top_n=config.top_tokens, digits=config.digits,
                                   token_list=config.token_list, exclude_tokenizer_ids=[tokenizer.eos_id])
    targets = {s.name: similarity_targets(pc, modes, t_theory, s) for s in token_sets}
    weights = {s.name: weight_similarities(W_E, W_U, s) for s in token_sets}
    analysis_s = time.perf_counter() - tic

    k, q = config.topk, config.strong_pair_percent
    per_set = {}
    for s in token_sets:
        table = alignment_table(weights[s.name], targets[s.name], k=k, q=q)
        per_set[s.name] = {"num_tokens": len(s.model_ids), "tokens": list(s.labels), "pretrained": table,
                           "theory_vs_signature": theory_vs_signature_table(targets[s.name], k=k, q=q),
                           "strong_pairs": strong_pair_finding(table)}
    digit_set = next((s for s in token_sets if s.name == "digits"), None)
    metrics = {
        "experiment": "pretrained",
        "checkpoint": str(Path(config.checkpoint).absolute()),
        "model": {"vocab_size": model_config.vocab_size, "hidden_size": model_config.hidden_size,
                  "layers": model_config.num_hidden_layers, "tied_embeddings": model_config.tie_word_embeddings,
                  "vocab_map": map_path.is_file()},
        "corpus": {"source": config.corpus.source, "tokens": int(stream.size), "dropped_tokens": dropped,
                   "documents": shards.manifest.get("documents"), "malformed": shards.malformed},
        "tokenizer": tokenizer.name, "window": config.window, "signature_pairs": int(pc.num_pairs),
        "theory": {"rank": int(modes.S.shape[0]), "time": float(t_theory), "growth": config.theory_growth},
        "token_sets": per_set,
        "timing_s": {"load_checkpoint": load_s, "tokenize": tokenize_s, "signatures_and_theory": analysis_s},
    }
    if model_config.tie_word_embeddings:
        metrics["note"] = ("tied embeddings: W_U = W_E, so the unembedding rows are the input embeddings; "
                           "PAPER section 7 compares W_U with phi_pre on untied models")
    digits = W_E[digit_set.model_ids].astype(np.float64) if digit_set is not None else None
    return PretrainedResult(config, metrics, token_sets, targets, weights, digits)


def write_pretrained_report(result: PretrainedResult, out: Path) -> list[Path]:
    figures: list[Path] = []
    for s in result.token_sets:
        t, w = result.targets[s.name], result.weights[s.name]
        figures.append(plots.plot_similarity_heatmaps(
            out / f"heatmaps_{s.name}.png",
            {"input embedding W_E": w["embedding"], "signature phi_next (Q)": t["input_cosine"],
             "theory prediction": t["theory_embedding"]}, list(s.labels), title=f"{s.name} tokens"))
        figures.append(plots.plot_similarity_heatmaps(
            out / f"heatmaps_{s.name}_unembedding.png",
            {"unembedding W_U": w["unembedding"], "signature phi_pre (R)": t["output_cosine"],
             "theory prediction": t["theory_unembedding"]}, list(s.labels), title=f"{s.name} tokens: unembedding"))
        m = result.metrics["token_sets"][s.name]["pretrained"]["embedding_vs_signature"]
        figures.append(plots.plot_similarity_scatter(
            out / f"signature_vs_embedding_{s.name}.png", t["input_cosine"], w["embedding"],
            xlabel="signature similarity (cosine of phi_next)", ylabel="pretrained input-embedding similarity",
            title=f"{s.name} tokens", stats={"pearson": m["pearson"], "spearman": m["spearman"]}))
    if result.digit_embeddings is not None:
        digit_set = next(s for s in result.token_sets if s.name == "digits")
        proj, _ = pca_projection(result.digit_embeddings, 2)
        figures.append(plots.plot_projection_trajectory(out / "digits_pca.png", proj[None], np.zeros(1),
                                                        list(digit_set.labels), title="digit input embeddings (PCA)"))
    arrays = {}
    for s in result.token_sets:
        arrays[f"{s.name}_tokenizer_ids"] = s.tokenizer_ids
        for name, matrix in {**result.targets[s.name], **result.weights[s.name]}.items():
            arrays[f"{s.name}_{name}"] = matrix
    tmp = out / ".arrays.npz.tmp.npz"
    np.savez_compressed(tmp, **arrays)
    tmp.replace(out / "arrays.npz")
    return figures
