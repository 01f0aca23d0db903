"""E1: closed form vs integrated flow vs gradient descent for the linear model (PAPER section 8).

:func:`run_linear_theory` does the computation and returns arrays and metrics;
:func:`write_linear_report` turns them into figures, ``metrics.json`` and ``report.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from probsig_jax import plots
from probsig_jax.analysis import alignment_metrics, offdiagonal, pca_projection
from probsig_jax.data import TaskData
from probsig_jax.experiments.common import (
    LinearExperimentConfig, alignment_over_time, embedding_similarity, joint_relative_error,
    numerics, similarity_from_gram, task_and_key_signatures, token_vectors,
)
from probsig_jax.models.linear import LinearEmbeddingModel
from probsig_jax.theory import linear as theory
from probsig_jax.train import train


@dataclass
class LinearTheoryResult:
    """Everything E1 computed. Trajectories are (T, ...) at ``times``."""

    config: LinearExperimentConfig
    task: TaskData
    keys: np.ndarray            # the alignment token set: keys that occur in the training inputs
    times: np.ndarray
    M: np.ndarray
    signature_sim: np.ndarray
    trajectories: dict[str, tuple[np.ndarray, np.ndarray]]   # "gd" | "flow" | "closed_form" -> (E_T, U_T)
    losses: dict[str, np.ndarray]
    rel_err: dict[str, np.ndarray]
    growth: np.ndarray
    early_index: int
    alignment_index: int
    metrics: dict[str, Any]


def run_linear_theory(config: LinearExperimentConfig, *, quiet: bool = False) -> LinearTheoryResult:
    """Train the linear model with gradient descent and compute the closed form and the exact flow."""
    config = config.validate()
    timings: dict[str, float] = {}
    with numerics(config.dtype) as dtype:
        tic = time.perf_counter()
        task, keys, M, S_sig = task_and_key_signatures(config.data, config.signature_similarity, config.positional)
        data = task.train
        timings["data_and_signatures_s"] = time.perf_counter() - tic

        model = LinearEmbeddingModel(data.vocab_size, config.dim, seq_len=data.seq_len, positional=config.positional,
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
        E_fl, U_fl = theory.integrate_flow(data, E0, U0, times, positional=config.positional,
                                           rtol=config.ode_rtol, atol=config.ode_rtol * 1e-2)
        E_fl, U_fl = np.asarray(E_fl), np.asarray(U_fl)
        timings["integrated_flow_s"] = time.perf_counter() - tic
        E_gd, U_gd = gd.weights["E"], gd.weights["U"]

        losses = {
            "gradient descent": gd.loss,
            "integrated flow": theory.linear_model_loss(data, E_fl, U_fl, positional=config.positional),
            "closed form (linearised)": theory.linear_model_loss(data, E_cf, U_cf, positional=config.positional),
        }
        escape_pred = theory.escape_time(M, config.init_scale, config.dim, config.escape_threshold, modes=modes)
        escape_meas = theory.measured_escape_time(times, E_gd, U_gd, config.escape_threshold)

    rel_err = {
        "gradient descent vs integrated flow": joint_relative_error(E_gd, U_gd, E_fl, U_fl),
        "closed form vs gradient descent": joint_relative_error(E_cf, U_cf, E_gd, U_gd),
        "closed form vs integrated flow": joint_relative_error(E_cf, U_cf, E_fl, U_fl),
    }
    growth = np.linalg.norm(E_gd.reshape(len(times), -1), axis=1) / np.linalg.norm(np.asarray(E0))
    within = np.nonzero(growth <= config.early_growth)[0]
    early = int(within[-1]) if len(within) else 0
    within = np.nonzero(growth <= config.alignment_growth)[0]
    align = int(within[-1]) if len(within) else 0

    k, q, V, pos = config.topk, config.strong_pair_percent, data.vocab_size, config.positional
    S_emb_align = embedding_similarity(E_gd[align], keys, V, pos)
    S_emb_early = embedding_similarity(E_gd[early], keys, V, pos)
    S_emb_final = embedding_similarity(E_gd[-1], keys, V, pos)
    with numerics(config.dtype):
        gram_pred = np.asarray(theory.predicted_embedding_gram(M, times[align], config.init_scale, config.dim,
                                                               modes=modes))
    S_pred = similarity_from_gram(gram_pred, keys, V, pos)
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
        "alignment": alignment_metrics(S_emb_align, S_sig, k=k, q=q),
        "alignment_early_phase_end": alignment_metrics(S_emb_early, S_sig, k=k, q=q),
        "alignment_final": alignment_metrics(S_emb_final, S_sig, k=k, q=q),
        "alignment_over_time": alignment_over_time(E_gd, S_sig, keys, V, pos, k=k, q=q),
        "signature_similarity": config.signature_similarity,
        "singular_values_M": np.asarray(modes.S[:10]).tolist(),
        "num_train_rows": data.num_samples,
        "vocab_size": V,
        "num_keys": len(keys),
        "timings": timings,
    }
    metrics["alignment_over_time"]["time"] = [float(times[i]) for i in metrics["alignment_over_time"]["record_index"]]
    # Embedding vs the theory's expected Gram, and the theory's own ceiling: expected Gram vs signatures.
    metrics["alignment_predicted_gram"] = alignment_metrics(S_emb_align, S_pred, k=k, q=q)
    metrics["alignment_theory_vs_signature"] = alignment_metrics(S_pred, S_sig, k=k, q=q)
    return LinearTheoryResult(config, task, keys, times, M, S_sig, {"gd": (E_gd, U_gd), "flow": (E_fl, U_fl),
                              "closed_form": (E_cf, U_cf)}, losses, rel_err, growth, early, align, metrics)


def write_linear_report(result: LinearTheoryResult, out_dir: Path) -> list[Path]:
    """Save the E1 figures, ``arrays.npz`` and ``report.md`` into ``out_dir``; returns the figure paths."""
    cfg, m, times = result.config, result.metrics, result.times
    keys = result.keys
    V, pos = result.task.train.vocab_size, cfg.positional
    E_gd, U_gd = result.trajectories["gd"]
    E_cf, U_cf = result.trajectories["closed_form"]
    early = result.early_index
    figs = []
    figs.append(plots.plot_curves(out_dir / "loss.png", {k: (times, v) for k, v in result.losses.items()},
                                       logy=False, vline=m["escape_time_predicted"], vline_label="predicted escape"))
    figs.append(plots.plot_relative_errors(
        out_dir / "relative_error.png", {k: (times[1:], v[1:]) for k, v in result.rel_err.items()}, threshold=0.02,
        vlines={"predicted escape": m["escape_time_predicted"], f"growth {cfg.early_growth:g}x": times[early]}))
    align = result.alignment_index
    S_align = embedding_similarity(E_gd[align], keys, V, pos)
    S_early = embedding_similarity(E_gd[early], keys, V, pos)
    S_final = embedding_similarity(E_gd[-1], keys, V, pos)
    labels = [str(k) for k in keys]
    figs.append(plots.plot_similarity_heatmaps(
        out_dir / "similarity_heatmaps.png",
        {f"signature ({cfg.signature_similarity})": result.signature_sim,
         f"embedding, t={times[align]:.0f} (growth {result.growth[align]:.1f}x)": S_align,
         f"embedding, t={times[early]:.0f} (growth {result.growth[early]:.1f}x)": S_early,
         f"embedding, t={times[-1]:.0f} (final)": S_final},
        labels, title="key tokens: signature vs embedding cosine similarity"))
    figs.append(plots.plot_similarity_scatter(
        out_dir / "similarity_scatter.png", offdiagonal(result.signature_sim), offdiagonal(S_align),
        xlabel=f"signature similarity ({cfg.signature_similarity})",
        ylabel=f"embedding similarity (t={times[align]:.0f}, growth {result.growth[align]:.1f}x)",
        stats={k: m["alignment"][k] for k in ("pearson", "spearman", "topk_overlap", "strong_pair_precision")}))
    snapshots = np.unique(np.linspace(0, len(times) - 1, 6).round().astype(int))
    vecs = [token_vectors(E_gd[i], keys, V, pos) for i in snapshots]
    proj = np.stack([pca_projection(v, 2, basis_from=vecs[-1])[0] for v in vecs])
    figs.append(plots.plot_projection_trajectory(out_dir / "key_projection.png", proj, times[snapshots], labels,
                                                 title="key embeddings, PCA basis of the final embeddings"))
    sv_gd = np.stack([np.linalg.svd(U @ E, compute_uv=False)[:8] for E, U in zip(E_gd, U_gd)])
    sv_cf = np.stack([np.linalg.svd(U @ E, compute_uv=False)[:8] for E, U in zip(E_cf, U_cf)])
    figs.append(plots.plot_singular_values(out_dir / "singular_values.png", times,
                                           {"gradient descent": sv_gd, "closed form": sv_cf}))
    aot = m["alignment_over_time"]
    figs.append(plots.plot_curves(
        out_dir / "alignment_over_time.png",
        {name: (np.asarray(aot["time"]), np.asarray(aot[name], dtype=float))
         for name in ("pearson", "spearman", "topk_overlap", "strong_pair_precision")},
        ylabel="alignment with signature similarity", logy=False, vline=m["escape_time_predicted"],
        vline_label="predicted escape"))
    np.savez_compressed(out_dir / "arrays.npz", times=times, M=result.M, signature_similarity=result.signature_sim,
                        keys=keys, growth=result.growth, **{f"loss_{i}": v for i, v in enumerate(result.losses.values())},
                        E_gd_early=E_gd[early], E_gd_final=E_gd[-1], U_gd_final=U_gd[-1])
    return figs


def metrics_table(metrics: dict[str, Any]) -> str:
    """A Markdown table of the scalar metrics and the alignment dictionaries."""
    lines = ["| metric | value |", "|---|---|"]
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lines.append(f"| {key} | {value:.6g} |")
        elif isinstance(value, dict) and all(isinstance(v, (int, float)) for v in value.values()):
            for k2, v2 in value.items():
                lines.append(f"| {key}.{k2} | {v2:.6g} |")
    return "\n".join(lines)
