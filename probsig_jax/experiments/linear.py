"""E1: closed form vs integrated flow vs gradient descent for the linear model (PAPER section 8).

:func:`run_linear_theory` trains the linear model by gradient descent on a composite addition task and puts
beside it the closed form of the linearised flow and the integrated exact flow from the same
initialisation, the predicted escape time and embedding Gram, and the alignment of key-embedding
similarity with signature similarity over training; :func:`write_linear_outputs` saves the figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from flax import nnx

from probsig_jax.analysis import plots
from probsig_jax.analysis.alignment import (AlignmentConfig, AlignmentTracker, Comparison, alignment_series, compare,
                                            correlation_difference, similarity_from_gram)
from probsig_jax.analysis.geometry import pca_projection
from probsig_jax.analysis.metrics import offdiagonal
from probsig_jax.analysis.trajectories import (approximation_window, joint_relative_error, last_index_within, norm_growth,
                                               product_singular_values)
from probsig_jax.config_base import Config
from probsig_jax.data import CompositeAdditionConfig, TaskData
from probsig_jax.experiments import Experiment
from probsig_jax.experiments.report import interval_text, with_interval
from probsig_jax.experiments.toy_tasks import (ALIGNMENT_OPTIONS_UNUSED, TOY_ALIGNMENT, Preset, TaskResultView,
                                               TaskSignatures, check_toy_alignment, resolve_data, task_signatures)
from probsig_jax.models.linear import LinearEmbeddingModel, token_gram, token_rows
from probsig_jax.numerics import numerics
from probsig_jax.theory import linear as theory
from probsig_jax.training.supervised import TrainConfig, train
from probsig_jax.validation import require, require_float, require_int, require_seed

MAX_ALIGNMENT_POINTS = 60


@dataclass(frozen=True)
class LinearExperimentConfig(Config):
    """E1: the linear model on a composite addition task, theory beside training.

    ``seed`` seeds the data sampler, the initialisation and the mini-batches: ``resolved()`` copies it into
    ``data.seed`` and ``train.seed``. ``data`` None means the ``preset``.
    """

    preset: Preset = "simple"
    """Composite addition preset the data options are applied on top of."""
    dim: int = 256
    """Embedding width d."""
    init_scale: float = 1e-4
    """Standard deviation eps of the i.i.d. normal initialisation of E and U."""
    positional: bool = False
    """One feature per (position, token) instead of token counts."""
    dtype: Literal["float64", "float32"] = "float64"
    """Computation dtype; float64 is the default because theory and training are compared."""
    escape_threshold: float = 1.0
    """Leading singular value of U E that marks the escape from the plateau."""
    early_growth: float = 5.0
    """The early (near-linear) phase lasts until ||E_t|| / ||E_0|| reaches this factor;
    ``closed_form_rel_err`` is the maximum over it."""
    alignment_growth: float = 2.0
    """Growth factor ||E_t|| / ||E_0|| at which ``alignment`` is reported (<= early_growth): the regime where
    the embedding Gram is ~ eps^2 d (I + 2 t^2 M^T M), before the leading modes dominate (PAPER section 4)."""
    ode_rtol: float = 1e-10
    """Relative tolerance of the adaptive ODE solver."""
    seed: int = 0
    """Seed of the data sampler, the initialisation and the mini-batches."""
    alignment: AlignmentConfig = TOY_ALIGNMENT
    data: CompositeAdditionConfig | None = None
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=6000, learning_rate=0.05, record_every=20))

    derived_fields = ("data.seed", "train.seed")
    option_skip = ALIGNMENT_OPTIONS_UNUSED
    option_resets = {"preset": ("data",)}

    def resolved(self) -> "LinearExperimentConfig":
        return self.replace(data=resolve_data(self.preset, self.data, self.seed),
                            train=self.train.replace(seed=self.seed))

    def _check(self) -> None:
        require(self.data is not None, "data", "is unresolved: call resolved() before validate()")
        require_int(self.dim, "dim", minimum=1, maximum=65536)
        require_float(self.init_scale, "init_scale", minimum=0.0, strict_minimum=True)
        require(self.dtype in ("float32", "float64"), "dtype", f"must be float32 or float64, got {self.dtype!r}")
        require_float(self.escape_threshold, "escape_threshold", minimum=0.0, strict_minimum=True)
        require_float(self.early_growth, "early_growth", minimum=1.0, strict_minimum=True)
        require_float(self.alignment_growth, "alignment_growth", minimum=1.0, maximum=self.early_growth,
                      strict_minimum=True)
        require_float(self.ode_rtol, "ode_rtol", minimum=0.0, maximum=1e-2, strict_minimum=True)
        require_seed(self.seed)
        check_toy_alignment(self.alignment)


# The comparisons of E1 (names in metrics.json): embedding vs signature, embedding vs the theory's expected
# Gram, and the theory's own ceiling, its expected Gram vs the signatures.
EMBEDDING_VS_SIGNATURE = Comparison("embedding_vs_signature", "embedding", "signature")
EMBEDDING_VS_THEORY = Comparison("embedding_vs_theory", "embedding", "theory")
THEORY_VS_SIGNATURE = Comparison("theory_vs_signature", "theory", "signature")


@dataclass
class LinearTheoryResult(TaskResultView):
    """Everything E1 computed. Trajectories are (T, ...) at ``times``."""

    config: LinearExperimentConfig
    signatures: TaskSignatures
    times: np.ndarray
    trajectories: dict[str, tuple[np.ndarray, np.ndarray]]   # "gd" | "flow" | "closed_form" | "next_order"
    losses: dict[str, np.ndarray]
    rel_err: dict[str, np.ndarray]
    growth: np.ndarray
    early_index: int
    alignment_index: int
    theory_sim: np.ndarray           # (n, n) key similarity of the expected Gram at the alignment time
    metrics: dict[str, Any]


def run_linear_theory(config: LinearExperimentConfig, *, quiet: bool = False, task: TaskData | None = None
                      ) -> LinearTheoryResult:
    """Train the linear model with gradient descent and compute the closed form and the exact flow.

    ``task``: the already generated task of ``config.data`` (E2 generates each of its tasks once)."""
    config = config.resolved().validate()
    timings: dict[str, float] = {}
    positional = config.positional
    with numerics(config.dtype) as dtype:
        tic = time.perf_counter()
        sig = task_signatures(config.data, config.alignment, positional, task=task)
        data, M = sig.task.train, sig.M
        timings["data_and_signatures_s"] = time.perf_counter() - tic

        model = LinearEmbeddingModel(data.vocab_size, config.dim, seq_len=data.seq_len, positional=positional,
                                     init_scale=config.init_scale, dtype=dtype, rngs=nnx.Rngs(config.seed))
        E0, U0 = model.weights()["E"], model.weights()["U"]
        tic = time.perf_counter()
        gd = train(model, data, config.train, quiet=quiet, description="gradient descent")
        timings["gradient_descent_s"] = time.perf_counter() - tic
        times = gd.times

        tic = time.perf_counter()
        modes = theory.signature_modes(M.astype(E0.dtype))      # one SVD serves every prediction
        E_cf, U_cf = theory.closed_form(M.astype(E0.dtype), E0, U0, times, modes=modes)
        E_cf, U_cf = np.asarray(E_cf), np.asarray(U_cf)
        timings["closed_form_s"] = time.perf_counter() - tic
        tic = time.perf_counter()
        E_fl, U_fl = theory.integrate_flow(data, E0, U0, times, positional=positional,
                                           rtol=config.ode_rtol, atol=config.ode_rtol * 1e-2)
        E_fl, U_fl = np.asarray(E_fl), np.asarray(U_fl)
        timings["integrated_flow_s"] = time.perf_counter() - tic
        tic = time.perf_counter()
        E_no, U_no = theory.integrate_flow(data, E0, U0, times, positional=positional, order="next_order",
                                           rtol=config.ode_rtol, atol=config.ode_rtol * 1e-2)
        E_no, U_no = np.asarray(E_no), np.asarray(U_no)
        timings["next_order_flow_s"] = time.perf_counter() - tic
        E_gd, U_gd = gd.weights["E"], gd.weights["U"]

        losses = {
            "gradient descent": gd.loss,
            "integrated flow": theory.linear_model_loss(data, E_fl, U_fl, positional=positional),
            "closed form (linearised)": theory.linear_model_loss(data, E_cf, U_cf, positional=positional),
        }
        escape_pred = theory.escape_time(M, config.init_scale, config.dim, config.escape_threshold, modes=modes)
        escape_meas = theory.measured_escape_time(times, E_gd, U_gd, config.escape_threshold)

    rel_err = {
        "gradient descent vs integrated flow": joint_relative_error(E_gd, U_gd, E_fl, U_fl),
        "closed form vs gradient descent": joint_relative_error(E_cf, U_cf, E_gd, U_gd),
        "closed form vs integrated flow": joint_relative_error(E_cf, U_cf, E_fl, U_fl),
        "next order vs integrated flow": joint_relative_error(E_no, U_no, E_fl, U_fl),
    }
    growth = norm_growth(E_gd, E0)
    flow_growth = norm_growth(E_fl, E0)
    windows = {name: approximation_window(rel_err[f"{label} vs integrated flow"], flow_growth, times)
               for name, label in (("closed_form", "closed form"), ("next_order", "next order"))}
    early = last_index_within(growth, config.early_growth)
    align = last_index_within(growth, config.alignment_growth)

    V = data.vocab_size
    with numerics(config.dtype):
        gram_pred = np.asarray(theory.predicted_embedding_gram(M, times[align], config.init_scale, config.dim,
                                                               modes=modes))
    S_pred = similarity_from_gram(token_gram(gram_pred, V, positional), sig.keys.ids)
    # Baseline predictor from frequency alone: -|log f_s - log f_t| of the keys' input frequencies.
    key_freq = np.bincount(np.asarray(data.inputs).ravel(), minlength=V,
                           weights=np.repeat(data.sample_weights(), data.inputs.shape[1]))[sig.keys.ids]
    log_f = np.log(np.maximum(key_freq, 1e-300))
    targets = {"signature": sig.signature_sim, "theory": S_pred, "frequency": -np.abs(log_f[:, None] - log_f[None])}

    def embedding(i: int) -> dict[str, np.ndarray]:
        return {"embedding": token_rows(E_gd[i], V, positional)}

    tracker = AlignmentTracker([sig.keys], {"keys": targets}, [EMBEDDING_VS_SIGNATURE], config.alignment)
    at = {i: tracker.measure(embedding(i), [EMBEDDING_VS_SIGNATURE, EMBEDDING_VS_THEORY])["keys"]
          for i in (align, early, len(times) - 1)}
    for i in np.unique(np.linspace(0, len(times) - 1, min(MAX_ALIGNMENT_POINTS, len(times))).round().astype(int)):
        tracker(int(i), embedding(int(i)))       # "step" = the record index
    over_time = alignment_series(tracker.history, "keys", EMBEDDING_VS_SIGNATURE.name)
    over_time["record_index"] = over_time.pop("step")
    over_time["time"] = [float(times[i]) for i in over_time["record_index"]]

    metrics: dict[str, Any] = {
        "experiment": "linear",
        "final_loss": float(gd.loss[-1]),
        "initial_loss": float(gd.loss[0]),
        "closed_form_rel_err": float(rel_err["closed form vs gradient descent"][: early + 1].max()),
        "flow_rel_err": float(rel_err["gradient descent vs integrated flow"].max()),
        "closed_form_vs_flow_rel_err_early": float(rel_err["closed form vs integrated flow"][: early + 1].max()),
        "escape_time_predicted": escape_pred,
        "escape_time_measured": escape_meas,
        "early_phase_end_time": float(times[early]),
        "early_phase_growth": float(growth[early]),
        "alignment_time": float(times[align]),
        "alignment_growth": float(growth[align]),
        "final_growth": float(growth[-1]),
        # How far (in weight growth of the exact flow) each truncated flow stays within 1 % / 2 % of it.
        "approximation_window": windows,
        "alignment": at[align][EMBEDDING_VS_SIGNATURE.name],
        "alignment_early_phase_end": at[early][EMBEDDING_VS_SIGNATURE.name],
        "alignment_final": at[len(times) - 1][EMBEDDING_VS_SIGNATURE.name],
        "alignment_over_time": over_time,
        # Embedding vs the theory's expected Gram, and the theory's own ceiling: expected Gram vs signatures.
        "alignment_predicted_gram": at[align][EMBEDDING_VS_THEORY.name],
        # Baselines: the initial (step 0) embedding vs the signature, and frequency alone vs the embedding.
        "alignment_initial": tracker.measure(embedding(0))["keys"][EMBEDDING_VS_SIGNATURE.name],
        "alignment_frequency_baseline": _frequency_baseline(tracker, embedding(align), config.alignment),
        "alignment_theory_vs_signature": compare(targets, [THEORY_VS_SIGNATURE], config.alignment)[
            THEORY_VS_SIGNATURE.name],
        # r(embedding, theory) - r(embedding, signature) at the alignment time, with its token-bootstrap interval.
        "theory_added_value": correlation_difference(tracker.weight_similarity(embedding(align), "embedding"),
                                                     S_pred, sig.signature_sim, config.alignment),
        "signature_similarity": config.alignment.similarity,
        "singular_values_M": np.asarray(modes.S[:10]).tolist(),
        "num_train_rows": data.num_samples,
        "vocab_size": V,
        "num_keys": len(sig.keys.ids),
        "timings": timings,
    }
    return LinearTheoryResult(config, sig, times, {"gd": (E_gd, U_gd), "flow": (E_fl, U_fl),
                              "closed_form": (E_cf, U_cf), "next_order": (E_no, U_no)}, losses, rel_err, growth,
                              early, align, S_pred, metrics)


def _frequency_baseline(tracker: AlignmentTracker, weights: dict[str, np.ndarray], alignment: AlignmentConfig
                        ) -> dict[str, float]:
    """Pearson (with interval and Mantel p) of the embedding with the frequency-only similarity; nan when
    the keys' frequencies are all equal (no prediction at all)."""
    S_f = tracker.targets["keys"]["frequency"]
    if np.ptp(S_f) == 0:
        return {"pearson": float("nan"), "note": "all keys equally frequent: frequency predicts nothing"}
    return compare({"embedding": tracker.weight_similarity(weights, "embedding"), "frequency": S_f},
                   [Comparison("embedding_vs_frequency", "embedding", "frequency")], alignment)["embedding_vs_frequency"]


