"""E4's intervention (``simulate llm-edit``): the pair classes and scores of an edit's effect, the cluster's token
draw, and the experiment end to end on a small corpus (baseline and edited models from one initialisation)."""

from __future__ import annotations

import numpy as np
import pytest

from probsig_jax.analysis.edit_effect import edit_effect, pair_classes
from probsig_jax.corpus.edits import choose_cluster_tokens
from probsig_jax.experiments.llm_edit import LLMEditConfig, run_llm_edit, write_llm_edit_outputs
from probsig_jax.validation import ConfigError

from test_experiments_llm import small_config, write_corpus


def _planted_block(n=40, k=6, scale=0.5, noise=0.02, seed=0):
    rng = np.random.default_rng(seed)
    planted = np.zeros(n, bool)
    planted[:k] = True
    touched = planted.copy()
    touched[k:k + 3] = True
    P = np.zeros((n, n))
    P[np.ix_(planted, planted)] = 0.8
    P[np.ix_(planted, ~planted)] = P[np.ix_(~planted, planted)] = -0.05
    N = rng.normal(0, noise, (n, n))
    N = (N + N.T) / 2
    return P, planted, touched, N, scale


def test_pair_classes_count_the_pairs():
    n, planted = 10, np.arange(10) < 3
    touched = np.arange(10) < 5
    c = pair_classes(n, planted, touched)
    assert c["planted"].sum() == 3 and c["affected"].sum() == 3 + 3 * 7 and c["untouched"].sum() == 10
    assert not np.any(np.tril(c["affected"]))                       # upper triangle only
    with pytest.raises(ConfigError, match="planted"):
        pair_classes(n, planted[:5], touched)


def test_edit_effect_separates_a_planted_change_from_noise_and_not_noise_from_noise():
    P, planted, touched, N, scale = _planted_block()
    classes = pair_classes(P.shape[0], planted, touched)
    good = edit_effect(P, scale * P + N, classes, permutations=499)
    assert good["affected"]["pearson"] > 0.95 > good["affected"]["r_null_q975"]
    assert good["affected"]["sign_agreement"] > 0.9
    assert good["planted"]["measured_over_predicted"] == pytest.approx(scale, abs=0.01)
    assert good["separation"]["z"] > 10 and good["separation"]["untouched_tail"] == 0.0
    assert abs(good["untouched"]["mean"]) < 0.01
    # a measured change with no relation to the prediction: within the null, no separation
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.02, P.shape)
    null = edit_effect(P, noise + noise.T, classes, permutations=499)
    assert abs(null["affected"]["pearson"]) < null["affected"]["r_null_q975"] + 0.05
    assert abs(null["separation"]["z"]) < 3


def test_sign_agreement_null_is_the_mean_over_relabellings():
    P, planted, touched, N, _ = _planted_block(noise=0.3)
    classes = pair_classes(P.shape[0], planted, touched)
    D = 0.1 * P + N
    stats = edit_effect(P, D, classes, permutations=99)["affected"]
    p, d = P[classes["affected"]], D[classes["affected"]]
    rng = np.random.default_rng(0)
    shuffled = np.mean([np.mean(np.sign(p) == np.sign(rng.permutation(d))) for _ in range(4000)])
    assert stats["sign_agreement_null"] == pytest.approx(shuffled, abs=0.005)


def test_cluster_tokens_are_drawn_from_the_rank_window_by_seed():
    rng = np.random.default_rng(0)
    stream = rng.zipf(1.3, 20000) % 500
    ids, counts = np.unique(stream, return_counts=True)
    order = ids[np.lexsort((ids, -counts))]
    chosen = choose_cluster_tokens(stream, 5, (10, 40), seed=3, exclude=(order[0],))
    assert chosen == choose_cluster_tokens(stream, 5, (10, 40), seed=3, exclude=(order[0],))
    assert chosen != choose_cluster_tokens(stream, 5, (10, 40), seed=4, exclude=(order[0],))
    window = set(order[1:][10:40].tolist())                             # ranks after the excluded token
    assert len(set(chosen)) == 5 and set(chosen) <= window
    with pytest.raises(ConfigError, match="cluster_ranks"):
        choose_cluster_tokens(stream, 5, (10, 12), seed=0)
    with pytest.raises(ConfigError, match="cluster_ranks"):
        choose_cluster_tokens(stream, 5, (10, 10_000), seed=0)


def test_llm_edit_config_rejects_bad_edits():
    with pytest.raises(ConfigError, match="edit_tokens"):
        LLMEditConfig(edit_kind="transplant", edit_tokens=(3,)).resolved().validate()
    with pytest.raises(ConfigError, match="fractions"):
        LLMEditConfig(fractions=(0.0,)).resolved().validate()
    with pytest.raises(ConfigError, match="cluster_ranks"):
        LLMEditConfig(cluster_ranks=(5, 5)).resolved().validate()


def test_llm_edit_runs_baseline_and_edits_from_one_initialisation(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    base = small_config(corpus, tmp_path / "cache", steps=8)
    config = LLMEditConfig(base=base, cluster_size=3, cluster_ranks=(2, 14), edit_targets=3, edit_target_ranks=(),
                           fractions=(0.5, 1.0))
    result = run_llm_edit(config, quiet=True)
    m = result.metrics
    assert list(m["runs"]) == ["f=0.5", "f=1"]
    for name, run in m["runs"].items():
        assert run["edit"]["edited_positions"] > 0
        ot = run["over_time"]
        # the first evaluation is the initial model: the same weights in both trainings, so no change at all
        assert ot["step"][0] == 0
        assert ot["embedding_planted_mean"][0] == 0.0 and ot["embedding_untouched_mean_abs"][0] == 0.0
        assert ot["embedding_untouched_mean_abs"][-1] > 0                # the trainings did diverge
        s = run["scores"]["embedding"]["signature"]
        assert s["pairs"]["planted"] == 3 and s["planted"]["predicted_mean"] > 0
        assert -1 <= s["affected"]["pearson"] <= 1
    # the predicted change of the planted pairs grows with the edit size
    sweep = m["sweep"]
    assert sweep["fraction"] == [0.5, 1.0] and sweep["embedding_predicted"][1] > sweep["embedding_predicted"][0]
    figures = write_llm_edit_outputs(result, tmp_path / "out")
    names = {p.name for p in figures}
    assert {"loss.png", "delta_heatmaps_embedding_f1.png", "delta_scatter_embedding_f1.png",
            "edit_size_sweep.png"} <= names
    assert all(p.stat().st_size > 0 for p in figures)
