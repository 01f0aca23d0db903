"""E4's intervention: edit the corpus, predict the change of the embedding geometry from the counts alone, then
train a baseline and an edited Qwen2 model from one initialisation and batch order and measure the change.

Pipeline (:func:`run_llm_edit`): corpus -> tokenizer ids -> the edit (:mod:`probsig_jax.corpus.edits`; by
default a planted cluster of ``cluster_size`` tokens of mid frequency, drawn by ``edit_seed``), applied at each
fraction of ``fractions`` -> one vocabulary for every stream (so every model has the same rows and the same
initialisation) -> the windowed counts of each training stream -> the predicted change of similarity, before any
training:

* ``theory``: :func:`~probsig_jax.theory.corpus.predicted_similarity_change`, the linear theory's learned Gram of
  the edited counts minus the baseline's (rank and growth of ``base.analysis``). At these settings it is the
  change of the truncated centred-signature cosine (E4's "by construction" note), so it and ``signature`` are
  two readings of one quantity, not independent evidence;
* ``signature``: the change of the signature cosine itself (phi_next for W_E, phi_pre for W_U);

-> the trainings (same seed, so the same initial weights and the same window positions in each stream) -> the
measured change ``Delta S = S(edited model) - S(baseline model)`` of the measured tokens (the top-N tokens of the
baseline, the edited tokens and the cluster's successors) at every evaluation -> :func:`edit_effect` scores
on the affected pairs, with the untouched pairs as the null (:mod:`probsig_jax.analysis.edit_effect`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from probsig_jax.analysis import plots
from probsig_jax.analysis.edit_effect import edit_effect, pair_classes, pearson_over
from probsig_jax.analysis.metrics import cosine_similarity_matrix
from probsig_jax.config_base import Config
from probsig_jax.corpus import VocabularyMap
from probsig_jax.corpus.edits import CorpusEdit, EditedStream, apply_corpus_edit, choose_cluster_tokens
from probsig_jax.experiments import Experiment
from probsig_jax.experiments.llm import LLMExperimentConfig, corpus_record, load_corpus_stream, split_model_stream
from probsig_jax.models.qwen2 import Qwen2LM
from probsig_jax.signatures.corpus import count_context_pairs, signature_similarity, top_tokens
from probsig_jax.theory.corpus import predicted_similarity_change, signature_modes_for_rank
from probsig_jax.training.lm_loop import train_language_model
from probsig_jax.training.token_windows import TokenWindows
from probsig_jax.validation import require, require_float, require_int, require_seed

SIDES = {"embedding": ("input", "W_E"), "unembedding": ("output", "W_U")}
"""Model side -> (signature side, weight name)."""
PREDICTORS = ("theory", "signature")


def edit_training_defaults() -> LLMExperimentConfig:
    """E4's model and corpus, trained for 300 AdamW steps (E4: 600), evaluated every 100 and checkpointed at the end.

    Three seeds of the default edit (six trainings) then take 10 min on an idle 2-core CPU (README), and the
    planted W_E change was larger at 300 steps than at 600 (0.56 vs 0.40, 3 seeds each; README).
    ``--total-steps 600 --eval-every 50 --checkpoint-every 100`` gives E4's run.
    """
    e4 = LLMExperimentConfig()
    return e4.replace(train=e4.train.replace(total_steps=300),
                      run=e4.run.replace(eval_every=100, checkpoint_every=0))


@dataclass(frozen=True)
class LLMEditConfig(Config):
    """E4 intervention: baseline vs edited corpus, predicted vs measured change of W_E / W_U similarity.

    ``seed`` seeds the initialisation and the batch order of every training (``resolved()`` copies it into
    ``base``); the edit has its own ``edit_seed``, so a multi-seed run repeats the trainings of one edit.
    """

    base: LLMExperimentConfig = field(default_factory=edit_training_defaults)
    edit_kind: Literal["cluster", "transplant", "swap"] = "cluster"
    """The edit (corpus.edits): a planted cluster, a transplant of B's successors into A, or a swap of A and B."""
    edit_tokens: tuple[int, ...] = ()
    """Tokenizer ids of the edit; empty for cluster: ``cluster_size`` tokens drawn by ``edit_seed`` among the
    frequency ranks ``cluster_ranks``."""
    cluster_size: int = 8
    """cluster with no edit_tokens: the number of tokens drawn."""
    cluster_ranks: tuple[int, ...] = (20, 100)
    """cluster with no edit_tokens: the half-open range [lo, hi) of frequency ranks the tokens are drawn from."""
    edit_targets: int = 8
    """cluster: the number of successor tokens the shared next-token distribution is uniform over."""
    edit_target_ranks: tuple[int, ...] = (100, 300)
    """cluster: the frequency ranks [lo, hi) the successors are drawn from (empty: corpus.edits' mid-frequency
    quartiles, which on a large vocabulary are rare tokens whose unembeddings start out nearly parallel)."""
    fractions: tuple[float, ...] = (1.0,)
    """The edit sizes f, one edited training each (e.g. 0.1,0.3,1 for the sweep)."""
    edit_seed: int = 0
    """Seed of the cluster's tokens, of its successors and of the edited positions."""
    seed: int = 0
    """Seed of the initialisation and of the batch order (shared by the baseline and every edited training)."""

    derived_fields = ("base.seed", "base.edit")

    def resolved(self) -> "LLMEditConfig":
        return self.replace(base=self.base.replace(seed=self.seed).resolved())

    def _check(self) -> None:
        require_seed(self.seed)
        require_seed(self.edit_seed, "edit_seed")
        require(self.edit_kind in ("cluster", "transplant", "swap"), "edit_kind",
                f"must be cluster, transplant or swap, got {self.edit_kind!r}")
        require_int(self.cluster_size, "cluster_size", minimum=2, maximum=10_000)
        require(len(self.cluster_ranks) == 2 and 0 <= self.cluster_ranks[0] < self.cluster_ranks[1], "cluster_ranks",
                f"must be two ranks lo,hi with 0 <= lo < hi, got {self.cluster_ranks}")
        require_int(self.edit_targets, "edit_targets", minimum=1, maximum=100_000)
        require(len(self.fractions) >= 1 and len(set(self.fractions)) == len(self.fractions), "fractions",
                f"must be one or more distinct edit sizes, got {self.fractions}")
        for f in self.fractions:
            require_float(f, "fractions", minimum=0.0, maximum=1.0, strict_minimum=True)
        require(self.edit_kind == "cluster" or len(self.edit_tokens) == 2, "edit_tokens",
                f"{self.edit_kind} takes two tokens A,B, got {self.edit_tokens}")
        require(self.base.edit.kind == "none", "edit", "the edit is set by this experiment's edit_* fields")

    def edits(self, stream: np.ndarray, exclude: tuple[int, ...] = ()) -> list[CorpusEdit]:
        """The edit at each fraction, with the cluster's tokens drawn from ``stream`` when none are given."""
        tokens = self.edit_tokens
        if self.edit_kind == "cluster" and not tokens:
            tokens = choose_cluster_tokens(stream, self.cluster_size, tuple(self.cluster_ranks), self.edit_seed,
                                           exclude=exclude)
        return [CorpusEdit(kind=self.edit_kind, tokens=tuple(tokens), fraction=f, targets=self.edit_targets,
                           target_ranks=tuple(self.edit_target_ranks), seed=self.edit_seed).validate()
                for f in self.fractions]


