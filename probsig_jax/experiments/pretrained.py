"""E5: the embedding geometry of a local pretrained causal LM checkpoint (or of a series of them over training)
against corpus signatures.

:func:`run_pretrained` reads the input embeddings and unembeddings of a local Hugging Face checkpoint directory
(``config.json`` + safetensors; no download) with :func:`~probsig_jax.models.hf_embeddings.read_embeddings`, so
every architecture of its table (GPT-2, GPT-NeoX/Pythia, Llama, Mistral, Qwen2/3, Gemma/Gemma2) works and the
tensor names can be given by hand. It tokenizes the corpus with the checkpoint's own ``tokenizer.json`` when the
directory has one (else the offline Qwen2.5 tokenizer), cuts the embedding rows beyond the tokenizer's ids
(padding), counts the windowed (context, next-token) pairs, and compares the embeddings with the signatures and
with the linear theory's prediction, for the same token sets as E4. A checkpoint written by ``simulate llm``
(``<run>/model``) carries ``vocab_map.json``: its rows are compact ids, and the corpus is mapped the same way.

A **series** (several ``checkpoint`` directories, or one whose subdirectories are step checkpoints ``step1000/``,
``checkpoint-2000/``, ...) shares one tokenizer and vocabulary (checked): the corpus is tokenized and counted
once, then each checkpoint is scored; ``metrics.json`` gains ``series`` (in step order), the figures the curves
over training steps, and the heatmaps are drawn at ``heatmap_steps``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from probsig_jax.analysis import plots
from probsig_jax.analysis.alignment import AlignmentConfig, TokenSet, weight_similarities
from probsig_jax.analysis.geometry import pca_projection
from probsig_jax.config_base import Config, from_jsonable
from probsig_jax.corpus import CorpusConfig, VocabularyMap, load_tokenizer, tokenize_corpus
from probsig_jax.experiments import Experiment
from probsig_jax.experiments.corpus_alignment import (
    CORPUS_ALIGNMENT, TRAINING_COMPARISONS, CorpusAlignment, CorpusAnalysisConfig, analyse_corpus,
    check_corpus_alignment, corpus_summary_lines, save_alignment_arrays, write_alignment_figures,
)
from probsig_jax.models.hf_embeddings import EmbeddingLocation, locate_embeddings, read_embeddings
from probsig_jax.validation import ConfigError, require, require_int, require_seed


@dataclass(frozen=True)
class PretrainedExperimentConfig(Config):
    """E5: alignment of a pretrained checkpoint's embeddings (or a series over training) with the corpus signatures."""

    checkpoint: tuple[str, ...] = field(default=(), metadata={"many": True})
    """Local HF checkpoint directory (config.json + model.safetensors or a sharded index); several (``--checkpoint
    A B C`` or a comma list) or one whose subdirectories are step checkpoints (step1000/, checkpoint-2000/, ...)
    make a series."""
    embedding_tensor: str = ""
    """Name of the input-embedding tensor ('' = the architecture's, from config.json)."""
    unembedding_tensor: str = ""
    """Name of the output-embedding tensor ('' = the architecture's; the embedding's name = tied)."""
    heatmap_steps: tuple[int, ...] = ()
    """Series: the steps whose heatmaps are drawn (empty = the first and the last)."""
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

    def __post_init__(self) -> None:
        if isinstance(self.checkpoint, (str, Path)):          # one directory, given from Python
            object.__setattr__(self, "checkpoint", (str(self.checkpoint),) if str(self.checkpoint) else ())

    @classmethod
    def from_dict(cls, data: Any, field: str = "config") -> "PretrainedExperimentConfig":
        """:meth:`Config.from_dict`; also reads the run records from before series (``checkpoint`` a string)."""
        require(isinstance(data, dict), field, f"must be an object with the fields of {cls.__name__}, got {data!r}")
        if isinstance(data.get("checkpoint"), str):
            data = {**data, "checkpoint": [data["checkpoint"]] if data["checkpoint"] else []}
        hints, names = typing.get_type_hints(cls), sorted(f.name for f in dataclasses.fields(cls))
        unknown = sorted(set(data) - set(names))
        require(not unknown, field, f"unknown field(s) {', '.join(unknown)} for {cls.__name__} (known: "
                                    f"{', '.join(names)})")
        return cls(**{k: from_jsonable(v, hints[k], f"{field}.{k}") for k, v in data.items()})

    def _check(self) -> None:
        require(len(self.checkpoint) > 0, "checkpoint", "is required: a local HF checkpoint directory (several, "
                                                        "comma-separated, or one holding step directories: a series)")
        require(all(isinstance(c, str) and c for c in self.checkpoint), "checkpoint",
                f"must be directory paths, got {self.checkpoint!r}")
        series, _ = checkpoint_series(self.checkpoint)
        steps = [s for s, _ in series]
        for step in self.heatmap_steps:
            require(step in steps, "heatmap_steps", f"{step} is not a step of the series (steps: {steps[:10]})")
        require_int(self.num_workers, "num_workers", minimum=1, maximum=256)
        require_seed(self.seed)
        check_corpus_alignment(self.alignment)


