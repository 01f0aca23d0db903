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

from probsig_jax import plots
from probsig_jax.analysis import alignment_metrics, offdiagonal, pca_projection
from probsig_jax.data import PRESETS, CompositeAdditionConfig, Dataset, TaskData
from probsig_jax.experiments.common import (
    alignment_over_time, embedding_similarity, numerics, task_and_key_signatures,
)
from probsig_jax.models.ffn import ACTIVATIONS, FeedForwardModel
from probsig_jax.models.linear import LinearEmbeddingModel
from probsig_jax.train import TrainConfig, train
from probsig_jax.validation import require, require_float, require_int


@dataclass(frozen=True)
class FFNExperimentConfig:
    """E3: FFN vs linear model on a composite addition task, and the initialisation-scale sweep."""

    preset: Literal["simple", "anchor4", "anchor4_trap", "reasoning"] = "anchor4"
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
    signature_similarity: Literal["cosine_M", "cosine_Q", "hellinger_Q", "js_Q"] = "cosine_M"
    """Signature similarity compared with embedding similarity."""
    topk: int = 5
    """k of the top-k neighbour overlap."""
    strong_pair_percent: float = 10.0
    """q: the strong pairs are the top q percent by signature similarity."""
    seed: int = 0
    """Seed of the data sampler, the initialisation and the mini-batches."""
    data: CompositeAdditionConfig = field(default_factory=lambda: PRESETS["anchor4"])
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        optimizer="adam", learning_rate=2e-3, steps=2000, batch_size=512, record_every=50))

    def validate(self) -> "FFNExperimentConfig":
        require(self.preset in PRESETS, "preset", f"must be one of {sorted(PRESETS)}, got {self.preset!r}")
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
        require_int(self.topk, "topk", minimum=1)
        require_float(self.strong_pair_percent, "strong_pair_percent", minimum=0.0, maximum=100.0,
                      strict_minimum=True)
        require_int(self.seed, "seed", minimum=0)
        self.data.validate()
        self.train.validate()
        return self


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
class FFNResult:
    config: FFNExperimentConfig
    task: TaskData
    keys: np.ndarray            # the alignment token set: keys that occur in the training inputs
    signature_sim: np.ndarray
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


def _train_one(name: str, model, task: TaskData, keys: np.ndarray, config: FFNExperimentConfig, S_sig: np.ndarray,
               scale: float, quiet: bool) -> ModelRun:
    acc = {split: _accuracy_fn(ds) for split, ds in _splits(task).items()}

    def record(m):
        return {"E": m.embedding[...], **{f"acc_{s}": fn(m) for s, fn in acc.items()}}

    result = train(model, task.train, config.train, record=record, quiet=quiet,
                   description=f"{name} (init {scale:g})")
    V = task.train.vocab_size
    k, q = config.topk, config.strong_pair_percent
    E = result.weights["E"]
    return ModelRun(
        name=name, init_scale=scale, steps=result.steps, loss=result.loss, E=E,
        accuracy={s: result.weights[f"acc_{s}"] for s in acc},
        alignment_final=alignment_metrics(embedding_similarity(E[-1], keys, V, False), S_sig, k=k, q=q),
        alignment_over_time=alignment_over_time(E, S_sig, keys, V, False, k=k, q=q))


def run_ffn(config: FFNExperimentConfig, *, quiet: bool = False) -> FFNResult:
    """Train the FFN and the linear model for every ``init_scale``; alignment and accuracy over training."""
    config = config.validate()
    timings: dict[str, float] = {}
    with numerics(config.dtype) as dtype:
        tic = time.perf_counter()
        task, keys, _, S_sig = task_and_key_signatures(config.data, config.signature_similarity, False)
        data = task.train
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
                runs.append(_train_one(name, model, task, keys, config, S_sig, scale, quiet))
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
        "num_keys": len(keys),
        "ffn": summary(first["ffn"]),
        "linear": summary(first["linear"]),
        "sweep": [summary(r) | {"model": r.name} for r in runs],
        "timings": timings,
    }
    for name in ("ffn", "linear"):
        aot = first[name].alignment_over_time
        metrics[name]["alignment_over_time"] = dict(aot, step=[int(first[name].steps[i]) for i in aot["record_index"]])
    return FFNResult(config, task, keys, S_sig, runs, metrics)