@dataclass
class LLMEditResult:
    config: LLMEditConfig
    metrics: dict[str, Any]
    labels: list[str]                                   # the measured tokens' strings
    predicted: dict[str, dict[str, dict[str, np.ndarray]]]  # run -> side -> predictor -> (n, n)
    measured: dict[str, dict[str, np.ndarray]]          # run -> side -> (n, n) final Delta S
    classes: dict[str, dict[str, np.ndarray]]           # side -> pair class -> (n, n) mask
    losses: dict[str, tuple[np.ndarray, np.ndarray]]    # training -> (steps, train loss)


def _run_name(f: float) -> str:
    return f"f={f:g}"


def _planted_tokens(edited: EditedStream, side: str) -> np.ndarray:
    """Tokenizer ids whose ``side`` signature the edit targets (module docstring of analysis.edit_effect)."""
    if side == "embedding" or edited.edit.kind == "swap":
        return np.asarray(edited.affected, np.int64)
    return np.asarray(edited.details.get("cluster_targets", []), np.int64)


def _touched_tokens(edited: EditedStream) -> np.ndarray:
    return np.unique(np.concatenate([np.asarray(edited.edit.tokens, np.int64),
                                     np.asarray(edited.details.get("cluster_targets", []), np.int64)]))


def run_llm_edit(config: LLMEditConfig, *, work_dir: str | Path | None = None, quiet: bool = False) -> LLMEditResult:
    """Run the intervention (module docstring). ``work_dir`` makes each training resumable (one subdirectory each)."""
    config = config.resolved().validate()
    base = config.base
    timing, tic = {}, time.perf_counter()
    tokenizer, shards, stream = load_corpus_stream(base, quiet=quiet)
    edits = config.edits(stream, exclude=(tokenizer.eos_id,))
    edited = {_run_name(e.fraction): apply_corpus_edit(stream, e) for e in edits}
    streams = {"baseline": stream, **{name: e.tokens for name, e in edited.items()}}
    vocab_map = (VocabularyMap.from_tokens(streams.values(), tokenizer.vocab_size, always_keep=[tokenizer.eos_id])
                 if base.compact_vocab else VocabularyMap.identity(tokenizer.vocab_size))
    V = vocab_map.size
    split = {name: split_model_stream(base, vocab_map.to_compact(s)) for name, s in streams.items()}
    counts = {name: count_context_pairs(train, V, base.analysis.window, quiet=quiet)
              for name, (train, _) in split.items()}
    timing["tokenize_edit_count"], tic = time.perf_counter() - tic, time.perf_counter()

    # The measured tokens: the baseline's top-N, then the edit's tokens; all with a signature on both sides of
    # every stream.
    some_edit = next(iter(edited.values()))
    eos = [int(i) for i in vocab_map.to_compact(np.asarray([tokenizer.eos_id]))] if vocab_map.contains(
        np.asarray([tokenizer.eos_id]))[0] else []
    named = vocab_map.to_compact(_touched_tokens(some_edit))
    ids = np.asarray(list(dict.fromkeys([*top_tokens(counts["baseline"], base.alignment.top_tokens, exclude=eos),
                                         *named.tolist()])), np.int64)
    ok = np.all([(pc.context_weights[ids] > 0) & (pc.label_counts[ids] > 0) for pc in counts.values()], axis=0)
    ids = ids[ok]
    require(np.isin(named, ids).all(), "edit_tokens",
            "every edited token must occur as context and as label in every stream; choose other tokens or ranks")
    original = vocab_map.to_original(ids)
    labels = list(tokenizer.token_strings(original.tolist()))
    n = ids.size
    classes = {side: pair_classes(n, np.isin(original, _planted_tokens(some_edit, side)),
                                  np.isin(original, _touched_tokens(some_edit))) for side in SIDES}

    predicted: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    a = base.analysis
    modes = {name: signature_modes_for_rank(pc, a.theory_rank, method=a.theory_svd) for name, pc in counts.items()}
    for name in edited:
        predicted[name] = {}
        for side, (sig_side, _) in SIDES.items():
            predicted[name][side] = {
                "theory": predicted_similarity_change(counts["baseline"], counts[name], ids, rank=a.theory_rank,
                                                      growth=a.theory_growth, side=side,
                                                      modes=(modes["baseline"], modes[name])),
                "signature": (signature_similarity(counts[name], ids, side=sig_side, kind="cosine")
                              - signature_similarity(counts["baseline"], ids, side=sig_side, kind="cosine"))}

    timing["predictions"], tic = time.perf_counter() - tic, time.perf_counter()
    model_config = base.model_config(V)
    trainings = {}
    for name, (train_ids, eval_ids) in split.items():
        snapshots: dict[int, dict[str, np.ndarray]] = {}

        def evaluate(step: int, model, snapshots=snapshots) -> dict[str, Any]:
            rows = {"embedding": np.asarray(model.input_embeddings())[ids],
                    "unembedding": np.asarray(model.output_embeddings())[ids]}
            snapshots[step] = {side: cosine_similarity_matrix(r.astype(np.float64)) for side, r in rows.items()}
            return {}

        result = train_language_model(
            lambda rngs: Qwen2LM(model_config, rngs=rngs), base.train, base.run,
            TokenWindows(train_ids, base.run.seq_len), TokenWindows(eval_ids, base.run.seq_len),
            run_record={"model": model_config, "experiment": "llm-edit", "stream": name},
            checkpoint_dir=None if work_dir is None else Path(work_dir) / name.replace("=", "_"),
            evaluate=evaluate, quiet=quiet)
        trainings[name] = (result, snapshots)
    metrics = _edit_metrics(config, edited, predicted, trainings, classes, labels, original)
    timing["train"] = time.perf_counter() - tic
    metrics["timing_s"] = timing
    metrics["corpus"] = corpus_record(base, shards, stream)
    metrics["vocabulary"] = {"tokenizer": tokenizer.name, "model_vocab": V, "measured_tokens": int(n)}
    metrics["model"] = {"attention_impl": model_config.attention_impl, "dense_impl": model_config.dense_impl}
    b_steps = sorted(trainings["baseline"][1])
    measured = {name: {side: trainings[name][1][b_steps[-1]][side] - trainings["baseline"][1][b_steps[-1]][side]
                       for side in SIDES} for name in edited}
    losses = {name: (np.asarray(r.history["step"], float) + 1, np.asarray(r.history["loss"]))
              for name, (r, _) in trainings.items()}
    return LLMEditResult(config, metrics, labels, predicted, measured, classes, losses)


