"""Vocabulary compaction, token windows, and the LM training loop: exact resume, divergence stop, errors."""

from __future__ import annotations

import numpy as np
import pytest

from probsig_jax.training.token_windows import TokenWindows, split_stream
from probsig_jax.training.lm_loop import LMRunConfig, TrainingDiverged, train_language_model
from probsig_jax.models.qwen2 import Qwen2Config, Qwen2LM
from probsig_jax.training.lm_optimizer import LMTrainConfig
from probsig_jax.validation import ConfigError
from probsig_jax.corpus.vocab import VocabularyMap

TINY = Qwen2Config(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)


def qwen2(config: Qwen2Config):
    """The model factory train_language_model takes."""
    return lambda rngs: Qwen2LM(config, rngs=rngs)


def stream(n: int = 600, vocab: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (np.cumsum(rng.integers(1, 4, n)) % vocab).astype(np.uint32)  # learnable: small steps mod V


# --- vocabulary map --------------------------------------------------------------------------------

def test_vocabulary_map_round_trip_and_save(tmp_path):
    tokens = np.array([151643, 5, 900, 5, 17, 900], dtype=np.uint32)
    vm = VocabularyMap.from_tokens([tokens[:3], tokens[3:]], 151936, always_keep=[151643, 0])
    assert vm.size == 5 and vm.original_ids.tolist() == [0, 5, 17, 900, 151643]
    compact = vm.to_compact(tokens)
    assert compact.dtype == np.int32 and compact.tolist() == [4, 1, 3, 1, 2, 3]
    np.testing.assert_array_equal(vm.to_original(compact), tokens)
    assert vm.contains(np.array([5, 6, -1, 10**7])).tolist() == [True, False, False, False]
    loaded = VocabularyMap.load(vm.save(tmp_path / "vocab_map.json"))
    np.testing.assert_array_equal(loaded.original_ids, vm.original_ids)
    assert loaded.original_vocab_size == 151936
    with pytest.raises(ConfigError, match="tokens: ids not in the compact vocabulary"):
        vm.to_compact(np.array([6]))
    with pytest.raises(ConfigError, match="original_ids"):
        VocabularyMap(np.array([3, 2]), 10)
    identity = VocabularyMap.identity(7)
    assert identity.to_compact(np.arange(7)).tolist() == list(range(7))


# --- token windows -----------------------------------------------------------------------------------

def test_token_windows_are_a_function_of_seed_and_step():
    w = TokenWindows(np.arange(100, dtype=np.uint32), seq_len=8)
    a, b = w.train_batch(3, 4, seed=1), w.train_batch(3, 4, seed=1)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4, 8) and a.dtype == np.int32
    assert np.all(np.diff(a, axis=1) == 1)                       # consecutive tokens
    assert not np.array_equal(w.train_batch(4, 4, seed=1), a)
    evals = w.eval_batches(2, 3)
    assert [e.shape for e in evals] == [(3, 8), (3, 8)]
    with pytest.raises(ConfigError, match="seq_len"):
        TokenWindows(np.arange(5), seq_len=8)
    train, held = split_stream(np.arange(100), 0.2, seq_len=8)
    assert train.size == 80 and held.size == 20 and held[0] == 80
    with pytest.raises(ConfigError, match="eval_fraction"):
        split_stream(np.arange(100), 0.7, seq_len=8)


# --- training loop ----------------------------------------------------------------------------------

def _setup(steps: int = 8, **train_overrides):
    tokens = stream()
    train_tokens, eval_tokens = split_stream(tokens, 0.1, 16)
    run = LMRunConfig(batch_size=4, seq_len=16, eval_every=2, eval_batches=2, checkpoint_every=2)
    train = LMTrainConfig(learning_rate=1e-2, warmup_steps=2, total_steps=steps, **train_overrides)
    return run, train, TokenWindows(train_tokens, 16), TokenWindows(eval_tokens, 16)


def test_training_reduces_loss_and_calls_the_hook():
    run, train, tw, ew = _setup(steps=30)
    calls = []
    result = train_language_model(qwen2(TINY), train, run, tw, ew, evaluate=lambda s, m: calls.append(s) or {"norm": 1.0},
                                  quiet=True)
    assert result.history["step"] == list(range(30))
    assert calls == [0] + list(range(2, 31, 2))
    assert [e["step"] for e in result.evals] == calls and all(e["norm"] == 1.0 for e in result.evals)
    assert result.evals[-1]["eval_loss"] < result.evals[0]["eval_loss"] - 0.3
    assert np.mean(result.history["loss"][-5:]) < result.history["loss"][0] - 0.3


