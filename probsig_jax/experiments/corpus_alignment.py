"""Shared by E4 (``simulate llm``) and E5 (``simulate pretrained``): corpus token ids -> windowed counts ->
signatures and the linear theory's prediction for the token sets -> the targets a model's input embeddings
(``W_E``) and unembeddings (``W_U``) are compared with (PAPER section 7), and the figures of the comparison.

Targets per token set, ``(n, n)`` similarity matrices computed from the corpus alone:

- ``input_signature``: the configured signature similarity (``AlignmentConfig.similarity``; default the
  cosine of the next-token distributions Q_s, the paper's phi_next, as in its ``R_cos(W_E, phi_next)``);
- ``input_M``: cosine between the columns of the signature matrix M (centred and frequency weighted: the
  quantity the linear theory says drives the embeddings);
- ``output_signature`` / ``output_M``: the same on the unembedding side (previous-token distributions R_y,
  the paper's phi_pre, and the rows of M);
- ``theory_embedding`` / ``theory_unembedding``: the linear theory's predicted Gram at the chosen time
  (a truncated SVD of M; :mod:`probsig_jax.theory.corpus`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from probsig_jax.analysis import plots
from probsig_jax.analysis.alignment import (AlignmentConfig, AlignmentTracker, Comparison, TokenSet, compare,
                                            correlation_difference, predictor_table, side_specificity,
                                            strong_pair_finding,
                                            weight_similarities)
from probsig_jax.analysis.geometry import cluster_order
from probsig_jax.analysis.metrics import offdiagonal, pearson, spearman
from probsig_jax.analysis.significance import mantel_test
from probsig_jax.config_base import Config
from probsig_jax.experiments.report import interval_text, with_interval
from probsig_jax.corpus.token_sets import select_token_sets
from probsig_jax.corpus.vocab import VocabularyMap
from probsig_jax.signatures.baselines import frequency_similarity, ppmi_similarity, ppmi_vectors
from probsig_jax.signatures.corpus import CorpusPairCounts, count_context_pairs, signature_similarity
from probsig_jax.theory.corpus import predicted_similarity, signature_modes_for_rank, time_for_growth
from probsig_jax.validation import renamed_field, require, require_float, require_int

CORPUS_ALIGNMENT = AlignmentConfig(similarity="cosine_Q", topk=5, strong_pair_percent=5.0,
                                   token_sets=("top", "digits"), top_tokens=100)
"""The alignment settings of E4/E5: the top-100 tokens and the digits, phi_next / phi_pre cosine, q = 5 %."""
CORPUS_SIMILARITIES = {"cosine_M": "M", "cosine_Q": "cosine", "hellinger_Q": "hellinger"}
"""AlignmentConfig.similarity -> the ``kind`` of :func:`probsig_jax.signatures.corpus.signature_similarity`."""

TRAINING_COMPARISONS = (
    Comparison("embedding_vs_signature", "embedding", "input_signature"),
    Comparison("embedding_vs_M", "embedding", "input_M"),
    Comparison("embedding_vs_theory", "embedding", "theory_embedding"),
    Comparison("unembedding_vs_signature", "unembedding", "output_signature"),
    Comparison("unembedding_vs_theory", "unembedding", "theory_unembedding"),
    Comparison("embedding_vs_output_signature", "embedding", "output_signature"),
    Comparison("unembedding_vs_input_signature", "unembedding", "input_signature"),
)
"""The weights-vs-targets rows of every table (and of the curves over training); the last two are the other
side's signature, the control of the side-specificity test."""
SIDE_WEIGHTS = {"W_E": "embedding", "W_U": "unembedding"}
SIDE_SIGNATURES = {"phi_next": "input_signature", "phi_pre": "output_signature"}
SIDE_EXPECTED = {"W_E": "phi_next", "W_U": "phi_pre"}
"""The side-specificity test: W_E should follow the next-token signature, W_U the previous-token one."""
THEORY_COMPARISONS = (
    Comparison("theory_embedding_vs_signature", "theory_embedding", "input_signature"),
    Comparison("theory_unembedding_vs_signature", "theory_unembedding", "output_signature"),
)
"""How well the theory's prediction matches the signature similarities (no weights involved)."""


