"""E4: a Qwen2.5-architecture model trained from scratch on a corpus; embedding geometry vs signatures.

Pipeline (:func:`run_llm`): corpus -> Qwen2.5 token shards (cached) -> vocabulary compaction -> held-out
split -> windowed (context, next-token) counts of the training stream -> signature similarities and the
linear theory's prediction for the token sets (top-N frequent tokens, digits) -> training with the
alignment metrics of the input embeddings and unembeddings measured at every evaluation -> figures,
``metrics.json``, the final model as a HF checkpoint (``model/``, with ``vocab_map.json``).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from probsig_jax.analysis import plots
from probsig_jax.analysis.alignment import AlignmentConfig, alignment_series
from probsig_jax.analysis.geometry import pca_projection
from probsig_jax.config_base import Config
from probsig_jax.corpus import CorpusConfig, VocabularyMap, load_tokenizer, tokenize_corpus
from probsig_jax.corpus.edits import CorpusEdit, apply_corpus_edit
from probsig_jax.experiments import Experiment
from probsig_jax.experiments.corpus_alignment import (
    CORPUS_ALIGNMENT, TRAINING_COMPARISONS, CorpusAlignment, CorpusAnalysisConfig, analyse_corpus,
    check_corpus_alignment, corpus_summary_lines, held_out_table, model_weights, save_alignment_arrays, write_alignment_figures,
)
from probsig_jax.models.qwen2 import PRESETS as MODEL_PRESETS
from probsig_jax.models.qwen2 import Qwen2Config, Qwen2LM, save_pretrained
from probsig_jax.models.qwen2.config import resolve_attention_impl, resolve_dense_impl
from probsig_jax.runs import to_jsonable
from probsig_jax.training.lm_loop import LMRunConfig, LMTrainingResult, train_language_model
from probsig_jax.training.metrics_log import JSONL_NAME
from probsig_jax.training.lm_optimizer import LMTrainConfig
from probsig_jax.training.token_windows import TokenWindows, split_stream
from probsig_jax.validation import require, require_float, require_int, require_seed

DIGIT_SNAPSHOT_KEY = "digits_input_embeddings"


@dataclass(frozen=True)
class LLMExperimentConfig(Config):
    """E4: train a Qwen2.5-architecture model on a corpus and track embedding-signature alignment.

    ``seed`` seeds the initialisation and the batch order (``resolved()`` copies it into ``train.seed``).
    """

    tokenizer: str = "qwen2.5"
    """Tokenizer: qwen2.5 (offline BPE) or a path to a HF tokenizer.json (or a directory holding one)."""
    cache_dir: str = ""
    """Token-shard cache directory ('' = $PROBSIG_CACHE/shards or ~/.cache/probsig-jax/shards)."""
    num_workers: int = 2
    """Tokenizer threads."""
    compact_vocab: bool = True
    """Map the token ids that occur in the corpus to a dense range (the model gets only those rows)."""
    eval_fraction: float = 0.05
    """Fraction of the token stream held out for the evaluation loss (the end of the stream)."""
    held_out_signatures: float = 0.0
    """Fraction of the stream (its start) set aside for held-out signatures: the model trains on the rest, and
    the alignment is measured against signatures and theory from both its own training stream and that part,
    which it never sees (0 = off)."""
    model_preset: Literal["tiny", "small"] = "tiny"
    """Qwen2 architecture preset (untied embeddings); its vocab_size is replaced by the corpus's."""
    hidden_size: int = 0
    """Override of the preset's hidden size (0 = the preset's); must be divisible by the head count."""
    num_layers: int = 0
    """Override of the preset's number of decoder layers (0 = the preset's)."""
    initializer_range: float = 0.02
    """Std of the normal initialisation of every weight matrix (smaller = closer to the theory's regime)."""
    attention_impl: Literal["auto", "blocked", "reference", "xla"] = "auto"
    """The model's attention implementation (auto: blocked on a CPU): the same function, other kernels, so other
    float rounding; reference with dense_impl einsum reproduces runs made before the CPU kernels."""
    dense_impl: Literal["auto", "explicit_transpose", "einsum"] = "auto"
    """How the MLP and output products are differentiated (auto: explicit_transpose on a CPU); see attention_impl."""
    seed: int = 0
    """Seed of the initialisation and of the batch order."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    edit: CorpusEdit = field(default_factory=CorpusEdit)
    """A seeded edit of the token stream (tokenizer ids), applied before counting and training; kind none by
    default. The run records its description and the affected tokens."""
    analysis: CorpusAnalysisConfig = field(default_factory=CorpusAnalysisConfig)
    alignment: AlignmentConfig = CORPUS_ALIGNMENT
    train: LMTrainConfig = field(default_factory=lambda: LMTrainConfig(
        learning_rate=3e-3, warmup_steps=50, total_steps=600, min_lr_ratio=0.1, weight_decay=0.0))
    run: LMRunConfig = field(default_factory=lambda: LMRunConfig(
        batch_size=16, seq_len=64, eval_every=50, eval_batches=4, checkpoint_every=100))

    derived_fields = ("train.seed",)
    option_prefixes = {"corpus": "corpus_", "edit": "edit_"}

    def resolved(self) -> "LLMExperimentConfig":
        return self.replace(train=self.train.replace(seed=self.seed))

    def _check(self) -> None:
        require(isinstance(self.tokenizer, str) and self.tokenizer != "", "tokenizer", "must name a tokenizer")
        require_int(self.num_workers, "num_workers", minimum=1, maximum=256)
        require_float(self.eval_fraction, "eval_fraction", minimum=0.0, maximum=0.5, strict_minimum=True)
        require_float(self.held_out_signatures, "held_out_signatures", minimum=0.0, maximum=0.9)
        require(self.model_preset in ("tiny", "small"), "model_preset", f"must be tiny or small, got {self.model_preset!r}")
        require(self.attention_impl in ("auto", "blocked", "reference", "xla"), "attention_impl",
                f"must be auto, blocked, reference or xla, got {self.attention_impl!r}")
        require(self.dense_impl in ("auto", "explicit_transpose", "einsum"), "dense_impl",
                f"must be auto, explicit_transpose or einsum, got {self.dense_impl!r}")
        require_int(self.hidden_size, "hidden_size", minimum=0, maximum=65536)
        require_int(self.num_layers, "num_layers", minimum=0, maximum=256)
        require_float(self.initializer_range, "initializer_range", minimum=0.0, maximum=10.0, strict_minimum=True)
        require_seed(self.seed)
        check_corpus_alignment(self.alignment)

    def model_config(self, vocab_size: int) -> Qwen2Config:
        """The preset with the corpus's vocabulary and the overrides."""
        base = MODEL_PRESETS[self.model_preset]
        changes: dict[str, Any] = {"vocab_size": vocab_size, "initializer_range": self.initializer_range,
                                   "max_position_embeddings": max(base.max_position_embeddings, self.run.seq_len),
                                   # resolved here, so the run record (and a resume's fingerprint) names the kernels
                                   "attention_impl": resolve_attention_impl(self.attention_impl, base.dtype),
                                   "dense_impl": resolve_dense_impl(self.dense_impl)}
        if self.hidden_size:
            require(self.hidden_size % base.num_attention_heads == 0, "hidden_size",
                    f"must be divisible by the preset's {base.num_attention_heads} heads, got {self.hidden_size}")
            changes.update(hidden_size=self.hidden_size, head_dim=self.hidden_size // base.num_attention_heads)
        if self.num_layers:
            changes["num_hidden_layers"] = self.num_layers
        return base.replace(**changes)


@dataclass
class LLMResult:
    config: LLMExperimentConfig
    metrics: dict[str, Any]
    training: LMTrainingResult
    alignment: CorpusAlignment
    final_weights: dict[str, np.ndarray]        # "embedding" W_E, "unembedding" W_U, (V, H)
    model_config: Qwen2Config
    vocab_map: VocabularyMap
    metrics_jsonl: Path | None = None           # the live stream of the training metrics, copied into the run

    def digit_snapshots(self) -> list[tuple[int, np.ndarray]]:
        """``(step, (10, H) digit input embeddings)`` at every evaluation (kept in the checkpoints' records,
        so a resumed run has them all)."""
        return [(e["step"], np.asarray(e[DIGIT_SNAPSHOT_KEY])) for e in self.training.evals if DIGIT_SNAPSHOT_KEY in e]


def run_llm(config: LLMExperimentConfig, *, checkpoint_dir: str | Path | None = None, quiet: bool = False,
            metrics_jsonl: str | Path | None = None, tensorboard_dir: str | Path | None = None) -> LLMResult:
    """Run E4 (see the module docstring). ``checkpoint_dir`` makes the training resumable; ``metrics_jsonl`` and
    ``tensorboard_dir`` stream the training metrics while it runs
    (:class:`~probsig_jax.training.metrics_log.MetricsLog`)."""
    config = config.resolved().validate()
    tic = time.perf_counter()
    tokenizer, shards, stream = load_corpus_stream(config, quiet=quiet)
    edited = apply_corpus_edit(stream, config.edit)
    stream = edited.tokens
    if config.compact_vocab:
        vocab_map = VocabularyMap.from_tokens([stream], tokenizer.vocab_size, always_keep=[tokenizer.eos_id])
    else:
        vocab_map = VocabularyMap.identity(tokenizer.vocab_size)
    ids = vocab_map.to_compact(stream)
    cut = int(round(config.held_out_signatures * ids.size))
    signature_ids, ids = ids[:cut], ids[cut:]
    train_ids, eval_ids = split_model_stream(config, ids)
    prepare_s = time.perf_counter() - tic

    tic = time.perf_counter()
    # The analysis is a property of the data: its SVD seed is fixed, so every training seed shares it.
    alignment = analyse_corpus(train_ids, vocab_map.size, tokenizer, vocab_map, config.analysis, config.alignment,
                               seed=0, quiet=quiet)
    held_out = None
    if cut:
        require(signature_ids.size >= 2, "held_out_signatures", f"leaves {signature_ids.size} tokens to count")
        held_out = analyse_corpus(signature_ids, vocab_map.size, tokenizer, vocab_map, config.analysis,
                                  config.alignment, seed=0, quiet=quiet, token_sets=alignment.token_sets)
    analysis_s = time.perf_counter() - tic
    tracker = alignment.tracker()
    digit_set = next((s for s in alignment.token_sets if s.name == "digits"), None)

    def evaluate(step: int, model) -> dict[str, Any]:
        weights = model_weights(model)
        record: dict[str, Any] = {"alignment": tracker(step, weights)}
        if digit_set is not None:
            record[DIGIT_SNAPSHOT_KEY] = weights["embedding"][digit_set.ids].astype(np.float64).tolist()
        return record

    model_config = config.model_config(vocab_map.size)
    tic = time.perf_counter()
    training = train_language_model(lambda rngs: Qwen2LM(model_config, rngs=rngs), config.train, config.run,
                                    TokenWindows(train_ids, config.run.seq_len),
                                    TokenWindows(eval_ids, config.run.seq_len),
                                    run_record={"model": model_config, "experiment": resume_record(config)},
                                    checkpoint_dir=checkpoint_dir, evaluate=evaluate, quiet=quiet,
                                    metrics_jsonl=metrics_jsonl, tensorboard_dir=tensorboard_dir)
    train_s = time.perf_counter() - tic

    final_weights = model_weights(training.model)
    evals = training.evals
    metrics = {
        "experiment": "llm",
        "corpus": corpus_record(config, shards, stream),
        "edit": edited.record(),
        "vocabulary": {"tokenizer": tokenizer.name, "tokenizer_vocab": tokenizer.vocab_size,
                       "model_vocab": vocab_map.size, "compacted": config.compact_vocab},
        "train_tokens": int(train_ids.size), "eval_tokens": int(eval_ids.size),
        "signature_pairs": int(alignment.counts.num_pairs), "window": config.analysis.window,
        "theory": {"rank": alignment.theory_rank, "time": alignment.theory_time,
                   "growth": config.analysis.theory_growth, "top_singular_values": alignment.top_singular_values},
        "model": {"preset": config.model_preset, "hidden_size": model_config.hidden_size,
                  "layers": model_config.num_hidden_layers, "vocab_size": model_config.vocab_size,
                  "attention_impl": model_config.attention_impl, "dense_impl": model_config.dense_impl},
        "initial_eval_loss": evals[0].get("eval_loss") if evals else None,
        "final_eval_loss": evals[-1].get("eval_loss") if evals else None,
        "final_train_loss": float(np.mean(training.history["loss"][-10:])),
        "steps": config.train.total_steps, "resumed_from": training.resumed_from,
        "evals": [{k: v for k, v in e.items() if k != DIGIT_SNAPSHOT_KEY} for e in evals],
        "token_sets": alignment.metrics(final_weights, "trained"),
        **({} if held_out is None else {"held_out_signatures": {
            "fraction": config.held_out_signatures, "signature_tokens": int(signature_ids.size),
            "token_sets": held_out_table(alignment, held_out, final_weights)}}),
        "timing_s": {"tokenize_and_map": prepare_s, "signatures_and_theory": analysis_s, "train": train_s},
    }
    return LLMResult(config, metrics, training, alignment, final_weights, model_config, vocab_map,
                     None if metrics_jsonl is None else Path(metrics_jsonl))


def load_corpus_stream(config: LLMExperimentConfig, *, quiet: bool = False):
    """``(tokenizer, shards, stream)``: the config's tokenizer, its (cached) token shards of the corpus and the
    whole stream as one 1-D array of tokenizer ids."""
    tokenizer = load_tokenizer(config.tokenizer)
    shards = tokenize_corpus(config.corpus, tokenizer, config.cache_dir, num_workers=config.num_workers, quiet=quiet)
    return tokenizer, shards, np.asarray(shards.tokens())


def split_model_stream(config: LLMExperimentConfig, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(train_ids, eval_ids)``: a stream of model ids split at ``1 - eval_fraction`` (window-aligned); a clear
    error when the corpus is too short for the windows."""
    require(ids.size >= 4 * config.run.seq_len, "corpus_source",
            f"{config.corpus.source} gives only {ids.size} tokens, fewer than the 4 windows of seq_len "
            f"{config.run.seq_len} that training and evaluation need: use a larger corpus or a smaller --seq-len")
    return split_stream(ids, config.eval_fraction, config.run.seq_len)


def corpus_record(config: LLMExperimentConfig, shards, stream: np.ndarray) -> dict[str, Any]:
    """What a run writes about its corpus: source, token count, documents, bytes, malformed records, shards."""
    return {"source": config.corpus.source, "tokens": int(stream.size), "documents":
            shards.manifest.get("documents"), "bytes": shards.manifest.get("bytes"),
            "malformed": shards.malformed, "shard_dir": str(shards.directory)}


RESUME_IGNORED = ("cache_dir", "num_workers")
"""Fields that change no reported number (where shards are cached, how many tokenizer threads): a run may
resume with other values."""


def resume_record(config: LLMExperimentConfig) -> dict[str, Any]:
    """The settings a resumed E4 run must share with its checkpoints: every field that changes a reported
    number (corpus, analysis, alignment, model, optimiser, batches), i.e. the config minus ``RESUME_IGNORED``."""
    record = to_jsonable(config)
    return {k: v for k, v in record.items() if k not in RESUME_IGNORED}


SIDE_CURVES = {"W_E vs phi_next": "embedding_vs_signature", "W_E vs phi_pre": "embedding_vs_output_signature",
               "W_U vs phi_pre": "unembedding_vs_signature", "W_U vs phi_next": "unembedding_vs_input_signature"}
"""The side-specificity figure: each weight against both sides' signatures over training."""


def _metric_curves(evals: list[dict[str, Any]], set_name: str, key: str, comparisons: dict[str, str]
                   ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``(curves, bands)`` of metric ``key`` over the evaluations, per ``label -> comparison name``; bands are
    the bootstrap intervals where the records have them."""
    curves, bands = {}, {}
    for label, comparison in comparisons.items():
        series = alignment_series(evals, set_name, comparison)
        columns = [series.get(key, []), series.get(f"{key}_ci_low", []), series.get(f"{key}_ci_high", [])]
        rows = [(s, *vals) for s, *vals in zip(series["step"], *[c or [np.nan] * len(series["step"]) for c in columns])
                if vals[0] == vals[0]]
        if rows:
            steps, values, low, high = (np.asarray(c, float) for c in zip(*rows))
            curves[label] = (steps, values)
            if np.all(np.isfinite(low)) and np.all(np.isfinite(high)):
                bands[label] = (low, high)
    return curves, bands


def write_llm_outputs(result: LLMResult, out: Path) -> list[Path]:
    """Figures, ``arrays.npz``, the final model (``model/``) and ``vocab_map.json``; returns the figures."""
    figures: list[Path] = []
    history, evals = result.training.history, result.training.evals
    steps = np.asarray(history["step"], float) + 1
    curves = {"train loss (per step)": (steps, np.asarray(history["loss"]))}
    eval_points = [(e["step"], e["eval_loss"]) for e in evals if "eval_loss" in e]
    if eval_points:
        curves["held-out loss"] = tuple(np.asarray(v, float) for v in zip(*eval_points))
    figures.append(plots.save(plots.plot_curves(curves, xlabel="step", ylabel="next-token loss (nats)"),
                              out / "loss.png"))
    for s in result.alignment.token_sets:
        every = {c.name.replace("_", " "): c.name for c in TRAINING_COMPARISONS}
        for key, label in (("pearson", "Pearson r"), ("strong_pair_precision", "strong-pair precision")):
            c, bands = _metric_curves(evals, s.name, key, every)
            if c:
                figures.append(plots.save(plots.plot_curves(c, xlabel="step", ylabel=f"{label}, {s.name} tokens",
                                                            logy=False, marker="o", bands=bands),
                                          out / f"alignment_{s.name}_{key}.png"))
        c, bands = _metric_curves(evals, s.name, "pearson", SIDE_CURVES)
        if c:
            figures.append(plots.save(plots.plot_curves(
                c, xlabel="step", ylabel=f"Pearson r, {s.name} tokens", logy=False, marker="o", bands=bands,
                styles={k: {"ls": "--"} for k in ("W_E vs phi_pre", "W_U vs phi_next")},
                title="side specificity (dashed: the other side; bands: bootstrap)"),
                out / f"side_specificity_{s.name}.png"))
    figures += write_alignment_figures(out, result.alignment, result.final_weights, weights_label="trained")
    snapshots = result.digit_snapshots()
    if snapshots:
        digit_set = next(s for s in result.alignment.token_sets if s.name == "digits")
        snaps = np.stack([v for _, v in snapshots])
        proj = np.stack([pca_projection(v, 2, basis_from=snaps[-1])[0] for v in snaps])
        figures.append(plots.save(plots.plot_projection_trajectory(
            proj, np.asarray([s for s, _ in snapshots], float), list(digit_set.labels), time_label="step",
            title="digit input embeddings (PCA of the final embeddings)"), out / "digits_pca.png"))
    save_alignment_arrays(out / "arrays.npz", result.alignment, result.final_weights,
                          train_loss=np.asarray(history["loss"]))
    if result.metrics_jsonl is not None and result.metrics_jsonl.is_file():
        shutil.copyfile(result.metrics_jsonl, out / JSONL_NAME)
    save_pretrained(result.training.model, result.model_config, out / "model")
    result.vocab_map.save(out / "model" / "vocab_map.json")
    return figures


def notes(metrics: dict[str, Any]) -> list[str]:
    return ["The trained model: `model/` (HF safetensors + `vocab_map.json`; "
            "`python -m probsig_jax.simulate pretrained --checkpoint <this run>/model` reads it)."]


EXPERIMENT = Experiment(
    name="llm", title="E4: Qwen2.5-architecture model trained on a corpus, embeddings vs probability signatures",
    config_class=LLMExperimentConfig,
    run=lambda config, ctx: run_llm(config, checkpoint_dir=ctx.work_dir, quiet=ctx.quiet,
                                    metrics_jsonl=None if ctx.work_dir is None else ctx.work_dir / JSONL_NAME,
                                    tensorboard_dir=ctx.tensorboard_dir),
    write_outputs=write_llm_outputs, summary=corpus_summary_lines, notes=notes, streams_metrics=True)
