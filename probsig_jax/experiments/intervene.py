"""E2: edit the data distribution, predict the change of the key-embedding geometry, then measure it.

A baseline task and an edited one (typed :class:`~probsig_jax.data.DataEdit` edits of the composite
addition config) are trained from the *same* initialisation. The change of the key-embedding cosine
similarity ``Delta S_E = S_E(edited) - S_E(baseline)`` at the comparison time is set beside three
predictions made from the data alone:

* ``expected_gram``: the closed form averaged over random initialisations (``predicted_embedding_gram``) —
  the prediction that needs no initialisation, the informative one;
* ``closed_form``: the linearised closed form of PAPER section 4 for both tasks, from the same ``(E0, U0)``
  — its near-perfect agreement restates E1 (the closed form tracks gradient descent to 0.5 %);
* ``signature``: the change of the signature similarity ``Delta S_P`` itself.

Each task is generated once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from probsig_jax.analysis import plots
from probsig_jax.analysis.alignment import AlignmentConfig, compare_one, similarity_from_gram
from probsig_jax.analysis.significance import bootstrap_correlations, bootstrap_interval, mantel_test
from probsig_jax.analysis.metrics import offdiagonal, pearson, spearman
from probsig_jax.config_base import Config
from probsig_jax.data import (CompositeAdditionConfig, DataEdit, apply_edits, make_composite_addition,
                              vocabulary_size)
from probsig_jax.experiments import Experiment
from probsig_jax.experiments.linear import LinearExperimentConfig, LinearTheoryResult, run_linear_theory
from probsig_jax.experiments.report import with_interval
from probsig_jax.models.linear import token_gram
from probsig_jax.theory import linear as theory
from probsig_jax.validation import ConfigError, require

DEFAULT_EDITS: tuple[DataEdit, ...] = (DataEdit("anchor_weights", (4.0, 1.0, 1.0, 1.0)),)


@dataclass(frozen=True)
class InterventionConfig(Config):
    """E2: the E1 setting (``base``) and the data edits that give the edited task.

    ``resolved()`` computes ``edited_data``: the edits applied to ``edited_data``, or to the base data when it
    is None, seeded with the base seed.
    """

    base: LinearExperimentConfig = field(default_factory=LinearExperimentConfig)
    edits: tuple[DataEdit, ...] = field(default=DEFAULT_EDITS, metadata={"option": "edit", "repeat": True})
    """Edit of the data config giving the edited task, FIELD=VALUE (repeatable), e.g. anchor_weights=4,1,1,1,
    label_noise=0.2, held_out=4, relabel=3=-6."""
    edited_data: CompositeAdditionConfig | None = None
    """The edited data config (from Python, e.g. ``base.data.replace(...)``; None: the base data); the
    ``edits`` are applied on top of it."""

    derived_fields = ("edited_data",)

    @property
    def seed(self) -> int:
        return self.base.seed

    def resolved(self) -> "InterventionConfig":
        base = self.base.resolved()
        edited = apply_edits(self.edited_data if self.edited_data is not None else base.data, self.edits)
        edited = edited.replace(seed=base.seed)
        if edited == base.data:
            raise ConfigError("edit", f"the edits {[str(e) for e in self.edits]} leave the data config unchanged")
        return self.replace(base=base, edited_data=edited)

    def task_configs(self) -> tuple[LinearExperimentConfig, LinearExperimentConfig]:
        """The E1 configs of the baseline and the edited task, with one vocabulary size (``vocab_size`` 0
        becomes the larger of the two tasks' own), so that both models start from the same (E0, U0)."""
        resolved = self.resolved()
        base, edited = resolved.base.data, resolved.edited_data
        if base.vocab_size == 0 or edited.vocab_size == 0:
            v = max(vocabulary_size(base), vocabulary_size(edited))
            base, edited = base.replace(vocab_size=base.vocab_size or v), edited.replace(vocab_size=edited.vocab_size or v)
        require(base.vocab_size == edited.vocab_size, "vocab_size",
                f"baseline and edited tasks need the same vocabulary size, got {base.vocab_size} and "
                f"{edited.vocab_size}")
        return resolved.base.replace(data=base), resolved.base.replace(data=edited)

    def _check(self) -> None:
        require(len(self.edits) > 0 or self.edited_data is not None, "edit",
                "give at least one FIELD=VALUE edit of the data config (or edited_data)")
        require(self.edited_data is not None, "edited_data", "is unresolved: call resolved() before validate()")


@dataclass
class InterventionResult:
    config: InterventionConfig
    baseline: LinearTheoryResult
    edited: LinearTheoryResult
    compare_index: int
    delta_measured: np.ndarray
    delta_predicted: dict[str, np.ndarray]
    metrics: dict[str, Any]


def _delta_stats(measured: np.ndarray, predicted: np.ndarray, alignment: AlignmentConfig) -> dict[str, float]:
    """Pearson / Spearman / relative error of a predicted vs the measured change, with the Pearson's Mantel
    p-value and token-bootstrap interval (``alignment``'s counts)."""
    m, p = offdiagonal(measured), offdiagonal(predicted)
    stats = {
        "pearson": pearson(m, p),
        "spearman": spearman(m, p),
        "rel_err": float(np.linalg.norm(m - p) / max(np.linalg.norm(m), 1e-300)),
        "mean_abs_predicted": float(np.mean(np.abs(p))),
    }
    if alignment.permutations and np.ptp(p) > 0:
        stats["pearson_p"] = mantel_test(measured, predicted, permutations=alignment.permutations,
                                         seed=alignment.statistics_seed)["p"]
    if alignment.bootstrap and np.ptp(p) > 0:
        samples = bootstrap_correlations([measured, predicted], resamples=alignment.bootstrap,
                                         seed=alignment.statistics_seed)[:, 0, 1]
        stats["pearson_ci_low"], stats["pearson_ci_high"] = bootstrap_interval(samples, alignment.confidence)
    return stats


def _check_tasks(config: InterventionConfig, base_task, edited_task) -> None:
    """The edits must keep the key set and change the signature matrix (else both runs are the same)."""
    if not np.array_equal(base_task.keys, edited_task.keys):
        raise ConfigError("edit", "the edits changed the key tokens; Delta S_E is compared over one key set "
                          "(edit weights, anchors, noise or held-out combinations instead)")
    from probsig_jax.signatures import signature_matrix

    M_base = signature_matrix(base_task.train, config.base.positional)
    M_edit = signature_matrix(edited_task.train, config.base.positional)
    if M_base.shape == M_edit.shape and np.allclose(M_base, M_edit, rtol=0, atol=1e-12):
        raise ConfigError("edit", f"the edits {[str(e) for e in config.edits]} leave the signature matrix M "
                          "unchanged, so the baseline and edited runs would be identical")


def run_intervention(config: InterventionConfig, *, quiet: bool = False) -> InterventionResult:
    """Train baseline and edited tasks from one initialisation; predicted vs measured change of S_E."""
    config = config.resolved().validate()
    base_cfg, edit_cfg = config.task_configs()
    base_task, edited_task = make_composite_addition(base_cfg.data), make_composite_addition(edit_cfg.data)
    _check_tasks(config, base_task, edited_task)
    baseline = run_linear_theory(base_cfg, quiet=quiet, task=base_task)
    edited = run_linear_theory(edit_cfg, quiet=quiet, task=edited_task)
    if not np.array_equal(baseline.keys, edited.keys):
        raise ConfigError("edit", "the edits changed the key tokens seen in training; Delta S_E is compared over "
                          "one key set")
    V, pos, cfg = baseline.task.train.vocab_size, base_cfg.positional, base_cfg
    i = baseline.alignment_index
    t = float(baseline.times[i])
    S_of = baseline.key_similarity

    E_b, E_e = baseline.trajectories["gd"][0][i], edited.trajectories["gd"][0][i]
    delta_measured = S_of(E_e) - S_of(E_b)
    gram = {name: token_gram(np.asarray(theory.predicted_embedding_gram(r.M, t, cfg.init_scale, cfg.dim)), V, pos)
            for name, r in (("b", baseline), ("e", edited))}
    keys = baseline.keys
    # The initialisation-free prediction leads: the closed form from the same (E0, U0) restates E1's
    # closed-form accuracy (it tracks gradient descent to 0.5 %), so its agreement is expected.
    delta_predicted = {
        "expected_gram": similarity_from_gram(gram["e"], keys) - similarity_from_gram(gram["b"], keys),
        "closed_form": S_of(edited.trajectories["closed_form"][0][i]) - S_of(baseline.trajectories["closed_form"][0][i]),
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

    summary_keys = ("final_loss", "escape_time_predicted", "escape_time_measured", "closed_form_rel_err")
    metrics: dict[str, Any] = {
        "experiment": "intervene",
        "edits": [str(e) for e in config.edits],
        "compare_time": t,
        "compare_growth": float(baseline.growth[i]),
        "mean_abs_delta_measured": float(np.mean(np.abs(offdiagonal(delta_measured)))),
        "delta_vs_prediction": {name: _delta_stats(delta_measured, p, cfg.alignment)
                                for name, p in delta_predicted.items()},
        "delta_correlation_over_time": over_time,
        "baseline": {key: baseline.metrics[key] for key in summary_keys},
        "edited": {key: edited.metrics[key] for key in summary_keys},
        "alignment_baseline": compare_one(S_of(E_b), baseline.signature_sim, cfg.alignment),
        "alignment_edited": compare_one(S_of(E_e), edited.signature_sim, cfg.alignment),
    }
    return InterventionResult(config, baseline, edited, i, delta_measured, delta_predicted, metrics)


def write_intervention_outputs(result: InterventionResult, out_dir: Path) -> list[Path]:
    """Save the E2 figures and ``arrays.npz`` into ``out_dir``; returns the figure paths."""
    b, e, i = result.baseline, result.edited, result.compare_index
    labels = list(b.signatures.keys.labels)
    t = result.metrics["compare_time"]
    compared = {"comparison time": t}
    figs = [plots.save(plots.plot_curves({"baseline (gradient descent)": (b.times, b.losses["gradient descent"]),
                                          "edited (gradient descent)": (e.times, e.losses["gradient descent"])},
                                         logy=False, vlines=compared), out_dir / "loss.png")]
    span = max(float(np.max(np.abs(m))) for m in (*result.delta_predicted.values(), result.delta_measured)) or 1.0
    figs.append(plots.save(plots.plot_similarity_heatmaps(
        {"Delta signature similarity": result.delta_predicted["signature"],
         f"Delta S_E predicted (closed form), t={t:.0f}": result.delta_predicted["closed_form"],
         f"Delta S_E measured (gradient descent), t={t:.0f}": result.delta_measured},
        labels, title="edited minus baseline: key similarity", vmin=-span, vmax=span, cmap="PuOr_r",
        colorbar="edited minus baseline"), out_dir / "delta_similarity_heatmaps.png"))
    stats = result.metrics["delta_vs_prediction"]["closed_form"]
    figs.append(plots.save(plots.plot_similarity_scatter(
        offdiagonal(result.delta_predicted["closed_form"]), offdiagonal(result.delta_measured),
        xlabel="predicted Delta S_E (closed form)", ylabel="measured Delta S_E (gradient descent)", diagonal=True,
        stats={"pearson": stats["pearson"], "spearman": stats["spearman"], "rel_err": stats["rel_err"]}),
        out_dir / "delta_scatter.png"))
    figs.append(plots.save(plots.plot_similarity_heatmaps(
        {"baseline signature": b.signature_sim, "edited signature": e.signature_sim,
         f"baseline embedding, t={t:.0f}": b.key_similarity(b.trajectories["gd"][0][i]),
         f"edited embedding, t={t:.0f}": e.key_similarity(e.trajectories["gd"][0][i])},
        labels, title="key tokens: signature vs embedding cosine similarity"), out_dir / "similarity_heatmaps.png"))
    ot = result.metrics["delta_correlation_over_time"]
    figs.append(plots.save(plots.plot_curves(
        {"Pearson(measured, closed form)": (np.asarray(ot["time"]), np.asarray(ot["closed_form"])),
         "Pearson(measured, Delta signature)": (np.asarray(ot["time"]), np.asarray(ot["signature"]))},
        logy=False, ylabel="Pearson of Delta S_E", vlines=compared), out_dir / "delta_correlation_over_time.png"))
    np.savez_compressed(out_dir / "arrays.npz", keys=b.keys, times=b.times, delta_measured=result.delta_measured,
                        **{f"delta_predicted_{k}": v for k, v in result.delta_predicted.items()},
                        M_baseline=b.M, M_edited=e.M)
    return figs


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    lines = [f"edits: {', '.join(metrics['edits'])}; compared at t={metrics['compare_time']:.0f}",
             f"mean |Delta S_E| measured: {metrics['mean_abs_delta_measured']:.4f}"]
    what = {"expected_gram": "the initialisation-free prediction (expected Gram, data only)",
            "closed_form": "the closed form from the same initialisation (restates E1's closed-form accuracy)",
            "signature": "the change of signature similarity"}
    for name, s in metrics["delta_vs_prediction"].items():
        lines.append(f"Delta S_E measured vs {what.get(name, name)}: Pearson {with_interval(s, 'pearson')}, "
                     f"rel. error {s['rel_err']:.3f}")
    return lines


EXPERIMENT = Experiment(
    name="intervene", title="E2: intervention on the data distribution, predicted vs measured embedding change",
    config_class=InterventionConfig, run=lambda config, ctx: run_intervention(config, quiet=ctx.quiet),
    write_outputs=write_intervention_outputs, summary=summary_lines)