@dataclass(frozen=True)
class CorpusAnalysisConfig(Config):
    """Signature window and the linear theory's prediction (shared by E4 and E5)."""

    window: int = 1
    """Signature window w: context = the w tokens before the next token (1 = bigram, the paper's phi_next)."""
    theory_rank: int = 64
    """Rank of the truncated SVD of M behind the theory's prediction (capped by what the corpus supports)."""
    theory_svd: Literal["arpack", "randomized"] = "arpack"
    """Truncated SVD of the sparse M: ARPACK (scipy svds) or a randomized range finder (faster, approximate
    in the trailing modes)."""
    theory_growth: float = 2.0
    """The theory's prediction is taken when its leading mode has grown this many times (> 1)."""
    theory_gram: Literal["learned", "expected"] = "learned"
    """Which predicted Gram: the learned part of the closed form alone (the geometry once the embeddings have
    moved far from their initialisation, as in a trained model) or the full expected Gram with the isotropic
    initialisation term (the early, small-t regime)."""

    def _check(self) -> None:
        require_int(self.window, "window", minimum=1, maximum=64)
        require_int(self.theory_rank, "theory_rank", minimum=1, maximum=4096)
        require(self.theory_svd in ("arpack", "randomized"), "theory_svd",
                f"must be arpack or randomized, got {self.theory_svd!r}")
        require_float(self.theory_growth, "theory_growth", minimum=1.0, maximum=1e6, strict_minimum=True)
        require(self.theory_gram in ("learned", "expected"), "theory_gram",
                f"must be learned or expected, got {self.theory_gram!r}")


def check_corpus_alignment(alignment: AlignmentConfig) -> None:
    alignment.require_supported(("top", "digits"), similarities=tuple(CORPUS_SIMILARITIES))


@dataclass
class CorpusAlignment:
    """Everything the analysis derives from the corpus counts, before looking at any model.

    Attributes:
      counts: the windowed (context, next-token) counts.
      token_sets: the analysed token sets.
      targets: set name -> target name -> (n, n) similarity matrix (see the module docstring).
      theory_rank, theory_time: the truncated SVD's rank and the prediction time.
      top_singular_values: the leading singular values of M.
      config: the alignment settings.
    """

    counts: CorpusPairCounts
    token_sets: list[TokenSet]
    targets: dict[str, dict[str, np.ndarray]]
    theory_rank: int
    theory_time: float
    top_singular_values: list[float]
    config: AlignmentConfig

    def tracker(self) -> AlignmentTracker:
        """The metrics-over-training hook comparing ``{"embedding": W_E, "unembedding": W_U}`` with the targets."""
        return AlignmentTracker(self.token_sets, self.targets, TRAINING_COMPARISONS, self.config)

    def metrics(self, weights: dict[str, Any], key: str) -> dict[str, Any]:
        """Per token set: ``key`` -> the table of ``weights`` (``{"embedding": W_E, "unembedding": W_U}``), the
        theory-vs-signature table and the strong-pair finding."""
        tables = self.tracker().measure(weights)
        out = {}
        for s in self.token_sets:
            targets, sims = self.targets[s.name], weight_similarities(weights, s)
            out[s.name] = {"num_tokens": len(s.ids), "tokens": list(s.labels), key: tables[s.name],
                           "theory_vs_signature": compare(targets, THEORY_COMPARISONS, self.config),
                           "strong_pairs": strong_pair_finding(tables[s.name]["embedding_vs_signature"]),
                           "side_specificity": side_specificity(
                               {w: sims[name] for w, name in SIDE_WEIGHTS.items()},
                               {sig: targets[name] for sig, name in SIDE_SIGNATURES.items()}, SIDE_EXPECTED,
                               self.config),
                           "predictors": {
                               w: predictor_table(sims[name], {p: targets[t] for p, t in table.items()}, ref,
                                                  self.config)
                               for w, (name, ref, table) in PREDICTORS.items()},
                           "theory_added_value": {
                               w: correlation_difference(sims[name], targets[f"theory_{name}"],
                                                         targets[f"{side}_signature"], self.config)
                               for (w, name), side in zip(SIDE_WEIGHTS.items(), ("input", "output"))}}
        return out


def theory_time(pc: CorpusPairCounts, rank: int, growth: float, seed: int = 0, method: str = "arpack"):
    """``(modes, t)``: the truncated SVD of M (``rank`` modes, at most what the solver accepts for this
    corpus, :func:`~probsig_jax.theory.corpus.max_modes`) and the time at which the leading mode has grown
    ``growth``-fold."""
    with renamed_field("theory_"):
        modes = signature_modes_for_rank(pc, rank, method=method, seed=seed)
    return modes, time_for_growth(modes, growth)


