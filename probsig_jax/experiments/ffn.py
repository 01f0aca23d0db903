"""E3: the feed-forward (Emb-MLP) model beside the linear model on a composite addition task.

No closed form exists for the FFN (PAPER section 6); what the theory predicts is that at
small initialisation its key embeddings are driven by the same label signatures as the
linear model's. :func:`run_ffn` trains both models with the same optimiser on the same
data, records accuracy (train, unseen test keys, held-out anchor combinations) and the
section-7 alignment of key-embedding similarity with signature similarity over training;
with several ``init_scale`` values it runs the initialisation-scale sweep.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from probsig_jax.analysis import plots
from probsig_jax.analysis.alignment import AlignmentConfig, AlignmentTracker, Comparison, alignment_series
from probsig_jax.analysis.geometry import pca_projection
from probsig_jax.analysis.metrics import offdiagonal
from probsig_jax.config_base import Config
from probsig_jax.data import CompositeAdditionConfig, Dataset, TaskData
from probsig_jax.experiments import Experiment
from probsig_jax.experiments.toy_tasks import (ALIGNMENT_OPTIONS_UNUSED, TOY_ALIGNMENT, Preset, TaskResultView,
                                               TaskSignatures, check_toy_alignment, resolve_data, task_signatures)
from probsig_jax.models.ffn import ACTIVATIONS, FeedForwardModel
from probsig_jax.models.linear import LinearEmbeddingModel
from probsig_jax.numerics import numerics
from probsig_jax.training.supervised import TrainConfig, train
from probsig_jax.validation import require, require_float, require_int, require_seed

MAX_ALIGNMENT_POINTS = 60
EMBEDDING_VS_SIGNATURE = Comparison("embedding_vs_signature", "embedding", "signature")


@dataclass(frozen=True)
class FFNExperimentConfig(Config):
    """E3: FFN vs linear model on a composite addition task, and the initialisation-scale sweep.

    ``seed`` seeds the data sampler, the initialisation and the mini-batches (``resolved()`` copies it into
    ``data.seed`` and ``train.seed``); ``data`` None means the ``preset``.
    """

    preset: Preset = "anchor4"
    """Composite addition preset the data options are applied on top of."""
    dim: int = 64
    """Embedding width d (both models)."""
    hidden: tuple[int, ...] = (256,)
    """Hidden layer widths of the FFN (depth = number of entries)."""
    activation: Literal["gelu", "tanh", "relu"] = "gelu"
    """FFN nonlinearity (GELU and tanh have sigma(0) = 0, sigma'(0) = 1 as the theory assumes)."""
    combine: Literal["sum", "concat"] = "sum"
    """FFN input: sum of the token embeddings, or their concatenation by position."""
    init_scale: tuple[float, ...] = (1e-3,)
    """Initialisation scale(s); several values run the sweep. FFN: multiplier of the LeCun std
    1/sqrt(fan_in) (1 = standard); linear model: the std of E and U."""
    dtype: Literal["float32", "float64"] = "float32"
    """Computation dtype."""
    seed: int = 0
    """Seed of the data sampler, the initialisation and the mini-batches."""
    alignment: AlignmentConfig = TOY_ALIGNMENT
    data: CompositeAdditionConfig | None = None
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        optimizer="adam", learning_rate=2e-3, steps=2000, batch_size=512, record_every=50))

    derived_fields = ("data.seed", "train.seed")
    option_skip = ALIGNMENT_OPTIONS_UNUSED
    option_resets = {"preset": ("data",)}

    def resolved(self) -> "FFNExperimentConfig":
        return self.replace(data=resolve_data(self.preset, self.data, self.seed),
                            train=self.train.replace(seed=self.seed))

    def _check(self) -> None:
        require(self.data is not None, "data", "is unresolved: call resolved() before validate()")
        require_int(self.dim, "dim", minimum=1, maximum=65536)
        require(len(self.hidden) >= 1, "hidden", "needs at least one hidden layer width")
        for width in self.hidden:
            require_int(width, "hidden", minimum=1, maximum=65536)
        require(self.activation in ACTIVATIONS, "activation", f"must be one of {sorted(ACTIVATIONS)}")
        require(self.combine in ("sum", "concat"), "combine", f"must be sum or concat, got {self.combine!r}")
        require(len(self.init_scale) >= 1, "init_scale", "give at least one value")
        for scale in self.init_scale:
            require_float(scale, "init_scale", minimum=0.0, maximum=100.0, strict_minimum=True)
        require(self.dtype in ("float32", "float64"), "dtype", f"must be float32 or float64, got {self.dtype!r}")
        require_seed(self.seed)
        check_toy_alignment(self.alignment)