def write_linear_outputs(result: LinearTheoryResult, out_dir: Path) -> list[Path]:
    """Save the E1 figures and ``arrays.npz`` into ``out_dir``; returns the figure paths."""
    cfg, m, times = result.config, result.metrics, result.times
    E_gd, U_gd = result.trajectories["gd"]
    E_cf, U_cf = result.trajectories["closed_form"]
    early, align = result.early_index, result.alignment_index
    escape = {"predicted escape": m["escape_time_predicted"]}
    labels = list(result.signatures.keys.labels)
    figs = [plots.save(plots.plot_curves({k: (times, v) for k, v in result.losses.items()}, logy=False,
                                         vlines=escape), out_dir / "loss.png")]
    figs.append(plots.save(plots.plot_curves(
        {k: (times[1:], v[1:]) for k, v in result.rel_err.items()}, ylabel="relative error",
        hlines={"1 %": 0.01, "2 %": 0.02},
        vlines={**escape, f"growth {cfg.early_growth:g}x": times[early]}), out_dir / "relative_error.png"))
    S_align, S_early, S_final = (result.key_similarity(E_gd[i]) for i in (align, early, -1))
    figs.append(plots.save(plots.plot_similarity_heatmaps(
        {f"signature ({cfg.alignment.similarity})": result.signature_sim,
         f"embedding, t={times[align]:.0f} (growth {result.growth[align]:.1f}x)": S_align,
         f"embedding, t={times[early]:.0f} (growth {result.growth[early]:.1f}x)": S_early,
         f"embedding, t={times[-1]:.0f} (final)": S_final},
        labels, title="key tokens: signature vs embedding cosine similarity"), out_dir / "similarity_heatmaps.png"))
    figs.append(plots.save(plots.plot_similarity_scatter(
        offdiagonal(result.signature_sim), offdiagonal(S_align),
        xlabel=f"signature similarity ({cfg.alignment.similarity})",
        ylabel=f"embedding similarity (t={times[align]:.0f}, growth {result.growth[align]:.1f}x)",
        stats={k: m["alignment"][k] for k in ("pearson", "spearman", "topk_overlap", "strong_pair_precision")}),
        out_dir / "similarity_scatter.png"))
    V, keys = result.task.train.vocab_size, result.keys
    snapshots = np.unique(np.linspace(0, len(times) - 1, 6).round().astype(int))
    vecs = [token_rows(E_gd[i], V, cfg.positional)[keys] for i in snapshots]
    proj = np.stack([pca_projection(v, 2, basis_from=vecs[-1])[0] for v in vecs])
    figs.append(plots.save(plots.plot_projection_trajectory(
        proj, times[snapshots], labels, title="key embeddings, PCA basis of the final embeddings"),
        out_dir / "key_projection.png"))
    figs.append(plots.save(plots.plot_singular_values(
        times, {"gradient descent": product_singular_values(E_gd, U_gd), "closed form":
                product_singular_values(E_cf, U_cf)}), out_dir / "singular_values.png"))
    aot = m["alignment_over_time"]
    figs.append(plots.save(plots.plot_curves(
        {name: (np.asarray(aot["time"]), np.asarray(aot[name], dtype=float))
         for name in ("pearson", "spearman", "topk_overlap", "strong_pair_precision")},
        ylabel="alignment with signature similarity", logy=False, vlines=escape), out_dir / "alignment_over_time.png"))
    np.savez_compressed(out_dir / "arrays.npz", times=times, M=result.M, signature_similarity=result.signature_sim,
                        keys=keys, growth=result.growth, **{f"loss_{i}": v for i, v in enumerate(result.losses.values())},
                        E_gd_early=E_gd[early], E_gd_final=E_gd[-1], U_gd_final=U_gd[-1])
    return figs