def similarity_targets(pc: CorpusPairCounts, modes, t: float, token_set: TokenSet, similarity: str,
                       theory_gram: str = "learned") -> dict[str, np.ndarray]:
    """The target matrices of one token set (``theory_gram``: see :class:`CorpusAnalysisConfig`)."""
    ids, kind = token_set.ids, CORPUS_SIMILARITIES[similarity]
    init = theory_gram == "expected"
    return {
        "input_signature": signature_similarity(pc, ids, side="input", kind=kind),
        "input_M": signature_similarity(pc, ids, side="input", kind="M"),
        "output_signature": signature_similarity(pc, ids, side="output", kind=kind),
        "output_M": signature_similarity(pc, ids, side="output", kind="M"),
        "theory_embedding": np.asarray(predicted_similarity(modes, ids, t, side="embedding", include_init=init)),
        "theory_unembedding": np.asarray(predicted_similarity(modes, ids, t, side="unembedding",
                                                              include_init=init)),
    }


def analyse_corpus(ids: np.ndarray, vocab_size: int, tokenizer, vocab_map: VocabularyMap,
                   config: CorpusAnalysisConfig, alignment: AlignmentConfig, *, seed: int = 0,
                   quiet: bool = True, token_sets: list[TokenSet] | None = None) -> CorpusAlignment:
    """Count ``ids`` (model ids), take the truncated SVDs, choose the token sets, compute the targets and the
    competing predictors (``frequency``, ``{input,output}_{ppmi,sppmi}``: :mod:`probsig_jax.signatures.baselines`).

    ``token_sets`` (e.g. those of another part of the corpus, for held-out signatures) replaces the choice; each
    of their tokens must occur in ``ids`` as context and as label. The result depends on the data and the
    settings only, so it is computed once per process for a given stream (a multi-seed run shares it)."""
    config, alignment = config.validate(), alignment.validate()
    check_corpus_alignment(alignment)
    key = (hashlib.sha256(np.ascontiguousarray(ids).tobytes()).hexdigest(), int(vocab_size), tokenizer.name,
           config, alignment, int(seed),
           None if token_sets is None else tuple((s.name, tuple(s.ids)) for s in token_sets))
    if key in _ANALYSIS_CACHE:
        return _ANALYSIS_CACHE[key]
    pc = count_context_pairs(ids, vocab_size, config.window, quiet=quiet)
    modes, t = theory_time(pc, config.theory_rank, config.theory_growth, seed=seed, method=config.theory_svd)
    if token_sets is None:
        token_sets = select_token_sets(pc, tokenizer, vocab_map, alignment, exclude_tokenizer_ids=[tokenizer.eos_id])
    for s in token_sets:
        missing = [label for i, label in zip(s.ids, s.labels) if pc.context_weights[i] == 0 or pc.label_counts[i] == 0]
        require(not missing, "held_out_signatures",
                f"tokens of set {s.name!r} have no signature in this part of the corpus: {missing[:5]}; "
                "use a larger part or a larger corpus")
    vectors = {f"{side}_{name}": ppmi_vectors(pc, side=side, rank=config.theory_rank, shift=shift, seed=seed)
               for side in ("input", "output") for name, shift in (("ppmi", 1.0), ("sppmi", SPPMI_SHIFT))}
    targets = {}
    for s in token_sets:
        targets[s.name] = similarity_targets(pc, modes, t, s, alignment.similarity, config.theory_gram)
        targets[s.name]["frequency"] = frequency_similarity(pc, s.ids)
        for name, v in vectors.items():
            targets[s.name][name] = ppmi_similarity(pc, s.ids, vectors=v)
    result = CorpusAlignment(pc, token_sets, targets, int(modes.S.shape[0]), float(t),
                             np.asarray(modes.S[:10]).tolist(), alignment)
    _ANALYSIS_CACHE.clear()
    _ANALYSIS_CACHE[key] = result
    return result


_ANALYSIS_CACHE: dict[tuple, "CorpusAlignment"] = {}
SPPMI_SHIFT = 5.0
"""k of the shifted PPMI baseline (log k subtracted: skip-gram with 5 negative samples)."""
PREDICTORS = {"W_E": ("embedding", "phi_next", {"phi_next": "input_signature", "theory": "theory_embedding",
                                                "ppmi": "input_ppmi", "sppmi_5": "input_sppmi",
                                                "frequency": "frequency"}),
              "W_U": ("unembedding", "phi_pre", {"phi_pre": "output_signature", "theory": "theory_unembedding",
                                                 "ppmi": "output_ppmi", "sppmi_5": "output_sppmi",
                                                 "frequency": "frequency"})}
"""Per weight: its similarity name, the reference predictor, and predictor name -> target name."""


HELD_OUT_ROWS = {"W_E vs phi_next": ("embedding", "input_signature"),
                 "W_E vs theory": ("embedding", "theory_embedding"),
                 "W_U vs phi_pre": ("unembedding", "output_signature"),
                 "W_U vs theory": ("unembedding", "theory_unembedding")}


