"""E2: edit the data distribution, predict the change of the key-embedding geometry, then measure it.

A baseline task and an edited one (``FIELD=VALUE`` assignments to the composite
addition config) are trained from the *same* initialisation. The change of the
key-embedding cosine similarity ``Delta S_E = S_E(edited) - S_E(baseline)`` at the
comparison time is set beside three predictions made from the data alone:

* ``closed_form``: the linearised closed form of PAPER section 4 for both tasks,
  from the same ``(E0, U0)`` — the theory's prediction for this initialisation;
* ``expected_gram``: the closed form averaged over random initialisations
  (``predicted_embedding_gram``) — the prediction that needs no initialisation;
* ``signature``: the change of the signature similarity ``Delta S_P`` itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from probsig_jax import plots
from probsig_jax.analysis import alignment_metrics, offdiagonal, pearson, spearman
from probsig_jax.cli_options import parse_assignment
from probsig_jax.data import CompositeAdditionConfig, make_composite_addition
from probsig_jax.experiments.common import LinearExperimentConfig, embedding_similarity, similarity_from_gram
from probsig_jax.experiments.linear import LinearTheoryResult, run_linear_theory
from probsig_jax.signatures import signature_matrix
from probsig_jax.theory import linear as theory
from probsig_jax.validation import ConfigError, require

DEFAULT_EDITS: tuple[str, ...] = ("anchor_weights=4,1,1,1",)


@dataclass(frozen=True)
class InterventionConfig:
    """E2: the E1 setting (``base``) and the data edits applied to get the edited task."""

    base: LinearExperimentConfig = field(default_factory=LinearExperimentConfig)
    edits: tuple[str, ...] = DEFAULT_EDITS
    """``FIELD=VALUE`` assignments to the composite addition config, e.g. ``anchor_weights=4,1,1,1``,
    ``label_noise=0.3``, ``held_out=4``, ``relabel=3=-6``."""
    edited_data: CompositeAdditionConfig | None = None
    """The edited data config itself (from Python, e.g. ``base.data.replace(...)``); the ``edits`` are
    applied on top of it."""

    def edited_config(self) -> LinearExperimentConfig:
        """The base config with the edits applied to its data config (validated)."""
        require(len(self.edits) > 0 or self.edited_data is not None, "edit",
                "give at least one FIELD=VALUE edit of the data config (or edited_data)")
        data = self.edited_data if self.edited_data is not None else self.base.data
        for text in self.edits:
            data = parse_assignment(data, text, option="edit")
        if data == self.base.data:
            raise ConfigError("edit", f"the edits {list(self.edits)} leave the data config unchanged")
        return dataclasses.replace(self.base, data=data).validate()

    def validate(self) -> "InterventionConfig":
        self.base.validate()
        edited = self.edited_config()
        base_ds, edit_ds = make_composite_addition(self.base.data).train, make_composite_addition(edited.data).train
        M_base = signature_matrix(base_ds, self.base.positional)
        M_edit = signature_matrix(edit_ds, self.base.positional)
        if M_base.shape == M_edit.shape and np.allclose(M_base, M_edit, rtol=0, atol=1e-12):
            raise ConfigError("edit", f"the edits {list(self.edits)} leave the signature matrix M unchanged, "
                              "so the baseline and edited runs would be identical")
        return self


@dataclass
class InterventionResult:
    config: InterventionConfig
    baseline: LinearTheoryResult
    edited: LinearTheoryResult
    compare_index: int
    delta_measured: np.ndarray
    delta_predicted: dict[str, np.ndarray]
    metrics: dict[str, Any]


def _shared_vocab(config: InterventionConfig) -> tuple[LinearExperimentConfig, LinearExperimentConfig]:
    """Base and edited configs with one vocabulary size, so both models start from the same (E0, U0)."""
    base, edited = config.base.validate(), config.edited_config()
    if base.data.vocab_size == 0 or edited.data.vocab_size == 0:
        v = max(make_composite_addition(base.data).train.vocab_size, make_composite_addition(edited.data).train.vocab_size)
        base = dataclasses.replace(base, data=base.data.replace(vocab_size=base.data.vocab_size or v))
        edited = dataclasses.replace(edited, data=edited.data.replace(vocab_size=edited.data.vocab_size or v))
    if base.data.vocab_size != edited.data.vocab_size:
        raise ConfigError("vocab_size", f"baseline and edited tasks need the same vocabulary size, got "
                          f"{base.data.vocab_size} and {edited.data.vocab_size}")
    return base, edited


def _delta_stats(measured: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    m, p = offdiagonal(measured), offdiagonal(predicted)
    return {
        "pearson": pearson(m, p),
        "spearman": spearman(m, p),
        "rel_err": float(np.linalg.norm(m - p) / max(np.linalg.norm(m), 1e-300)),
        "mean_abs_predicted": float(np.mean(np.abs(p))),
    }


def run_intervention(config: InterventionConfig, *, quiet: bool = False) -> InterventionResult:
    """Train baseline and edited tasks from one initialisation; predicted vs measured change of S_E."""
    config.validate()
    base_cfg, edit_cfg = _shared_vocab(config)
    baseline = run_linear_theory(base_cfg, quiet=quiet)
    edited = run_linear_theory(edit_cfg, quiet=quiet)
    keys = baseline.keys
    if not np.array_equal(keys, edited.keys):
        raise ConfigError("edit", "the edits changed the key tokens; Delta S_E is compared over one key set "
                          "(edit weights, anchors, noise or held-out combinations instead)")
    V, pos, cfg = baseline.task.train.vocab_size, base_cfg.positional, base_cfg
    i = baseline.alignment_index
    t = float(baseline.times[i])

    def S_of(E):
        return embedding_similarity(E, keys, V, pos)

    E_b, E_e = baseline.trajectories["gd"][0][i], edited.trajectories["gd"][0][i]
    delta_measured = S_of(E_e) - S_of(E_b)
    gram = {name: np.asarray(theory.predicted_embedding_gram(r.M, t, cfg.init_scale, cfg.dim))
            for name, r in (("b", baseline), ("e", edited))}
    delta_predicted = {
        "closed_form": S_of(edited.trajectories["closed_form"][0][i]) - S_of(baseline.trajectories["closed_form"][0][i]),
        "expected_gram": (similarity_from_gram(gram["e"], keys, V, pos)
                          - similarity_from_gram(gram["b"], keys, V, pos)),
        "signature": edited.signature_sim - baseline.signature_sim,
    }
    # The same comparison at every recorded time up to the end of the early phase.
    upto = np.unique(np.linspace(1, baseline.early_index, min(30, max(baseline.early_index, 1))).round().astype(int))
    over_time: dict[str, list[float]] = {"time": [float(baseline.times[j]) for j in upto], "closed_form": [],
                                         "signature": []}
    for j in upto:
        dm = S_of(edited.trajectories["gd"][0][j]) - S_of(baseline.trajectories["gd"][0][j])
        dc = (S_of(edited.trajectories["closed_form"][0][j]) - S_of(baseline.trajectories["closed_form"][0][j]))
        over_time["closed_form"].append(pearson(offdiagonal(dm), offdiagonal(dc)))
        over_time["signature"].append(pearson(offdiagonal(dm), offdiagonal(delta_predicted["signature"])))

    k, q = cfg.topk, cfg.strong_pair_percent
    metrics: dict[str, Any] = {
        "experiment": "intervene",
        "edits": list(config.edits),
        "compare_time": t,
        "compare_growth": float(baseline.growth[i]),
        "mean_abs_delta_measured": float(np.mean(np.abs(offdiagonal(delta_measured)))),
        "delta_vs_prediction": {name: _delta_stats(delta_measured, p) for name, p in delta_predicted.items()},
        "delta_correlation_over_time": over_time,
        "baseline": {key: baseline.metrics[key] for key in ("final_loss", "escape_time_predicted",
                                                            "escape_time_measured", "closed_form_rel_err")},
        "edited": {key: edited.metrics[key] for key in ("final_loss", "escape_time_predicted",
                                                        "escape_time_measured", "closed_form_rel_err")},
        "alignment_baseline": alignment_metrics(S_of(E_b), baseline.signature_sim, k=k, q=q),
        "alignment_edited": alignment_metrics(S_of(E_e), edited.signature_sim, k=k, q=q),
    }
    return InterventionResult(config, baseline, edited, i, delta_measured, delta_predicted, metrics)


def write_intervention_report(result: InterventionResult, out_dir: Path) -> list[Path]:
    """Save the E2 figures and ``arrays.npz`` into ``out_dir``; returns the figure paths."""
    b, e, i = result.baseline, result.edited, result.compare_index
    keys = b.keys
    labels = [str(k) for k in keys]
    t = result.metrics["compare_time"]
    figs = [plots.plot_curves(out_dir / "loss.png", {"baseline (gradient descent)": (b.times, b.losses["gradient descent"]),
                                                          "edited (gradient descent)": (e.times, e.losses["gradient descent"])},
                                   logy=False, vline=t, vline_label="comparison time")]
    span = max(float(np.max(np.abs(m))) for m in (*result.delta_predicted.values(), result.delta_measured)) or 1.0
    figs.append(plots.plot_similarity_heatmaps(
        out_dir / "delta_similarity_heatmaps.png",
        {"Delta signature similarity": result.delta_predicted["signature"],
         f"Delta S_E predicted (closed form), t={t:.0f}": result.delta_predicted["closed_form"],
         f"Delta S_E measured (gradient descent), t={t:.0f}": result.delta_measured},
        labels, title="edited minus baseline: key similarity", vmin=-span, vmax=span))
    stats = result.metrics["delta_vs_prediction"]["closed_form"]
    figs.append(plots.plot_similarity_scatter(
        out_dir / "delta_scatter.png", offdiagonal(result.delta_predicted["closed_form"]), offdiagonal(result.delta_measured),
        xlabel="predicted Delta S_E (closed form)", ylabel="measured Delta S_E (gradient descent)",
        stats={"pearson": stats["pearson"], "spearman": stats["spearman"], "rel_err": stats["rel_err"]}))
    figs.append(plots.plot_similarity_heatmaps(
        out_dir / "similarity_heatmaps.png",
        {"baseline signature": b.signature_sim, "edited signature": e.signature_sim,
         f"baseline embedding, t={t:.0f}": embedding_similarity(b.trajectories["gd"][0][i], keys, b.task.train.vocab_size,
                                                                 b.config.positional),
         f"edited embedding, t={t:.0f}": embedding_similarity(e.trajectories["gd"][0][i], keys, e.task.train.vocab_size,
                                                               e.config.positional)},
        labels, title="key tokens: signature vs embedding cosine similarity"))
    ot = result.metrics["delta_correlation_over_time"]
    figs.append(plots.plot_curves(
        out_dir / "delta_correlation_over_time.png",
        {"Pearson(measured, closed form)": (np.asarray(ot["time"]), np.asarray(ot["closed_form"])),
         "Pearson(measured, Delta signature)": (np.asarray(ot["time"]), np.asarray(ot["signature"]))},
        logy=False, ylabel="Pearson of Delta S_E", vline=t, vline_label="comparison time"))
    np.savez_compressed(out_dir / "arrays.npz", keys=keys, times=b.times, delta_measured=result.delta_measured,
                        **{f"delta_predicted_{k}": v for k, v in result.delta_predicted.items()},
                        M_baseline=b.M, M_edited=e.M)
    return figs
