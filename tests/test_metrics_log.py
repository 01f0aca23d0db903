"""The live metrics stream: JSON lines readable while a run goes, TensorBoard scalars read back by TensorBoard."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from probsig_jax.training.metrics_log import MetricsLog, read_metrics_jsonl

ROOT = Path(__file__).resolve().parents[1]


def test_records_keep_scalars_and_resume_drops_what_came_after_the_checkpoint(tmp_path):
    path = tmp_path / "live" / "metrics.jsonl"
    with MetricsLog(path) as log:
        for step in range(6):
            log.write("train", step, {"loss": 1.0 / (step + 1), "lr": np.float32(0.1), "nested": {"a": 1},
                                      "bad": float("nan"), "flag": True})
            if step % 2 == 1:
                log.write("eval", step + 1, {"eval_loss": 2.0, "alignment": [0.1]})
    records = read_metrics_jsonl(path)
    assert [r["kind"] for r in records[:3]] == ["train", "train", "eval"]
    assert set(records[0]) == {"kind", "step", "time", "loss", "lr", "flag"}   # nested / non-finite left out
    assert records[0]["lr"] == pytest.approx(0.1) and records[0]["flag"] is True
    with open(path, "a") as f:
        f.write('{"kind": "train", "st')                        # a line cut by an interruption
    assert len(read_metrics_jsonl(path)) == len(records)
    MetricsLog(path, start_step=4).close()                      # resuming from the checkpoint of step 4
    kept = read_metrics_jsonl(path)
    assert [(r["kind"], r["step"]) for r in kept] == [("train", 0), ("train", 1), ("eval", 2), ("train", 2),
                                                       ("train", 3), ("eval", 4)]
    MetricsLog(path).close()                                    # a fresh run starts an empty stream
    assert path.read_text() == ""


def test_tensorboard_scalars_are_read_back_by_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    losses = [2.0, 1.5, 1.25]
    with MetricsLog(None, tmp_path / "tb") as log:
        for step, loss in enumerate(losses):
            log.write("train", step, {"loss": loss, "lr": 1e-3})
        log.write("eval", 3, {"eval_loss": 0.5})
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"train/loss", "train/lr", "eval/eval_loss"}
    events = acc.Scalars("train/loss")
    assert [e.step for e in events] == [0, 1, 2]
    np.testing.assert_allclose([e.value for e in events], losses)
    assert [(e.step, e.value) for e in acc.Scalars("eval/eval_loss")] == [(3, 0.5)]


SLOW_TRAINING = textwrap.dedent("""
    import sys, time
    import numpy as np
    from probsig_jax.models.qwen2 import Qwen2Config, Qwen2LM
    from probsig_jax.training.lm_loop import LMRunConfig, train_language_model
    from probsig_jax.training.lm_optimizer import LMTrainConfig
    from probsig_jax.training.token_windows import TokenWindows

    cfg = Qwen2Config(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    tokens = (np.arange(600) % 40).astype(np.uint32)

    def evaluate(step, model):
        time.sleep(0.3)                       # slow evaluations keep the run going while the test reads
        return {"marker": float(step)}

    train_language_model(lambda rngs: Qwen2LM(cfg, rngs=rngs), LMTrainConfig(learning_rate=1e-2, warmup_steps=1,
                         total_steps=12), LMRunConfig(batch_size=2, seq_len=8, eval_every=2, eval_batches=1),
                         TokenWindows(tokens, 8), TokenWindows(tokens, 8), evaluate=evaluate,
                         metrics_jsonl=sys.argv[1], quiet=True)
""")


def test_the_stream_grows_while_another_process_trains(tmp_path):
    """A training process writes; this process reads the file twice while it is still running and sees it grow,
    every line complete; after the run the stream has every step."""
    path = tmp_path / "metrics.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_TRAINING, str(path)], cwd=ROOT)
    try:
        seen = []
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline and len(set(seen)) < 3:
            if path.is_file():
                n = len(read_metrics_jsonl(path))
                if n and (not seen or n != seen[-1]):
                    seen.append(n)
            time.sleep(0.1)
        assert proc.poll() is None, "the run ended before the stream was seen growing"
        assert len(set(seen)) >= 3 and seen == sorted(seen), seen
    finally:
        proc.wait(timeout=240)
    assert proc.returncode == 0
    records = read_metrics_jsonl(path)
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(12))
    assert [r["marker"] for r in records if r["kind"] == "eval"] == [float(s) for s in range(0, 13, 2)]
    assert all(json.loads(line) for line in path.read_text().splitlines())