def held_out_table(in_sample: CorpusAlignment, held_out: CorpusAlignment, weights: dict[str, Any]
                   ) -> dict[str, Any]:
    """Per token set and row of ``HELD_OUT_ROWS``: the Pearson of the weights with the in-sample target (counts of
    the model's own training stream) and with the held-out one (counts of a part the model never saw), the drop
    ``in - held`` with its paired token-bootstrap interval and the held-out r's Mantel p (chance 0, ceiling 1);
    and how well the two parts' signatures agree with each other (``signature_agreement``, no weights)."""
    config = in_sample.config
    out: dict[str, Any] = {}
    for s in in_sample.token_sets:
        sims = weight_similarities(weights, s)
        a, b = in_sample.targets[s.name], held_out.targets[s.name]
        rows = {}
        for label, (weight, target) in HELD_OUT_ROWS.items():
            diff = correlation_difference(sims[weight], b[target], a[target], config)
            row = {"in_sample": diff["r_reference"], "held_out": diff["r_predictor"], "drop": -diff["value"]}
            if "ci_low" in diff:
                row["drop_ci_low"], row["drop_ci_high"] = -diff["ci_high"], -diff["ci_low"]
            if config.permutations:
                row["held_out_p"] = mantel_test(sims[weight], b[target], permutations=config.permutations,
                                                seed=config.statistics_seed)["p"]
            rows[label] = row
        out[s.name] = {"rows": rows, "signature_agreement": {
            side: pearson(offdiagonal(a[f"{side}_signature"]), offdiagonal(b[f"{side}_signature"]))
            for side in ("input", "output")}}
    return out


def model_weights(model) -> dict[str, np.ndarray]:
    """``{"embedding": W_E, "unembedding": W_U}`` (V, H) of a language model, on the host."""
    return {"embedding": np.asarray(model.input_embeddings()), "unembedding": np.asarray(model.output_embeddings())}


def write_alignment_figures(out: Path, alignment: CorpusAlignment, weights: dict[str, Any], *,
                            weights_label: str) -> list[Path]:
    """Per token set: heatmaps of the weights' similarity beside the signatures' and the theory's (input and
    unembedding sides), and the signature / theory vs measured scatters. The digits stay in numeric order;
    other sets are ordered by a clustering of their signature similarity, so blocks of similar tokens show."""
    figures = []
    for s in alignment.token_sets:
        targets = alignment.targets[s.name]
        order = np.arange(len(s.ids)) if s.name == "digits" else cluster_order(targets["input_signature"])
        s = s.reordered(order)
        t = {k: v[np.ix_(order, order)] for k, v in targets.items()}
        w = weight_similarities(weights, s)
        for side, weight, signature, name in (("input", "embedding", "phi_next (Q)", ""),
                                              ("output", "unembedding", "phi_pre (R)", "_unembedding")):
            figures.append(plots.save(plots.plot_similarity_heatmaps(
                {f"{weights_label} {'input embedding W_E' if side == 'input' else 'unembedding W_U'}": w[weight],
                 f"signature {signature}": t[f"{side}_signature"], "theory prediction": t[f"theory_{weight}"]},
                list(s.labels), title=f"{s.name} tokens: {'cosine similarities' if side == 'input' else 'unembedding side'}"),
                out / f"heatmaps_{s.name}{name}.png"))
        for target, xlabel, name in (("input_signature", "signature similarity (phi_next)", "signature"),
                                     ("theory_embedding", "linear-theory predicted similarity (corpus counts only)",
                                      "theory")):
            e, sig = offdiagonal(w["embedding"]), offdiagonal(t[target])
            figures.append(plots.save(plots.plot_similarity_scatter(
                sig, e, xlabel=xlabel, ylabel=f"{weights_label} input-embedding similarity", title=f"{s.name} tokens",
                stats={"pearson": pearson(sig, e), "spearman": spearman(sig, e)}),
                out / f"{name}_vs_embedding_{s.name}.png"))
    return figures


def save_alignment_arrays(path: Path, alignment: CorpusAlignment, weights: dict[str, Any], **extra: np.ndarray) -> Path:
    """``arrays.npz``: per set its tokenizer ids, every target and weight similarity matrix (the run directory
    itself is atomic, so the file is written in place)."""
    arrays = dict(extra)
    for s in alignment.token_sets:
        arrays[f"{s.name}_tokenizer_ids"] = s.tokenizer_ids
        for name, matrix in {**alignment.targets[s.name], **weight_similarities(weights, s)}.items():
            arrays[f"{s.name}_{name}"] = matrix
    np.savez_compressed(path, **arrays)
    return path