def write_ffn_report(result: FFNResult, out_dir: Path) -> list[Path]:
    """Save the E3 figures and ``arrays.npz``; returns the figure paths."""
    cfg = result.config
    keys = result.keys
    V = result.task.train.vocab_size
    labels = [str(k) for k in keys]
    first = {r.name: r for r in result.runs if r.init_scale == cfg.init_scale[0]}
    ffn, lin = first["ffn"], first["linear"]
    figs = [plots.plot_curves(out_dir / "loss.png", {f"{r.name}": (r.steps, r.loss) for r in (ffn, lin)},
                                   xlabel="step", logy=True)]
    figs.append(plots.plot_curves(
        out_dir / "accuracy.png",
        {f"{r.name} {split}": (r.steps, acc) for r in (ffn, lin) for split, acc in r.accuracy.items()},
        xlabel="step", ylabel="accuracy", logy=False))
    S_ffn = embedding_similarity(ffn.E[-1], keys, V, False)
    S_lin = embedding_similarity(lin.E[-1], keys, V, False)
    figs.append(plots.plot_similarity_heatmaps(
        out_dir / "similarity_heatmaps.png",
        {f"signature ({cfg.signature_similarity})": result.signature_sim, "FFN key embeddings (final)": S_ffn,
         "linear key embeddings (final)": S_lin}, labels, title="key tokens: signature vs embedding similarity"))
    figs.append(plots.plot_similarity_scatter(
        out_dir / "similarity_scatter.png", offdiagonal(result.signature_sim), offdiagonal(S_ffn),
        xlabel=f"signature similarity ({cfg.signature_similarity})", ylabel="FFN key-embedding similarity (final)",
        stats={k: ffn.alignment_final[k] for k in ("pearson", "spearman", "topk_overlap", "strong_pair_precision")}))
    snapshots = np.unique(np.linspace(0, len(ffn.steps) - 1, 6).round().astype(int))
    vecs = [ffn.E[i][:, keys].T for i in snapshots]
    proj = np.stack([pca_projection(v, 2, basis_from=vecs[-1])[0] for v in vecs])
    figs.append(plots.plot_projection_trajectory(out_dir / "key_projection.png", proj, ffn.steps[snapshots], labels,
                                                 title="FFN key embeddings, PCA basis of the final embeddings"))
    figs.append(plots.plot_curves(
        out_dir / "alignment_over_time.png",
        {f"{r.name} {m}": (r.steps[np.asarray(r.alignment_over_time["record_index"])],
                           np.asarray(r.alignment_over_time[m], dtype=float))
         for r in (ffn, lin) for m in ("pearson", "strong_pair_precision")},
        xlabel="step", ylabel="alignment with signature similarity", logy=False))
    if len(cfg.init_scale) > 1:
        scales = np.asarray(cfg.init_scale, dtype=float)
        series = {}
        for name in ("ffn", "linear"):
            rs = [r for r in result.runs if r.name == name]
            series[f"{name}: Pearson"] = np.array([r.alignment_final["pearson"] for r in rs])
            split = "test_held_out" if "test_held_out" in rs[0].accuracy else "train"
            series[f"{name}: {split} accuracy"] = np.array([r.accuracy[split][-1] for r in rs])
        figs.append(plots.plot_curves(out_dir / "init_scale_sweep.png", {k: (scales, v) for k, v in series.items()},
                                           xlabel="init scale", ylabel="alignment (Pearson) / accuracy", logy=False,
                                           logx=True, marker="o"))
    np.savez_compressed(out_dir / "arrays.npz", keys=keys, signature_similarity=result.signature_sim,
                        **{f"E_{r.name}_init{r.init_scale:g}_final": r.E[-1] for r in result.runs})
    return figs