@dataclass
class ModelRun:
    """One trained model: records at ``steps`` and the final accuracies."""

    name: str
    init_scale: float
    steps: np.ndarray
    loss: np.ndarray
    E: np.ndarray                       # (T, d, V)
    accuracy: dict[str, np.ndarray]     # split -> (T,)
    alignment_final: dict[str, float]
    alignment_over_time: dict[str, list[float]]


@dataclass
class FFNResult(TaskResultView):
    config: FFNExperimentConfig
    signatures: TaskSignatures
    runs: list[ModelRun]
    metrics: dict[str, Any]


def _accuracy_fn(data: Dataset):
    x, y = jnp.asarray(data.inputs), jnp.asarray(data.labels)
    w = jnp.asarray(data.sample_weights() / data.sample_weights().sum())

    def accuracy(model) -> jax.Array:
        return jnp.sum(w * (jnp.argmax(model(x), axis=-1) == y))

    return accuracy


def _splits(task: TaskData) -> dict[str, Dataset]:
    out = {"train": task.train}
    if task.test_unseen_keys is not None:
        out["test_unseen_keys"] = task.test_unseen_keys
    if task.test_held_out is not None:
        out["test_held_out"] = task.test_held_out
    return out


def _train_one(name: str, model, sig: TaskSignatures, config: FFNExperimentConfig, scale: float,
               quiet: bool) -> ModelRun:
    task = sig.task
    acc = {split: _accuracy_fn(ds) for split, ds in _splits(task).items()}

    def record(m):
        return {"E": m.embedding[...], **{f"acc_{s}": fn(m) for s, fn in acc.items()}}

    result = train(model, task.train, config.train, record=record, quiet=quiet,
                   description=f"{name} (init {scale:g})")
    E = result.weights["E"]
    tracker = AlignmentTracker([sig.keys], {"keys": {"signature": sig.signature_sim}}, [EMBEDDING_VS_SIGNATURE],
                               config.alignment)
    final = tracker.measure({"embedding": E[-1].T})["keys"][EMBEDDING_VS_SIGNATURE.name]
    for i in np.unique(np.linspace(0, len(E) - 1, min(MAX_ALIGNMENT_POINTS, len(E))).round().astype(int)):
        tracker(int(i), {"embedding": E[i].T})
    over_time = alignment_series(tracker.history, "keys", EMBEDDING_VS_SIGNATURE.name)
    over_time["record_index"] = over_time.pop("step")
    return ModelRun(name=name, init_scale=scale, steps=result.steps, loss=result.loss, E=E,
                    accuracy={s: result.weights[f"acc_{s}"] for s in acc}, alignment_final=final,
                    alignment_over_time=over_time)


def run_ffn(config: FFNExperimentConfig, *, quiet: bool = False) -> FFNResult:
    """Train the FFN and the linear model for every ``init_scale``; alignment and accuracy over training."""
    config = config.resolved().validate()
    timings: dict[str, float] = {}
    with numerics(config.dtype) as dtype:
        tic = time.perf_counter()
        sig = task_signatures(config.data, config.alignment, False)
        data = sig.task.train
        timings["data_and_signatures_s"] = time.perf_counter() - tic
        runs = []
        for scale in config.init_scale:
            ffn = FeedForwardModel(data.vocab_size, config.dim, seq_len=data.seq_len, hidden=config.hidden,
                                   activation=config.activation, combine=config.combine, init_scale=scale,
                                   dtype=dtype, rngs=nnx.Rngs(config.seed))
            linear = LinearEmbeddingModel(data.vocab_size, config.dim, seq_len=data.seq_len, init_scale=scale,
                                          dtype=dtype, rngs=nnx.Rngs(config.seed))
            for name, model in (("ffn", ffn), ("linear", linear)):
                tic = time.perf_counter()
                runs.append(_train_one(name, model, sig, config, scale, quiet))
                timings[f"{name}_init{scale:g}_s"] = time.perf_counter() - tic

    def summary(run: ModelRun) -> dict[str, Any]:
        return {"init_scale": run.init_scale, "final_loss": float(run.loss[-1]),
                **{f"{s}_accuracy": float(a[-1]) for s, a in run.accuracy.items()},
                "alignment": run.alignment_final,
                "alignment_pearson_max": float(np.nanmax(run.alignment_over_time["pearson"]))}

    first = {r.name: r for r in runs if r.init_scale == config.init_scale[0]}
    metrics: dict[str, Any] = {
        "experiment": "ffn",
        "num_train_rows": data.num_samples,
        "vocab_size": data.vocab_size,
        "num_keys": len(sig.keys.ids),
        "ffn": summary(first["ffn"]),
        "linear": summary(first["linear"]),
        "sweep": [summary(r) | {"model": r.name} for r in runs],
        "timings": timings,
    }
    for name in ("ffn", "linear"):
        aot = first[name].alignment_over_time
        metrics[name]["alignment_over_time"] = dict(aot, step=[int(first[name].steps[i]) for i in aot["record_index"]])
    return FFNResult(config, sig, runs, metrics)