STEP_NAME = re.compile(r"^(?:.*\D)?(\d+)$")
"""A step checkpoint's directory name: its trailing integer is the step (``step1000``, ``checkpoint-2000``)."""


def step_of(name: str) -> int | None:
    """The training step in a directory name (its trailing integer), None without one."""
    match = STEP_NAME.match(name)
    return int(match.group(1)) if match else None


def checkpoint_series(entries: tuple[str, ...]) -> tuple[list[tuple[int, Path]], Path | None]:
    """``([(step, directory)] in step order, root)``. One entry without ``config.json`` is the root of a series:
    its subdirectories whose names end in a step and that hold a ``config.json``. Otherwise the entries are the
    checkpoints, with the step in their names (else their position in the given order). ``root``: the series'
    top directory (None when the checkpoints were listed)."""
    dirs = [Path(e) for e in entries]
    for d in dirs:
        require(d.is_dir(), "checkpoint", f"must be a directory, got {str(d)!r}")
    root = None
    if len(dirs) == 1 and not (dirs[0] / "config.json").is_file():
        root = dirs[0]
        dirs = [p for p in root.iterdir()
                if p.is_dir() and step_of(p.name) is not None and (p / "config.json").is_file()]
        require(dirs, "checkpoint", f"{root} has no config.json and no step subdirectories holding one (step1000/, "
                                    "checkpoint-2000/, ...); give a HF checkpoint directory")
    steps = [step_of(d.name) for d in dirs]
    if None in steps:
        return list(enumerate(dirs)), root
    repeated = sorted({s for s in steps if steps.count(s) > 1})
    if repeated:
        raise ConfigError("checkpoint", f"several checkpoints have step {repeated[0]}: "
                                        f"{', '.join(str(d) for s, d in zip(steps, dirs) if s == repeated[0])}")
    return sorted(zip(steps, dirs)), root


@dataclass
class CheckpointPoint:
    """One scored checkpoint.

    Attributes:
      step: its training step (from the directory name; else its position in the given order).
      path: its directory.
      location: where its embeddings were read (names, files, stored shape ``(V_file, H)``, tied).
      rows_dropped: padded rows cut beyond the tokenizer's ids.
      metrics: per token set, :meth:`CorpusAlignment.metrics` of its weights.
      weights: ``"embedding"`` / ``"unembedding"``: (n_rows, H) float32, the rows ``PretrainedResult.row_ids``.
      read_s, score_s: seconds to read its embeddings and to score them.
    """

    step: int
    path: Path
    location: EmbeddingLocation
    rows_dropped: int
    metrics: dict[str, Any]
    weights: dict[str, np.ndarray]
    read_s: float
    score_s: float


@dataclass
class PretrainedResult:
    """What E5 measured.

    Attributes:
      config: the resolved config.
      metrics: the ``metrics.json`` of the run (``series`` for several checkpoints).
      alignment: the corpus analysis (counts, token sets with model ids, targets), computed once.
      points: one :class:`CheckpointPoint` per checkpoint, in step order.
      row_ids: (n_rows,) sorted model ids of every token-set row: the rows kept of each checkpoint's weights.
      heatmap_steps: the steps whose heatmaps are drawn (a series).
    """

    config: PretrainedExperimentConfig
    metrics: dict[str, Any]
    alignment: CorpusAlignment
    points: list[CheckpointPoint]
    row_ids: np.ndarray
    heatmap_steps: tuple[int, ...]

    @property
    def weights(self) -> dict[str, np.ndarray]:
        """The last checkpoint's ``{"embedding": W_E, "unembedding": W_U}``, rows ``row_ids`` (n_rows, H)."""
        return self.points[-1].weights