def _edit_metrics(config: LLMEditConfig, edited: dict[str, EditedStream], predicted, trainings, classes,
                  labels: list[str], original: np.ndarray) -> dict[str, Any]:
    base_result, base_snaps = trainings["baseline"]
    steps = sorted(base_snaps)
    alignment = config.base.alignment
    runs: dict[str, Any] = {}
    for name, e in edited.items():
        result, snaps = trainings[name]
        final = {side: snaps[steps[-1]][side] - base_snaps[steps[-1]][side] for side in SIDES}
        scores = {side: {p: edit_effect(predicted[name][side][p], final[side], classes[side],
                                        permutations=alignment.permutations or 999, seed=alignment.statistics_seed)
                         for p in PREDICTORS} for side in SIDES if classes[side]["affected"].any()}
        over_time = {"step": steps}
        for side in scores:
            deltas = [snaps[s][side] - base_snaps[s][side] for s in steps]
            over_time[f"{side}_planted_mean"] = [float(d[classes[side]["planted"]].mean()) for d in deltas]
            over_time[f"{side}_untouched_mean_abs"] = [float(np.abs(d[classes[side]["untouched"]]).mean())
                                                      for d in deltas]
            over_time[f"{side}_pearson_theory"] = [pearson_over(predicted[name][side]["theory"], d,
                                                                classes[side]["affected"]) for d in deltas]
        record = e.record()
        record.pop("per_token", None)
        # The planted pairs' similarity in each final model: 1 - baseline is the most the change can be.
        planted_similarity = {side: {run: float(snap[steps[-1]][side][classes[side]["planted"]].mean())
                                     for run, snap in (("baseline", base_snaps), ("edited", snaps))}
                              for side in scores}
        runs[name] = {"fraction": e.edit.fraction, "edit": record, "scores": scores, "over_time": over_time,
                      "planted_similarity": planted_similarity,
                      "final_train_loss": float(np.mean(result.history["loss"][-10:])),
                      "final_eval_loss": result.evals[-1].get("eval_loss") if result.evals else None}
    planted_tokens = {side: [labels[i] for i in np.flatnonzero(np.isin(original, _planted_tokens(e, side)))]
                      for side in SIDES}
    return {"experiment": "llm-edit", "edit_kind": config.edit_kind,
            "edit_tokens": [int(t) for t in next(iter(edited.values())).edit.tokens],
            "planted_tokens": planted_tokens, "runs": runs,
            "baseline": {"final_train_loss": float(np.mean(base_result.history["loss"][-10:])),
                         "final_eval_loss": base_result.evals[-1].get("eval_loss") if base_result.evals else None},
            "sweep": _sweep(runs)}