def write_ffn_outputs(result: FFNResult, out_dir: Path) -> list[Path]:
    """Save the E3 figures and ``arrays.npz``; returns the figure paths."""
    cfg = result.config
    keys, labels = result.keys, list(result.signatures.keys.labels)
    first = {r.name: r for r in result.runs if r.init_scale == cfg.init_scale[0]}
    ffn, lin = first["ffn"], first["linear"]
    figs = [plots.save(plots.plot_curves({r.name: (r.steps, r.loss) for r in (ffn, lin)}, xlabel="step", logy=True),
                       out_dir / "loss.png")]
    figs.append(plots.save(plots.plot_curves(
        {f"{r.name} {split}": (r.steps, acc) for r in (ffn, lin) for split, acc in r.accuracy.items()},
        xlabel="step", ylabel="accuracy", logy=False), out_dir / "accuracy.png"))
    S_ffn, S_lin = result.key_similarity(ffn.E[-1]), result.key_similarity(lin.E[-1])
    similarity = cfg.alignment.similarity
    figs.append(plots.save(plots.plot_similarity_heatmaps(
        {f"signature ({similarity})": result.signature_sim, "FFN key embeddings (final)": S_ffn,
         "linear key embeddings (final)": S_lin}, labels, title="key tokens: signature vs embedding similarity"),
        out_dir / "similarity_heatmaps.png"))
    figs.append(plots.save(plots.plot_similarity_scatter(
        offdiagonal(result.signature_sim), offdiagonal(S_ffn), xlabel=f"signature similarity ({similarity})",
        ylabel="FFN key-embedding similarity (final)",
        stats={k: ffn.alignment_final[k] for k in ("pearson", "spearman", "topk_overlap", "strong_pair_precision")}),
        out_dir / "similarity_scatter.png"))
    snapshots = np.unique(np.linspace(0, len(ffn.steps) - 1, 6).round().astype(int))
    vecs = [ffn.E[i][:, keys].T for i in snapshots]
    proj = np.stack([pca_projection(v, 2, basis_from=vecs[-1])[0] for v in vecs])
    figs.append(plots.save(plots.plot_projection_trajectory(
        proj, ffn.steps[snapshots], labels, title="FFN key embeddings, PCA basis of the final embeddings",
        time_label="step"), out_dir / "key_projection.png"))
    figs.append(plots.save(plots.plot_curves(
        {f"{r.name} {m}": (r.steps[np.asarray(r.alignment_over_time["record_index"])],
                           np.asarray(r.alignment_over_time[m], dtype=float))
         for r in (ffn, lin) for m in ("pearson", "strong_pair_precision")},
        xlabel="step", ylabel="alignment with signature similarity", logy=False), out_dir / "alignment_over_time.png"))
    if len(cfg.init_scale) > 1:
        scales = np.asarray(cfg.init_scale, dtype=float)
        series = {}
        for name in ("ffn", "linear"):
            rs = [r for r in result.runs if r.name == name]
            series[f"{name}: Pearson"] = np.array([r.alignment_final["pearson"] for r in rs])
            split = "test_held_out" if "test_held_out" in rs[0].accuracy else "train"
            series[f"{name}: {split} accuracy"] = np.array([r.accuracy[split][-1] for r in rs])
        figs.append(plots.save(plots.plot_curves(
            {k: (scales, v) for k, v in series.items()}, xlabel="init scale", ylabel="alignment (Pearson) / accuracy",
            logy=False, logx=True, marker="o"), out_dir / "init_scale_sweep.png"))
    np.savez_compressed(out_dir / "arrays.npz", keys=keys, signature_similarity=result.signature_sim,
                        **{f"E_{r.name}_init{r.init_scale:g}_final": r.E[-1] for r in result.runs})
    return figs


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    lines = []
    for row in metrics["sweep"]:
        acc = ", ".join(f"{k.removesuffix('_accuracy')} {v:.3f}" for k, v in row.items() if k.endswith("_accuracy"))
        a = row["alignment"]
        lines.append(f"{row['model']} (init {row['init_scale']:g}): loss {row['final_loss']:.4f}; accuracy {acc}; "
                     f"key embedding vs signature Pearson {a['pearson']:.3f}, strong-pair precision "
                     f"{a['strong_pair_precision']:.3f}")
    return lines


EXPERIMENT = Experiment(
    name="ffn", title="E3: feed-forward network vs linear model", config_class=FFNExperimentConfig,
    run=lambda config, ctx: run_ffn(config, quiet=ctx.quiet), write_outputs=write_ffn_outputs, summary=summary_lines)