def _shared_vocabulary(config: PretrainedExperimentConfig, dirs: list[Path], root: Path | None):
    """``(tokenizer, vocab_map or None)`` shared by every checkpoint (ConfigError naming the first that differs)."""
    tokenizer_spec = config.tokenizer
    if not tokenizer_spec:
        own = [next((str(d / "tokenizer.json") for d in (c, root)
                     if d is not None and (d / "tokenizer.json").is_file()), "qwen2.5") for c in dirs]
        digests = [hashlib.sha256(Path(f).read_bytes()).hexdigest() if f != "qwen2.5" else f for f in own]
        for d, f, digest in zip(dirs, own, digests):
            require(digest == digests[0], "checkpoint", f"{f} (of {d}) differs from {own[0]} (of {dirs[0]}): a "
                                                        "series needs one tokenizer (or pass tokenizer for all)")
        tokenizer_spec = own[0]
    maps = [d / "vocab_map.json" for d in dirs]
    if not any(m.is_file() for m in maps):
        return load_tokenizer(tokenizer_spec), None
    missing, present = [m for m in maps if not m.is_file()], [m for m in maps if m.is_file()]
    if missing:
        raise ConfigError("checkpoint", f"{missing[0]} is missing but {present[0]} exists: a series needs one "
                                        "vocabulary map")
    vocab_map = VocabularyMap.load(maps[0])
    for m in maps[1:]:
        other = VocabularyMap.load(m)
        require(other.original_vocab_size == vocab_map.original_vocab_size and np.array_equal(
            other.original_ids, vocab_map.original_ids), "checkpoint", f"{m} differs from {maps[0]}: a series "
                                                                       "needs one vocabulary map")
    return load_tokenizer(tokenizer_spec), vocab_map


def _restricted(alignment: CorpusAlignment, row_ids: np.ndarray) -> CorpusAlignment:
    """``alignment`` with its token sets' ids renumbered into ``row_ids`` (so weights of those rows alone serve)."""
    sets = [TokenSet(s.name, np.searchsorted(row_ids, s.ids), s.labels, s.tokenizer_ids) for s in alignment.token_sets]
    return dataclasses.replace(alignment, token_sets=sets)


def run_pretrained(config: PretrainedExperimentConfig, *, quiet: bool = False) -> PretrainedResult:
    config = config.resolved().validate()
    series, root = checkpoint_series(config.checkpoint)
    tokenizer, vocab_map = _shared_vocabulary(config, [d for _, d in series], root)
    has_map = vocab_map is not None
    num_ids = vocab_map.size if has_map else tokenizer.vocab_size
    names = {"embedding_tensor": config.embedding_tensor or None,
             "unembedding_tensor": config.unembedding_tensor or None}
    locations = [locate_embeddings(d, **names) for _, d in series]          # every header checked before the corpus
    for loc in locations:
        loc.check_rows(num_ids)
        require(loc.shape[0] == locations[0].shape[0], "checkpoint",
                f"{loc.files[0]}: {loc.shape[0]} embedding rows, {locations[0].files[0]} {locations[0].shape[0]}: a "
                "series needs one vocabulary size")

    tic = time.perf_counter()
    shards = tokenize_corpus(config.corpus, tokenizer, config.cache_dir, num_workers=config.num_workers, quiet=quiet)
    stream = np.asarray(shards.tokens())
    if not has_map:
        vocab_map = VocabularyMap.identity(max(tokenizer.vocab_size, 1))
    known = vocab_map.contains(stream)
    dropped = int((~known).sum())
    if dropped == stream.size:
        raise ConfigError("corpus", "no corpus token is in the checkpoint's vocabulary (vocab_map.json)")
    ids = vocab_map.to_compact(stream[known])
    tokenize_s = time.perf_counter() - tic

    tic = time.perf_counter()
    alignment = analyse_corpus(ids, num_ids, tokenizer, vocab_map, config.analysis, config.alignment,
                               seed=config.seed, quiet=quiet)
    analysis_s = time.perf_counter() - tic
    row_ids = np.unique(np.concatenate([np.asarray(s.ids, dtype=np.int64) for s in alignment.token_sets]))
    scored = _restricted(alignment, row_ids)
    points = []
    for (step, directory), loc in zip(series, locations):
        tic = time.perf_counter()
        e = read_embeddings(loc, vocab_size=num_ids)
        for name, W in (("input embedding", e.embedding), ("unembedding", e.unembedding)):
            bad = int(np.sum(~np.isfinite(W)))
            require(bad == 0, "checkpoint", f"{directory}: the {name} tensor holds {bad} NaN/inf values")
        weights = {"embedding": e.embedding[row_ids], "unembedding": e.unembedding[row_ids]}
        del e
        read_s, tic = time.perf_counter() - tic, time.perf_counter()
        table = scored.metrics(weights, "pretrained")
        points.append(CheckpointPoint(step, directory, loc, loc.shape[0] - num_ids, table, weights, read_s,
                                      time.perf_counter() - tic))

    last = points[-1]
    metrics = {
        "experiment": "pretrained",
        "checkpoint": str(last.path.absolute()),
        "model": _model_record(last, has_map),
        "corpus": {"source": config.corpus.source, "tokens": int(stream.size), "dropped_tokens": dropped,
                   "documents": shards.manifest.get("documents"), "malformed": shards.malformed},
        "tokenizer": tokenizer.name, "window": config.analysis.window,
        "signature_pairs": int(alignment.counts.num_pairs),
        "theory": {"rank": alignment.theory_rank, "time": alignment.theory_time,
                   "growth": config.analysis.theory_growth, "top_singular_values": alignment.top_singular_values},
        "token_sets": last.metrics,
        "timing_s": {"load_checkpoint": sum(p.read_s for p in points), "tokenize": tokenize_s,
                     "signatures_and_theory": analysis_s, "alignment_metrics": sum(p.score_s for p in points)},
    }
    if any(p.location.tied for p in points):
        metrics["note"] = ("tied embeddings: W_U = W_E, so the unembedding rows are the input embeddings; "
                           "PAPER section 7 compares W_U with phi_pre on untied models")
    heatmap_steps = (config.heatmap_steps or tuple(dict.fromkeys((points[0].step, last.step))))
    if len(points) > 1:
        metrics["series"] = [{"step": p.step, "checkpoint": str(p.path.absolute()), "model": _model_record(p, None),
                              "token_sets": p.metrics, "timing_s": {"read": p.read_s, "alignment_metrics": p.score_s}}
                             for p in points]
        metrics["series_info"] = {"checkpoints": len(points), "steps": [p.step for p in points],
                                  "steps_from": "directory names" if all(step_of(p.path.name) is not None
                                                                         for p in points) else "order given",
                                  "heatmap_steps": list(heatmap_steps),
                                  "token_sets_are": f"the last checkpoint's (step {last.step})"}
    return PretrainedResult(config, metrics, alignment, points, row_ids, heatmap_steps)