def _sweep(runs: dict[str, Any]) -> dict[str, list]:
    """Planted-pair mean change, predicted (theory) and measured, against the edit size f, per side."""
    out: dict[str, list] = {"fraction": [r["fraction"] for r in runs.values()]}
    for side in SIDES:
        rows = [r["scores"].get(side, {}).get("theory", {}).get("planted") for r in runs.values()]
        if all(rows):
            out[f"{side}_predicted"] = [r["predicted_mean"] for r in rows]
            out[f"{side}_measured"] = [r["measured_mean"] for r in rows]
    return out


def write_llm_edit_outputs(result: LLMEditResult, out: Path) -> list[Path]:
    """Figures (losses, Delta heatmaps, predicted-vs-measured scatter, over training, the sweep) and ``arrays.npz``."""
    figures = [plots.save(plots.plot_curves({name: c for name, c in result.losses.items()}, xlabel="step",
                                            ylabel="train loss (nats)"), out / "loss.png")]
    arrays: dict[str, np.ndarray] = {}
    for name in result.measured:
        tag = name.replace("=", "")
        for side in result.measured[name]:
            if not result.classes[side]["affected"].any():
                continue
            c, meas, pred = result.classes[side], result.measured[name][side], result.predicted[name][side]
            touched = np.flatnonzero(c["affected"].any(0) | c["affected"].any(1))
            show = np.unique(np.concatenate([touched, np.arange(min(len(result.labels), 12))]))
            span = float(max(np.abs(meas[np.ix_(show, show)]).max(), np.abs(pred["theory"]).max())) or 1.0
            figures.append(plots.save(plots.plot_similarity_heatmaps(
                {"predicted Delta (theory, counts only)": pred["theory"][np.ix_(show, show)],
                 "predicted Delta (signature cosine)": pred["signature"][np.ix_(show, show)],
                 "measured Delta (edited - baseline model)": meas[np.ix_(show, show)]},
                [result.labels[i] for i in show], title=f"{side}, {name}: edited minus baseline similarity",
                vmin=-span, vmax=span, cmap="PuOr_r", colorbar="edited minus baseline"),
                out / f"delta_heatmaps_{side}_{tag}.png"))
            s = result.metrics["runs"][name]["scores"][side]["theory"]
            ax = plots.plot_similarity_scatter(pred["theory"][c["untouched"]], meas[c["untouched"]],
                                               xlabel="predicted Delta S (theory)", ylabel="measured Delta S",
                                               label="untouched pairs (null)")
            plots.plot_similarity_scatter(pred["theory"][c["affected"]], meas[c["affected"]], ax=ax,
                                          xlabel="predicted Delta S (theory)", ylabel="measured Delta S",
                                          label="affected pairs", diagonal=True,
                                          stats={"Pearson (affected)": s["affected"]["pearson"],
                                                 "sign agreement": s["affected"]["sign_agreement"]})
            figures.append(plots.save(ax, out / f"delta_scatter_{side}_{tag}.png"))
            arrays[f"measured_{side}_{tag}"] = meas
            arrays.update({f"predicted_{p}_{side}_{tag}": v for p, v in pred.items()})
        ot = result.metrics["runs"][name]["over_time"]
        steps = np.asarray(ot["step"], float)
        curves = {k.replace("_", " "): (steps, np.asarray(v, float)) for k, v in ot.items()
                  if k != "step" and not k.endswith("pearson_theory")}
        figures.append(plots.save(plots.plot_curves(curves, xlabel="step", ylabel="Delta S", logy=False, marker="o",
                                                    title=f"{name}: planted pairs vs the untouched null"),
                                  out / f"delta_over_training_{tag}.png"))
    sweep = result.metrics["sweep"]
    if len(sweep["fraction"]) > 1:
        f = np.asarray(sweep["fraction"], float)
        curves = {f"{side} {kind}": (f, np.asarray(sweep[f"{side}_{kind}"], float))
                  for side in SIDES for kind in ("predicted", "measured") if f"{side}_{kind}" in sweep}
        figures.append(plots.save(plots.plot_curves(curves, xlabel="edit size f", ylabel="planted-pair mean Delta S",
                                                    logy=False, marker="o"), out / "edit_size_sweep.png"))
    for name, c in result.classes["embedding"].items():
        arrays[f"pairs_{name}"] = c
    np.savez_compressed(out / "arrays.npz", labels=np.asarray(result.labels), **arrays)
    return figures


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    lines = [f"edit: {next(iter(metrics['runs'].values()))['edit']['description']}; planted (W_E side): "
             f"{', '.join(map(repr, metrics['planted_tokens']['embedding']))}"]
    for name, run in metrics["runs"].items():
        for side, by_predictor in run["scores"].items():
            s = by_predictor["theory"]
            a, p, u = s["affected"], s.get("planted", {}), s["untouched"]
            if a.get("pearson") is None:
                continue
            sim = run["planted_similarity"][side]
            lines.append(
                f"{name} {SIDES[side][1]}: planted pairs Delta S predicted {p.get('predicted_mean', float('nan')):.3f}, "
                f"measured {p.get('measured_mean', float('nan')):.3f} (their similarity {sim['baseline']:.3f} in the "
                f"baseline model, {sim['edited']:.3f} edited; untouched null {u['mean']:.3f} +- "
                f"{u['std']:.3f}, z = {s.get('separation', {}).get('z', float('nan')):.1f}); affected pairs "
                f"({s['pairs']['affected']}): Pearson {a['pearson']:.3f} (null q97.5 {a['r_null_q975']:.3f}), "
                f"sign agreement {a['sign_agreement']:.3f} (null {a['sign_agreement_null']:.3f})")
    return lines


EXPERIMENT = Experiment(
    name="llm-edit", title="E4 intervention: edit the corpus, predict the embedding change, train and measure",
    config_class=LLMEditConfig, run=lambda config, ctx: run_llm_edit(config, work_dir=ctx.work_dir, quiet=ctx.quiet),
    write_outputs=write_llm_edit_outputs, summary=summary_lines)