def corpus_summary_lines(metrics: dict[str, Any]) -> list[str]:
    """The console / report lines of E4 and E5."""
    kind = "trained" if metrics["experiment"] == "llm" else "pretrained"
    c = metrics["corpus"]
    lines = [f"corpus {c['source']}: {c['tokens']:,} tokens, {c.get('documents')} documents; window "
             f"{metrics['window']}; {metrics['signature_pairs']:,} distinct (context, next) pairs"]
    malformed = c.get("malformed") or {}
    if malformed.get("total"):
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(malformed.get("counts", {}).items()))
        lines.append(f"malformed input skipped: {malformed['total']} ({reasons}); e.g. "
                     f"{(malformed.get('examples') or ['?'])[0]}")
    if kind == "trained":
        lines.append(f"model vocab {metrics['vocabulary']['model_vocab']:,} (tokenizer "
                     f"{metrics['vocabulary']['tokenizer_vocab']:,}); held-out loss {metrics['initial_eval_loss']:.3f}"
                     f" -> {metrics['final_eval_loss']:.3f} after {metrics['steps']} steps")
    for name, block in metrics["token_sets"].items():
        t = block[kind]
        e, th, u = t["embedding_vs_signature"], t["embedding_vs_theory"], t["unembedding_vs_signature"]
        sp = block["strong_pairs"]
        lines.append(f"{name} ({block['num_tokens']} tokens): W_E vs phi_next Pearson {with_interval(e, 'pearson')} "
                     f"Spearman {with_interval(e, 'spearman')} top-k {e['topk_overlap']:.3f} (chance "
                     f"{e['chance_topk_overlap']:.3f}, ceiling {e['ceiling_topk_overlap']:.3f}); W_U vs phi_pre "
                     f"Pearson {with_interval(u, 'pearson')}; strong-pair precision {sp['strong_pair_precision']:.3f}"
                     f" vs weak {sp['weak_pair_precision']:.3f} (chance {sp['chance_precision']:.3f}): {sp['statement']}")
        lines.append(side_specificity_line(name, block["side_specificity"]))
        for w, table in block["predictors"].items():
            cells = ", ".join(f"{p} {e['r']:.3f}{interval_text(e)}" for p, e in table["predictors"].items())
            lines.append(f"{name}: predictors of {w} (Pearson, data only): {cells}; best: {table['best']}")
        added = block["theory_added_value"]["W_E"]
        lines.append(f"{name}: W_E vs theory Pearson {with_interval(th, 'pearson')}; the theory's prediction is built "
                     f"from the signatures (at small growth it is their cosine up to the rank-{metrics['theory']['rank']} "
                     f"truncation, by construction), so what it adds is r(W_E, theory) - r(W_E, phi_next) = "
                     f"{added['value']:+.3f}{interval_text(added)}")
    held = metrics.get("held_out_signatures")
    for name, block in (held or {}).get("token_sets", {}).items():
        cells = "; ".join(f"{label} {r['in_sample']:.3f} in-sample -> {r['held_out']:.3f} held-out (drop "
                          f"{r['drop']:+.3f}{interval_text(r, 'drop_ci_low', 'drop_ci_high')})"
                          for label, r in block["rows"].items())
        agree = block["signature_agreement"]
        lines.append(f"{name}: signatures from the held-out {held['fraction']:g} of the corpus "
                     f"({held['signature_tokens']:,} tokens the model never saw): {cells}; the two parts' own "
                     f"signatures agree at Pearson {agree['input']:.3f} (phi_next) / {agree['output']:.3f} (phi_pre)")
    return lines


def side_specificity_line(name: str, table: dict[str, Any]) -> str:
    """One line of the side-specificity test (:func:`~probsig_jax.analysis.alignment.side_specificity`)."""
    parts = []
    for w, row in table["pearson"].items():
        cells = ", ".join(f"vs {s} {entry['r']:.3f}{interval_text(entry)}" for s, entry in row.items())
        partial = "; ".join(f"partial {k} {v['r']:.3f}" + (f" p={v['p']:.3g}" if "p" in v else "")
                            for k, v in table["partial"][w].items())
        verdict = table["holds_for"][w]
        parts.append(f"{w} {cells} ({partial}; follows {table['follows'][w]}"
                     + ("" if verdict is None else f", own side {'confirmed' if verdict else 'NOT confirmed'}") + ")")
    sig = table["signature_correlation"]
    return (f"{name} side specificity (phi_next vs phi_pre correlate {sig['r']:.3f}{interval_text(sig)}): "
            + " | ".join(parts))