def test_interrupted_and_resumed_run_reproduces_the_uninterrupted_curve(tmp_path):
    """... and so does the live metrics stream: the interrupted run's lines past its checkpoint are dropped on
    resume, so the resumed stream equals the uninterrupted one (timestamps aside)."""
    from probsig_jax.training.metrics_log import read_metrics_jsonl

    run, train, tw, ew = _setup(steps=8)
    full = train_language_model(qwen2(TINY), train, run, tw, ew, checkpoint_dir=tmp_path / "full", quiet=True,
                                metrics_jsonl=tmp_path / "full.jsonl")

    def interrupt_at_6(step, model):
        if step == 6:
            raise KeyboardInterrupt  # as a user's Ctrl-C during the evaluation after step 6
        return {}

    with pytest.raises(KeyboardInterrupt):
        train_language_model(qwen2(TINY), train, run, tw, ew, checkpoint_dir=tmp_path / "cut", evaluate=interrupt_at_6,
                             quiet=True, metrics_jsonl=tmp_path / "cut.jsonl")
    cut = read_metrics_jsonl(tmp_path / "cut.jsonl")
    assert max(r["step"] for r in cut if r["kind"] == "train") == 5       # steps 4 and 5 ran past the checkpoint
    resumed = train_language_model(qwen2(TINY), train, run, tw, ew, checkpoint_dir=tmp_path / "cut", quiet=True,
                                   metrics_jsonl=tmp_path / "cut.jsonl")
    assert resumed.resumed_from == 4
    assert resumed.history == full.history                     # exactly the same curve, every step
    untimed = lambda records: [{k: v for k, v in r.items() if k != "time"} for r in records]  # noqa: E731
    streamed = untimed(read_metrics_jsonl(tmp_path / "cut.jsonl"))
    assert streamed == untimed(read_metrics_jsonl(tmp_path / "full.jsonl"))
    assert [r["loss"] for r in streamed if r["kind"] == "train"] == full.history["loss"]
    assert [r["step"] for r in streamed if r["kind"] == "eval"] == [e["step"] for e in full.evals]
    assert [e["eval_loss"] for e in resumed.evals] == [e["eval_loss"] for e in full.evals]
    np.testing.assert_array_equal(np.asarray(resumed.model.input_embeddings()),
                                  np.asarray(full.model.input_embeddings()))
    # another configuration must not resume from these checkpoints
    with pytest.raises(ConfigError, match="checkpoint_dir"):
        train_language_model(qwen2(TINY), LMTrainConfig(learning_rate=2e-2, warmup_steps=2, total_steps=8), run, tw, ew,
                             checkpoint_dir=tmp_path / "cut", quiet=True)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    run, train, tw, ew = _setup(steps=8)
    train = LMTrainConfig(learning_rate=1e30, warmup_steps=0, total_steps=8, grad_clip_norm=0.0)
    run = LMRunConfig(batch_size=4, seq_len=16, eval_every=100, checkpoint_every=1)
    with pytest.raises(TrainingDiverged, match="training diverged at step") as info:
        train_language_model(qwen2(TINY), train, run, tw, ew, checkpoint_dir=tmp_path / "ck", quiet=True)
    err = info.value
    bad_step = err.history["step"][-1]
    assert not np.isfinite(err.history["loss"][-1]) or not np.isfinite(err.history["grad_norm"][-1])
    assert all(np.isfinite(err.history["loss"][:-1]))
    assert err.last_good_step == bad_step and f"step {bad_step}" in str(err)


def test_bad_run_config_and_vocab_are_clear_errors():
    run, train, tw, ew = _setup()
    with pytest.raises(ConfigError, match="vocab_size"):
        train_language_model(qwen2(TINY.replace(vocab_size=10)), train, run, tw, ew, quiet=True)
    with pytest.raises(ConfigError, match="eval_every"):
        LMRunConfig(eval_every=0).validate()


# "metadata" is slow (25-50 s): the default run damages the arrays; -m slow runs both
@pytest.mark.parametrize("damage", ["arrays", pytest.param("metadata", marks=pytest.mark.slow)])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    """Garbage in the newest checkpoint's array files (or its metadata): the run warns, removes it, resumes from
    the one before and ends exactly as the uninterrupted run."""
    run, train, tw, ew = _setup(steps=8)
    full = train_language_model(qwen2(TINY), train, run, tw, ew, quiet=True)

    def interrupt_at_6(step, model):
        if step == 6:
            raise KeyboardInterrupt
        return {}

    with pytest.raises(KeyboardInterrupt):
        train_language_model(qwen2(TINY), train, run, tw, ew, checkpoint_dir=tmp_path, evaluate=interrupt_at_6,
                             quiet=True)
    newest = tmp_path / "4"                  # the evaluation after step 6 comes before its checkpoint
    assert newest.is_dir() and (tmp_path / "2").is_dir()
    files = [p for p in newest.rglob("*") if p.is_file()]
    targets = [p for p in files if ("record" in p.parts) == (damage == "metadata") and p.stat().st_size > 0]
    rng = np.random.default_rng(0)
    for path in targets:
        path.write_bytes(rng.integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes())
    with pytest.warns(RuntimeWarning, match=r"checkpoint 4 in .* is damaged"):
        resumed = train_language_model(qwen2(TINY), train, run, tw, ew, checkpoint_dir=tmp_path, quiet=True)
    assert resumed.resumed_from == 2
    assert resumed.history == full.history
    assert [e["eval_loss"] for e in resumed.evals] == [e["eval_loss"] for e in full.evals]


def test_every_checkpoint_damaged_is_a_one_line_error(tmp_path):
    run, train, tw, ew = _setup(steps=4)
    train_language_model(qwen2(TINY), train, run, tw, ew, checkpoint_dir=tmp_path, quiet=True)
    for path in (p for p in tmp_path.rglob("*") if p.is_file()):
        path.write_bytes(b"\0" * max(path.stat().st_size, 1))
    with pytest.warns(RuntimeWarning, match="damaged"), pytest.raises(ConfigError, match="every checkpoint"):
        train_language_model(qwen2(TINY), train, run, tw, ew, checkpoint_dir=tmp_path, quiet=True)
