"""E4 (``simulate llm``) and E5 (``simulate pretrained``) end to end on small corpora the tests write.

The full default E4 run (embedded corpus, 600 steps) is the ``slow`` test at the bottom; the default-suite
tests use a text corpus of a few kB and a few training steps, enough to exercise every stage: tokenization,
vocabulary compaction, counting, the truncated SVD, training with evaluations and checkpoints, resume,
figures, metrics and the saved model, which E5 then reads back.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from flax import nnx

from probsig_jax import simulate
from probsig_jax.corpus import CorpusConfig
from probsig_jax.experiments.corpus_alignment import CORPUS_ALIGNMENT, TRAINING_COMPARISONS, CorpusAnalysisConfig
from probsig_jax.experiments.llm import LLMExperimentConfig, run_llm
from probsig_jax.experiments.runner import work_dir_for
from probsig_jax.models.qwen2 import Qwen2Config, Qwen2LM, save_pretrained
from probsig_jax.training.lm_loop import LMRunConfig
from probsig_jax.training.lm_optimizer import LMTrainConfig
from probsig_jax.validation import ConfigError

SENTENCES = [
    "the cat sat on the mat and the dog sat on the log .",
    "one two three four five six seven eight nine ten .",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 .",
    "a cat and a dog ; the cat and the dog ; 3 cats and 4 dogs .",
    "she counted 1 2 3 then 7 8 9 and stopped at 42 .",
]


def write_corpus(path, repeats: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    for d in range(4):
        lines = [SENTENCES[i] for i in rng.integers(0, len(SENTENCES), repeats)]
        (path / f"doc{d}.txt").write_text("\n".join(lines) + "\n")
    return path


def small_config(corpus_dir, cache_dir, steps: int = 12) -> LLMExperimentConfig:
    # 199 relabellings and 200 resamples instead of 999 / 1000 (half the time of a run here): the tests read p-values
    # and intervals only for their presence and order (0 < p <= 1, low <= value <= high), never their resolution.
    return LLMExperimentConfig(
        cache_dir=str(cache_dir), num_workers=1, hidden_size=32, analysis=CorpusAnalysisConfig(theory_rank=8),
        alignment=CORPUS_ALIGNMENT.replace(top_tokens=20, permutations=199, bootstrap=200),
        corpus=CorpusConfig(source=str(corpus_dir)),
        train=LMTrainConfig(learning_rate=1e-2, warmup_steps=2, total_steps=steps, weight_decay=0.0),
        run=LMRunConfig(batch_size=4, seq_len=16, eval_every=4, eval_batches=2, checkpoint_every=4))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """One run of ``small_config`` (with the live JSON-lines and TensorBoard streams), shared by the tests that
    read the same run: (result, its folder)."""
    tmp_path = tmp_path_factory.mktemp("small_run")
    corpus = write_corpus(tmp_path / "corpus")
    result = run_llm(small_config(corpus, tmp_path / "cache"), quiet=True, metrics_jsonl=tmp_path / "live.jsonl",
                     tensorboard_dir=tmp_path / "tb")
    return result, tmp_path


def test_run_llm_reports_every_metric_and_alignment_over_training(small_run):
    result, tmp_path = small_run
    m = result.metrics
    # the live stream: every step and every evaluation, in JSON lines and in TensorBoard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from probsig_jax.training.metrics_log import read_metrics_jsonl
    streamed = read_metrics_jsonl(tmp_path / "live.jsonl")
    assert [r["loss"] for r in streamed if r["kind"] == "train"] == result.training.history["loss"]
    assert [r["eval_loss"] for r in streamed if r["kind"] == "eval"] == [e["eval_loss"] for e in m["evals"]]
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx(result.training.history["loss"], rel=1e-6)
    assert m["vocabulary"]["model_vocab"] < 200 and m["model"]["vocab_size"] == m["vocabulary"]["model_vocab"]
    assert m["final_eval_loss"] < m["initial_eval_loss"]
    assert set(m["token_sets"]) == {"top", "digits"}
    for block in m["token_sets"].values():
        for comparison in TRAINING_COMPARISONS:
            row = block["trained"][comparison.name]
            for key in ("pearson", "spearman", "topk_overlap", "strong_pair_precision", "weak_pair_precision"):
                assert key in row
        assert block["strong_pairs"]["holds"] in (True, False, None)
        assert -1 <= block["theory_vs_signature"]["theory_embedding_vs_signature"]["pearson"] <= 1
    assert m["token_sets"]["digits"]["strong_pairs"]["holds"] is None      # 45 pairs, 5 % = 2: too few
    assert isinstance(m["token_sets"]["top"]["strong_pairs"]["holds"], bool)
    digits = result.alignment.token_sets[1]
    assert digits.labels == tuple(str(d) for d in range(10))       # all ten digits are single tokens here
    assert [e["step"] for e in m["evals"]] == [0, 4, 8, 12]
    assert all("pearson" in e["alignment"]["top"]["embedding_vs_signature"] for e in m["evals"])
    assert len(result.digit_snapshots()) == 4
    # the signature targets are exactly what the corpus counts give: theory prediction symmetric, unit diagonal
    theory = result.alignment.targets["top"]["theory_embedding"]
    np.testing.assert_allclose(theory, theory.T, atol=1e-12)
    np.testing.assert_allclose(np.diag(theory), 1.0, atol=1e-12)


# slow: 60-105 s; test_lm_training covers interrupt and resume by default; kept out of the default run for its CI budget (run with -m slow)
@pytest.mark.slow
def test_simulate_llm_writes_a_complete_run_and_resumes_after_an_interruption(tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "corpus")
    out = tmp_path / "e4"
    args = ["llm", "--out", str(out), "--quiet", "--cache-dir", str(tmp_path / "cache"), "--num-workers", "1",
            "--corpus-source", str(corpus), "--top-tokens", "20", "--theory-rank", "8", "--hidden-size", "32",
            "--total-steps", "12", "--warmup-steps", "2", "--learning-rate", "1e-2", "--batch-size", "4",
            "--seq-len", "16", "--eval-every", "4", "--checkpoint-every", "4"]

    # a first attempt dies after the checkpoint of step 8 (as a killed process would)
    import probsig_jax.training.lm_loop as lm_loop
    real_save = lm_loop.TrainCheckpointer.save

    def save_then_die(self, step, *a, **k):
        real_save(self, step, *a, **k)
        if step == 8:
            raise KeyboardInterrupt

    monkeypatch.setattr(lm_loop.TrainCheckpointer, "save", save_then_die)
    assert simulate.main(args) == 130
    assert not out.exists() and (work_dir_for(out) / "8").is_dir()
    monkeypatch.setattr(lm_loop.TrainCheckpointer, "save", real_save)

    assert simulate.main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from"] == 8 and [e["step"] for e in metrics["evals"]] == [0, 4, 8, 12]
    assert not work_dir_for(out).exists()
    config = json.loads((out / "config.json").read_text())
    assert config["command"] == "llm" and config["config"]["corpus"]["source"] == str(corpus)
    assert "git" in json.dumps(config["provenance"])
    for name in ("loss.png", "heatmaps_top.png", "heatmaps_digits.png", "digits_pca.png", "theory_vs_embedding_top.png", "signature_vs_embedding_top.png",
                 "alignment_top_pearson.png", "report.md", "arrays.npz", "model/config.json",
                 "model/model.safetensors", "model/vocab_map.json"):
        assert (out / name).is_file(), name

    # the live stream was continued across the interruption and lands in the run directory
    from probsig_jax.training.metrics_log import read_metrics_jsonl
    streamed = read_metrics_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in streamed if r["kind"] == "train"] == list(range(12))
    assert [r["step"] for r in streamed if r["kind"] == "eval"] == [0, 4, 8, 12]

    # an uninterrupted run gives the same curve; --tensorboard writes its scalars
    out2 = tmp_path / "e4b"
    assert simulate.main([a if a != str(out) else str(out2) for a in args] + ["--tensorboard", str(tmp_path / "tb")]) == 0
    again = json.loads((out2 / "metrics.json").read_text())
    assert [e["eval_loss"] for e in again["evals"]] == [e["eval_loss"] for e in metrics["evals"]]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("eval/eval_loss")] == [0, 4, 8, 12]
    assert [e.value for e in acc.Scalars("eval/eval_loss")] == pytest.approx([e["eval_loss"] for e in again["evals"]])

    # E5 reads the trained model back (compact vocabulary through vocab_map.json)
    out5 = tmp_path / "e5"
    assert simulate.main(["pretrained", "--checkpoint", str(out / "model"), "--out", str(out5), "--quiet",
                          "--cache-dir", str(tmp_path / "cache"), "--corpus-source", str(corpus),
                          "--top-tokens", "20", "--theory-rank", "8"]) == 0
    e5 = json.loads((out5 / "metrics.json").read_text())
    assert e5["model"]["vocab_map"] and e5["corpus"]["dropped_tokens"] == 0
    # same weights, same corpus, same token set: E5's alignment equals E4's final one
    e4_top = metrics["token_sets"]["top"]["trained"]["embedding_vs_signature"]
    e5_top = e5["token_sets"]["top"]["pretrained"]["embedding_vs_signature"]
    assert e5_top["pearson"] == pytest.approx(e4_top["pearson"], abs=0.05)  # E5 counts the whole stream


def test_pretrained_on_a_full_vocabulary_checkpoint(tmp_path):
    """A checkpoint with the Qwen2.5 vocabulary (151936 rows, tied), as a released model has."""
    config = Qwen2Config(vocab_size=151936, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    ckpt = save_pretrained(Qwen2LM(config, rngs=nnx.Rngs(0)), config, tmp_path / "ckpt")
    corpus = write_corpus(tmp_path / "corpus", repeats=10)
    out = tmp_path / "e5"
    assert simulate.main(["pretrained", "--checkpoint", str(ckpt), "--out", str(out), "--quiet",
                          "--cache-dir", str(tmp_path / "cache"), "--corpus-source", str(corpus),
                          "--top-tokens", "15", "--theory-rank", "6"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"]["vocab_size"] == 151936 and "tied" in m["note"]
    assert (out / "heatmaps_top.png").is_file() and (out / "digits_pca.png").is_file()
    # random weights: no alignment to speak of
    assert abs(m["token_sets"]["top"]["pretrained"]["embedding_vs_signature"]["pearson"]) < 0.5


# slow (~18 s): the Pile reader, its set filter and malformed-line counts are tested by default in test_corpus; this is
# the same path end to end through simulate llm (run with -m slow)
@pytest.mark.slow
def test_simulate_llm_on_a_pile_jsonl_zst_with_a_set_filter(tmp_path):
    """The Pile path end to end: a .jsonl.zst with two sets and a malformed line; only one set is kept."""
    import zstandard

    lines = []
    for i in range(40):
        lines.append(json.dumps({"text": " ".join(SENTENCES[i % 5] for _ in range(5)),
                                 "meta": {"pile_set_name": "Github" if i % 2 else "ArXiv"}}))
    lines.insert(3, "{not json")
    path = tmp_path / "00.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(("\n".join(lines) + "\n").encode()))
    out = tmp_path / "e4"
    assert simulate.main(["llm", "--out", str(out), "--quiet", "--cache-dir", str(tmp_path / "cache"),
                          "--corpus-source", str(path), "--corpus-pile-set-names", "Github", "--top-tokens", "15",
                          "--theory-rank", "6", "--total-steps", "4", "--warmup-steps", "1", "--eval-every", "2",
                          "--batch-size", "4", "--seq-len", "16", "--hidden-size", "32"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["corpus"]["documents"] == 20 and m["corpus"]["malformed"]["total"] == 1
    assert m["corpus"]["malformed"]["counts"] == {"invalid_json": 1}


def test_randomized_svd_option_gives_the_same_top_modes(tmp_path):
    from dataclasses import replace

    from probsig_jax.experiments.corpus_alignment import analyse_corpus
    from probsig_jax.corpus.tokenizer import qwen2_tokenizer
    from probsig_jax.corpus.vocab import VocabularyMap

    tok = qwen2_tokenizer()
    ids = np.concatenate([tok.encode_arrays([s])[0] for s in SENTENCES * 20]).astype(np.uint32)
    vm = VocabularyMap.from_tokens([ids], tok.vocab_size)
    config, alignment = CorpusAnalysisConfig(theory_rank=5), CORPUS_ALIGNMENT.replace(top_tokens=10)
    a = analyse_corpus(vm.to_compact(ids), vm.size, tok, vm, config, alignment)
    b = analyse_corpus(vm.to_compact(ids), vm.size, tok, vm, replace(config, theory_svd="randomized"), alignment)
    np.testing.assert_allclose(a.top_singular_values[:3], b.top_singular_values[:3], rtol=1e-6)


def test_bad_llm_options_are_one_line_errors(tmp_path, capsys):
    assert simulate.main(["llm", "--out", str(tmp_path / "x"), "--window", "0"]) == 2
    assert "window" in capsys.readouterr().err
    assert simulate.main(["llm", "--out", str(tmp_path / "x"), "--corpus-source", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "source" in err or "corpus" in err
    assert simulate.main(["pretrained", "--out", str(tmp_path / "y")]) == 2
    assert "checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.slow
def test_default_llm_run_on_the_embedded_corpus(tmp_path):
    """The README's E4 numbers: the default command on the embedded corpus (about 5-10 min on 2 cores)."""
    out = tmp_path / "e4"
    assert simulate.main(["llm", "--out", str(out), "--quiet", "--cache-dir", str(tmp_path / "cache")]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["final_eval_loss"] < m["initial_eval_loss"] - 2.0
    top = m["token_sets"]["top"]["trained"]["embedding_vs_signature"]
    assert top["pearson"] > 0.2
    # Honest numbers: the interval, the null and the side-specificity test (README: W_E follows phi_next,
    # W_U phi_pre, each with Mantel p < 0.01 and an own-minus-other interval above 0).
    assert top["pearson_ci_low"] < top["pearson"] < top["pearson_ci_high"] and top["pearson_p"] < 0.01
    side = m["token_sets"]["top"]["side_specificity"]
    assert side["follows"] == {"W_E": "phi_next", "W_U": "phi_pre"}
    assert side["holds_for"] == {"W_E": True, "W_U": True} and side["holds"] is True
    assert side["pearson"]["W_E"]["phi_next"]["p"] < 0.01 and side["pearson"]["W_U"]["phi_pre"]["p"] < 0.01
    report = (out / "report.md").read_text()
    assert "side specificity" in report and "own side confirmed" in report
    # The theory's prediction restates the signature here (by construction): its added value straddles 0.
    added = m["token_sets"]["top"]["theory_added_value"]["W_E"]
    assert abs(added["value"]) < 0.05 and "by construction" in report


def test_side_specificity_and_predictors_are_reported(small_run):
    result, _ = small_run
    for block in result.metrics["token_sets"].values():
        side = block["side_specificity"]
        assert set(side["pearson"]) == {"W_E", "W_U"} and set(side["pearson"]["W_E"]) == {"phi_next", "phi_pre"}
        for row in side["pearson"].values():
            for entry in row.values():
                assert {"r", "ci_low", "ci_high", "p"} <= set(entry) and 0 < entry["p"] <= 1
        assert set(side["partial"]["W_E"]) == {"phi_next | phi_pre", "phi_pre | phi_next"}
        assert side["holds"] in (True, False)
        assert set(block["predictors"]["W_E"]["predictors"]) == {"phi_next", "theory", "ppmi", "sppmi_5", "frequency"}
        assert block["predictors"]["W_E"]["best"] in block["predictors"]["W_E"]["predictors"]
        t = block["trained"]["embedding_vs_signature"]
        assert t["chance_topk_overlap"] <= t["ceiling_topk_overlap"] and "pearson_p" in t


def test_an_edit_is_applied_before_counting_and_recorded(tmp_path):
    """``--edit-*``: the stream is edited before the counts (the signatures see it) and the run records the edit;
    a transplant moves the edited token's next-token signature toward the source's."""
    from probsig_jax.corpus import load_tokenizer
    from probsig_jax.corpus.edits import CorpusEdit

    corpus = write_corpus(tmp_path / "corpus")
    tok = load_tokenizer("qwen2.5")
    cat, dog = tok.encode(" cat")[0], tok.encode(" dog")[0]
    base_cfg = small_config(corpus, tmp_path / "cache", steps=3)
    edit = CorpusEdit("transplant", (cat, dog), fraction=1.0, seed=0)
    edited = run_llm(base_cfg.replace(edit=edit), quiet=True)
    record = edited.metrics["edit"]
    assert record["description"].startswith("transplant") and record["affected_tokens"] == [cat]
    assert record["per_token"][cat]["edited"] == record["edited_positions"] > 0
    assert LLMExperimentConfig().edit.describe() == "no edit"

    from probsig_jax.corpus import tokenize_corpus
    from probsig_jax.signatures.corpus import count_context_pairs
    stream = np.asarray(tokenize_corpus(base_cfg.corpus, tok, base_cfg.cache_dir, quiet=True).tokens())
    base_counts = count_context_pairs(stream, tok.vocab_size).counts
    vm = edited.vocab_map

    def phi_base(token):
        row = np.asarray(base_counts[token].todense()).ravel()[vm.original_ids]
        return row / row.sum()

    row = np.asarray(edited.alignment.counts.counts[vm.to_compact(np.array([cat]))[0]].todense()).ravel()
    e_cat, b_cat, b_dog = row / row.sum(), phi_base(cat), phi_base(dog)
    # the analysis counts the training part of the stream only, so the match is close, not exact
    assert 0.5 * np.abs(e_cat - b_dog).sum() < 0.25 * 0.5 * np.abs(b_cat - b_dog).sum()


def test_held_out_signatures_come_from_a_part_the_model_never_sees(tmp_path):
    """``--held-out-signatures f``: the first f of the stream is only counted, the model trains on the rest, and the
    alignment is reported against both parts' signatures with the drop and its interval."""
    corpus = write_corpus(tmp_path / "corpus")
    config = small_config(corpus, tmp_path / "cache", steps=3).replace(held_out_signatures=0.5)
    result = run_llm(config, quiet=True)
    m = result.metrics
    held = m["held_out_signatures"]
    total = m["corpus"]["tokens"]
    assert held["signature_tokens"] == round(0.5 * total)
    assert m["train_tokens"] + m["eval_tokens"] == total - held["signature_tokens"]
    # the in-sample column is the run's own table (the counts of the model's training stream)
    top = held["token_sets"]["top"]
    own = m["token_sets"]["top"]["trained"]["embedding_vs_signature"]["pearson"]
    assert top["rows"]["W_E vs phi_next"]["in_sample"] == pytest.approx(own, abs=1e-12)
    for row in top["rows"].values():
        assert row["drop"] == pytest.approx(row["in_sample"] - row["held_out"], abs=1e-12)
        assert row["drop_ci_low"] <= row["drop"] <= row["drop_ci_high"] and 0 < row["held_out_p"] <= 1
    assert -1 <= top["signature_agreement"]["input"] <= 1
    with pytest.raises(ConfigError, match="held_out_signatures"):
        LLMExperimentConfig(held_out_signatures=0.95).validate()