def _model_record(p: CheckpointPoint, vocab_map: bool | None) -> dict[str, Any]:
    loc = p.location
    record = {"vocab_size": loc.shape[0], "hidden_size": loc.shape[1], "layers": loc.num_layers,
              "tied_embeddings": loc.tied, "architecture": loc.architecture, "embedding_tensor": loc.tensor_names[0],
              "unembedding_tensor": loc.tensor_names[1], "padding_rows_dropped": p.rows_dropped}
    return record if vocab_map is None else {**record, "vocab_map": vocab_map}


def _checkpoint_figures(out: Path, alignment: CorpusAlignment, weights: dict[str, np.ndarray],
                        label: str = "pretrained") -> list[Path]:
    """Heatmaps, scatters and the digits' PCA of one checkpoint (``alignment`` renumbered to the weights' rows)."""
    figures = write_alignment_figures(out, alignment, weights, weights_label=label)
    digit_set = next((s for s in alignment.token_sets if s.name == "digits"), None)
    if digit_set is not None:
        proj, _ = pca_projection(weights["embedding"][digit_set.ids].astype(np.float64), 2)
        title = "digit input embeddings (PCA)" + ("" if label == "pretrained" else f", {label}")
        figures.append(plots.save(plots.plot_projection_trajectory(proj[None], np.zeros(1), list(digit_set.labels),
                                                                   title=title), out / "digits_pca.png"))
    return figures


CURVE_METRICS = {"pearson": "Pearson r", "spearman": "Spearman rho", "topk_overlap": "top-k overlap",
                 "strong_pair_precision": "strong-pair precision"}
"""The metric families drawn over training steps (one figure each per token set), besides side specificity."""
CONTROLS = ("embedding vs output signature", "unembedding vs input signature", "W_E vs phi_pre", "W_U vs phi_next")
"""The curves of each weight against the other side's signature (drawn dashed)."""


def _series_curves(points: list[CheckpointPoint], set_name: str, family: str):
    """``(curves, bands)`` of one metric family over the checkpoints (bands: the bootstrap intervals)."""
    steps = np.asarray([p.step for p in points], float)
    if family == "side_specificity":
        rows = {f"{w} vs {sig}": [(p.metrics[set_name]["side_specificity"]["pearson"][w][sig], "r", "ci_low",
                                   "ci_high") for p in points]
                for w in ("W_E", "W_U") for sig in ("phi_next", "phi_pre")}
    else:
        rows = {c.name.replace("_", " "): [(p.metrics[set_name]["pretrained"][c.name], family, f"{family}_ci_low",
                                            f"{family}_ci_high") for p in points] for c in TRAINING_COMPARISONS}
    curves, bands = {}, {}
    for label, entries in rows.items():
        curves[label] = (steps, np.asarray([e[key] for e, key, _, _ in entries], float))
        if all(low in e and high in e for e, _, low, high in entries):
            bands[label] = tuple(np.asarray([e[k] for e, *_ in entries], float) for k in entries[0][2:])
    return curves, bands