def _growth(g: float | None) -> str:
    return "the end of the run" if g is None else f"{g:.1f}x"


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    a, measured = metrics["alignment"], metrics["escape_time_measured"]
    w, added = metrics["approximation_window"], metrics["theory_added_value"]
    freq = metrics["alignment_frequency_baseline"]
    return [
        f"final loss {metrics['final_loss']:.4f} (initial {metrics['initial_loss']:.4f})",
        f"closed form vs GD, max rel. error until growth {metrics['early_phase_growth']:.1f}x: "
        f"{metrics['closed_form_rel_err']:.3%}",
        f"integrated flow vs GD, max rel. error over the run: {metrics['flow_rel_err']:.3%}",
        "against the exact flow, the closed form stays within 1 % / 2 % up to growth "
        f"{_growth(w['closed_form']['growth_at_1pct'])} / {_growth(w['closed_form']['growth_at_2pct'])}, the "
        f"next-order flow up to {_growth(w['next_order']['growth_at_1pct'])} / "
        f"{_growth(w['next_order']['growth_at_2pct'])}",
        f"escape time predicted {metrics['escape_time_predicted']:.1f}, measured "
        f"{measured if measured is None else round(measured, 1)}",
        f"key embedding vs signature similarity at t={metrics['alignment_time']:.0f} "
        f"(growth {metrics['alignment_growth']:.1f}x): Pearson {with_interval(a, 'pearson')} (ceiling 1), Spearman "
        f"{with_interval(a, 'spearman')} (ceiling {a['ceiling_spearman']:.3f}), top-{int(a['k'])} overlap "
        f"{a['topk_overlap']:.3f} (chance {a['chance_topk_overlap']:.3f}, ceiling {a['ceiling_topk_overlap']:.3f}), "
        f"strong-pair precision {a['strong_pair_precision']:.3f} (chance {a['chance_strong_pair_precision']:.3f}, "
        f"ceiling {a['ceiling_strong_pair_precision']:.3f})",
        f"baselines: the initial embedding vs the signature Pearson {metrics['alignment_initial']['pearson']:.3f}; "
        + (f"frequency alone vs the embedding Pearson {with_interval(freq, 'pearson')}" if "note" not in freq
           else f"frequency: {freq['note']}"),
        f"the theory's expected Gram (from M alone, the same initialisation statistics) vs the embedding: Pearson "
        f"{with_interval(metrics['alignment_predicted_gram'], 'pearson')}; over the signature: "
        f"{added['value']:+.3f}{interval_text(added)}",
    ]


EXPERIMENT = Experiment(
    name="linear", title="E1: linear model, closed form vs integrated flow vs gradient descent",
    config_class=LinearExperimentConfig, run=lambda config, ctx: run_linear_theory(config, quiet=ctx.quiet),
    write_outputs=write_linear_outputs, summary=summary_lines)