def write_pretrained_outputs(result: PretrainedResult, out: Path) -> list[Path]:
    """Figures and ``arrays.npz``; returns the figures. A series adds the curves over training steps
    (``series_<set>_<metric>.png``) and draws the heatmaps of its ``heatmap_steps`` (``*_step<N>.png``)."""
    scored = _restricted(result.alignment, result.row_ids)
    if len(result.points) == 1:
        figures = _checkpoint_figures(out, scored, result.weights)
        save_alignment_arrays(out / "arrays.npz", scored, result.weights)
        return figures
    figures, steps = [], [p.step for p in result.points]
    logx = min(steps) > 0 and max(steps) >= 100 * min(steps)
    for s in scored.token_sets:
        for family, label in {**CURVE_METRICS, "side_specificity": "Pearson r, own and other side"}.items():
            curves, bands = _series_curves(result.points, s.name, family)
            figures.append(plots.save(plots.plot_curves(
                curves, xlabel="training step (checkpoint)", ylabel=f"{label}, {s.name} tokens", logy=False,
                logx=logx, marker="o", bands=bands, styles={k: {"ls": "--"} for k in CONTROLS},
                title=f"{len(steps)} checkpoints (bands: bootstrap; dashed: the other side's signature)"),
                out / f"series_{s.name}_{family}.png"))
    extra: dict[str, np.ndarray] = {"series_steps": np.asarray(steps)}
    for p in result.points:
        if p.step in result.heatmap_steps:
            tmp = out / f".step{p.step}"
            tmp.mkdir()
            for fig in _checkpoint_figures(tmp, scored, p.weights, f"step {p.step}"):
                figures.append(fig.replace(out / f"{fig.stem}_step{p.step}{fig.suffix}"))
            shutil.rmtree(tmp)
        for s in scored.token_sets:
            for name, matrix in weight_similarities(p.weights, s).items():
                extra[f"step{p.step}_{s.name}_{name}"] = matrix
    save_alignment_arrays(out / "arrays.npz", scored, result.weights, **extra)
    return figures


def pretrained_summary_lines(metrics: dict[str, Any]) -> list[str]:
    """The lines of E4/E5 (:func:`corpus_summary_lines`) and, for a series, one line per token set over steps."""
    lines = corpus_summary_lines(metrics)
    series = metrics.get("series")
    if not series:
        return lines
    steps = [p["step"] for p in series]
    head = [f"checkpoint series: {len(series)} checkpoints at steps {_listed(steps, '{}')} (from the "
            f"{metrics['series_info']['steps_from']}); corpus tokenized and counted once; the lines below the series "
            f"lines are the last checkpoint's (step {steps[-1]})"]
    for name in metrics["token_sets"]:
        cells = []
        for label, comparison in (("W_E vs phi_next", "embedding_vs_signature"),
                                  ("W_U vs phi_pre", "unembedding_vs_signature"),
                                  ("W_E vs theory", "embedding_vs_theory")):
            r = [p["token_sets"][name]["pretrained"][comparison]["pearson"] for p in series]
            best = int(np.nanargmax(r)) if np.any(np.isfinite(r)) else 0
            cells.append(f"{label} Pearson {_listed(r, '{:.3f}')} (max {r[best]:.3f} at step {steps[best]})")
        head.append(f"{name} over training steps: " + "; ".join(cells))
    return head + lines


def _listed(values: list, fmt: str, most: int = 8) -> str:
    """``a, b, c`` (all of at most ``most`` values) or ``first -> last`` (n values)."""
    if len(values) <= most:
        return ", ".join(fmt.format(v) for v in values)
    return f"{fmt.format(values[0])} -> {fmt.format(values[-1])} ({len(values)} values)"


EXPERIMENT = Experiment(
    name="pretrained", title="E5: pretrained checkpoint, embeddings vs probability signatures",
    config_class=PretrainedExperimentConfig, run=lambda config, ctx: run_pretrained(config, quiet=ctx.quiet),
    write_outputs=write_pretrained_outputs, summary=pretrained_summary_lines)
