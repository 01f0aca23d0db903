"""Nothing silently wrong, nothing half-written: bad inputs and faults through the command line.

The bad-input table runs in-process (``simulate.main(argv)``; argparse usage errors arrive as
``SystemExit``): every case must exit 2 with exactly one line on stderr naming the field, no traceback,
and leave nothing in ``--out`` or beside it (no partial directory, lock file or work directory).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probsig_jax import simulate
from probsig_jax.runs import run_lock

REPO = Path(__file__).resolve().parents[1]
FAST = ["--steps", "40", "--record-every", "20"]
# For a run that has to complete but whose numbers no test reads: also a narrow model and no permutation test or
# bootstrap (about half the time of a FAST run at the default width and statistics).
CHEAP = [*FAST, "--dim", "16", "--permutations", "0", "--bootstrap", "0"]

# (argv, the field the one-line error must name)
BAD_INPUTS = [
    # E1 / common
    (["linear", "--dim", "-3"], "dim"),
    (["linear", "--dim", "abc"], "dim"),
    (["linear", "--dim", "1.5"], "dim"),
    (["linear", "--learning-rate", "0"], "learning_rate"),
    (["linear", "--learning-rate", "nan"], "learning_rate"),
    (["linear", "--steps", "-1"], "steps"),
    (["linear", "--steps", "100000000000000000000"], "steps"),
    (["linear", "--steps", "1e20"], "steps"),
    (["linear", "--record-every", "0"], "record_every"),
    (["linear", "--init-scale", "-1e-3"], "init_scale"),
    (["linear", "--init-scale", "inf"], "init_scale"),
    (["linear", "--seed", "-1"], "seed"),
    (["linear", "--seed", "99999999999999999999999"], "seed"),
    (["linear", "--seed", "x"], "seed"),
    (["linear", "--preset", "nope"], "preset"),
    (["linear", "--dtype", "float16"], "dtype"),
    (["linear", "--optimizer", "lbfgs"], "optimizer"),
    (["linear", "--optimizer", "gd", "--batch-size", "8"], "batch_size"),
    (["linear", "--key-min", "30", "--key-max", "20"], "key"),
    (["linear", "--key-min", "20", "--key-max", "21"], "key"),
    (["linear", "--anchor-shifts", "1,2"], "anchor_shifts"),
    (["linear", "--anchor-shifts", "1,2,3,500", "--vocab-size", "80"], "vocab_size"),
    (["linear", "--anchor-weights", "-1,1,1,1"], "anchor_weights"),
    (["linear", "--label-noise", "1.5"], "label_noise"),
    (["linear", "--n-samples", "-5"], "n_samples"),
    (["linear", "--held-out", "4-x"], "held_out"),
    (["linear", "--relabel", "3"], "relabel"),
    (["linear", "--alignment-growth", "9"], "alignment_growth"),
    (["linear", "--topk", "0"], "topk"),
    (["linear", "--topk", "1000"], "topk"),
    (["linear", "--strong-pair-percent", "80"], "strong_pair_percent"),
    (["linear", "--similarity", "euclid"], "similarity"),
    (["linear", "--no-such-option", "1"], "unrecognized"),
    (["linear", "--out", ""], "out"),
    # E2
    (["intervene", "--edit", "no_such_field=1"], "edit"),
    (["intervene", "--edit", "anchor_weights"], "edit"),
    (["intervene", "--edit", "key_min=25"], "edit"),
    (["intervene", "--edit", "anchor_weights=1,1,1,1"], "edit"),
    (["intervene", "--edit", "label_noise=0"], "edit"),
    (["intervene", "--edit", "label_noise=abc"], "label_noise"),
    # E3
    (["ffn", "--hidden", ""], "hidden"),
    (["ffn", "--hidden", "0"], "hidden"),
    (["ffn", "--activation", "swish"], "activation"),
    (["ffn", "--init-scale", ""], "init_scale"),
    (["ffn", "--batch-size", "-1", "--optimizer", "adam"], "batch_size"),
    # E4 / E5 (fail before any tokenization)
    (["llm", "--window", "0"], "window"),
    (["llm", "--top-tokens", "2"], "top_tokens"),
    (["llm", "--token-sets", "keys"], "token_sets"),
    (["llm", "--similarity", "js_Q"], "similarity"),
    (["llm", "--total-steps", "0"], "total_steps"),
    (["llm", "--warmup-steps", "700"], "warmup_steps"),
    (["llm", "--model-preset", "huge"], "model_preset"),
    (["llm", "--eval-fraction", "0.9"], "eval_fraction"),
    (["llm", "--seq-len", "1"], "seq_len"),
    (["llm", "--b1", "1"], "b1"),
    (["llm", "--corpus-max-bytes", "0"], "corpus_max_bytes"),
    (["llm", "--corpus-format", "csv"], "corpus_format"),
    (["pretrained"], "checkpoint"),
    (["pretrained", "--checkpoint", "/no/such/dir"], "checkpoint"),
]


def _leftovers(tmp_path: Path, out: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(f".{out.name}") or p == out)


@pytest.mark.parametrize("argv,field", BAD_INPUTS, ids=[" ".join(a) or "(empty)" for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, field, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PROBSIG_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    argv = list(argv)
    if "--out" not in argv:
        argv += ["--out", str(out)]
    if argv[0] in ("linear", "intervene"):
        for option, value in zip(FAST[::2], FAST[1::2]):
            if option not in argv:
                argv += [option, value]
    try:
        code = simulate.main([*argv, "--quiet"])
    except SystemExit as exit_:       # argparse usage errors
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err, err
    assert field in err or "--" + field.replace("_", "-") in err, err     # the field, or the option argparse names
    assert _leftovers(tmp_path, out) == []


def test_unusable_out_and_cache_paths_are_one_line_errors(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out in (a_file / "run", Path("/proc/probsig-run")):
        assert simulate.main(["linear", *FAST, "--quiet", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "out:" in err, err
    assert simulate.main(["llm", "--quiet", "--out", str(tmp_path / "e4"), "--cache-dir", str(a_file),
                          "--corpus-max-bytes", "20000", "--total-steps", "2", "--warmup-steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cache_dir:" in err, err
    assert not (tmp_path / "e4").exists()


def test_divergence_is_exit_3_in_every_experiment(tmp_path, capsys):
    """A NaN/inf loss in the toy loops ends like the LM loop's: exit 3, one line, nothing in --out."""
    for argv in (["linear", "--learning-rate", "1e6"], ["linear", "--init-scale", "1e300"],
                 ["ffn", "--learning-rate", "1e30", "--optimizer", "sgd", "--steps", "40", "--record-every", "20"]):
        out = tmp_path / argv[0]
        extra = FAST if argv[0] == "linear" else []
        assert simulate.main([*argv, *extra, "--quiet", "--out", str(out)]) == 3, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "diverged" in err, err
        assert _leftovers(tmp_path, out) == []


def test_a_locked_out_is_refused_and_stale_partials_are_removed(tmp_path, capsys):
    out = tmp_path / "run"
    with run_lock(out):           # another run holds it
        assert simulate.main(["linear", *FAST, "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "another run is writing" in err and len(err.splitlines()) == 1
    assert not out.exists()
    stale = tmp_path / f".{out.name}.partial-999999999"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "metrics.json").write_text("{}")
    assert simulate.main(["linear", *CHEAP, "--quiet", "--out", str(out)]) == 0
    assert out.is_dir() and _leftovers(tmp_path, out) == ["run"]


def test_two_concurrent_runs_into_one_out_leave_one_complete_run(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "probsig_jax.simulate", "linear", *CHEAP, "--quiet", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2).strip()
    assert len(loser.splitlines()) == 1 and ("another run is writing" in loser or "already exists" in loser)
    assert _leftovers(tmp_path, out) == ["run"] and (out / "metrics.json").is_file()


def _llm_argv(tmp_path: Path, out: Path, **overrides) -> list[str]:
    corpus = tmp_path / "corpus"
    if not corpus.exists():
        corpus.mkdir()
        (corpus / "a.txt").write_text("the cat sat on the mat. 1 2 3 4 5 6 7 8 9 0. the dog sat on the log.\n" * 60)
    settings = {"--corpus-source": str(corpus), "--cache-dir": str(tmp_path / "cache"), "--num-workers": "1",
                "--top-tokens": "10", "--theory-rank": "4", "--hidden-size": "16", "--total-steps": "12",
                "--warmup-steps": "1", "--batch-size": "2", "--seq-len": "8", "--eval-every": "4",
                "--checkpoint-every": "2",
                # one token set and no permutation test or bootstrap: these tests check exits, messages and files,
                # not the statistics (a third of the time of a run with both sets and the default statistics)
                "--token-sets": "top", "--permutations": "0", "--bootstrap": "0", **overrides}
    return ["llm", "--quiet", "--out", str(out), *[x for kv in settings.items() for x in kv]]


# slow: 15-25 s (40-65 s before _llm_argv's one token set and no statistics); kept out of the default run for
# its CI budget (run with -m slow)
@pytest.mark.slow
def test_resume_with_a_changed_analysis_option_is_refused_naming_it(tmp_path, capsys, monkeypatch):
    import probsig_jax.training.lm_loop as lm_loop

    out = tmp_path / "e4"
    real_save = lm_loop.TrainCheckpointer.save

    def save_then_die(self, step, *a, **k):
        real_save(self, step, *a, **k)
        if step == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(lm_loop.TrainCheckpointer, "save", save_then_die)
    assert simulate.main(_llm_argv(tmp_path, out)) == 130
    monkeypatch.setattr(lm_loop.TrainCheckpointer, "save", real_save)
    capsys.readouterr()
    assert simulate.main(_llm_argv(tmp_path, out, **{"--top-tokens": "8", "--window": "2"})) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "top_tokens (10 -> 8)" in err and "window (1 -> 2)" in err, err
    # a setting that changes no number (the tokenizer threads) resumes
    assert simulate.main(_llm_argv(tmp_path, out, **{"--num-workers": "2"})) == 0
    assert json.loads((out / "metrics.json").read_text())["resumed_from"] == 4


def test_a_diverged_run_without_checkpoints_leaves_no_work_dir(tmp_path, capsys):
    out = tmp_path / "e4"
    assert simulate.main(_llm_argv(tmp_path, out, **{"--learning-rate": "1e30", "--checkpoint-every": "100"})) == 3
    assert "diverged" in capsys.readouterr().err
    assert _leftovers(tmp_path, out) == []


def test_sigterm_leaves_nothing_partial_and_the_rerun_resumes(tmp_path):
    out = tmp_path / "e4"
    # 300 steps: the kill comes at the first checkpoint (step 50), so the rest only has to outlast the signal.
    argv = _llm_argv(tmp_path, out, **{"--total-steps": "300", "--eval-every": "150", "--checkpoint-every": "50"})
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "probsig_jax.simulate", *argv], cwd=tmp_path, env=env,
                            stderr=subprocess.PIPE, text=True)
    work = tmp_path / f".{out.name}.work"
    deadline = time.time() + 300
    while time.time() < deadline and not (work.is_dir() and any(p.name.isdigit() for p in work.iterdir())):
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    err = proc.stderr.read().strip()
    assert code == 143, err
    errors = [line for line in err.splitlines() if ": warning: " not in line]      # warnings are one line each
    assert len(errors) == 1 and "terminated" in errors[0] and "Traceback" not in err, err
    assert not out.exists() and not list(tmp_path.glob(f".{out.name}.partial-*"))
    assert work.is_dir()                     # the checkpoints are kept for the rerun
    assert simulate.main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from"] is not None and metrics["resumed_from"] % 50 == 0
    assert _leftovers(tmp_path, out) == ["e4"]


# --- damaged files and wrong calls from Python --------------------------------------------------------------

def _tiny_checkpoint(path: Path) -> Path:
    from flax import nnx

    from probsig_jax.models.qwen2 import Qwen2Config, Qwen2LM, save_pretrained

    config = Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    return Path(save_pretrained(Qwen2LM(config, rngs=nnx.Rngs(0)), config, path))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "bad_config_value", "bad_vocab_map"])
def test_damaged_checkpoint_files_are_named_in_one_line(damage, tmp_path, capsys):
    ckpt = _tiny_checkpoint(tmp_path / "ckpt")
    weights = ckpt / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        expect = "model.safetensors is not a readable safetensors file"
    elif damage == "garbage":
        weights.write_bytes(os.urandom(weights.stat().st_size))
        expect = "model.safetensors is not a readable safetensors file"
    elif damage == "bad_config_value":
        config = json.loads((ckpt / "config.json").read_text())
        config["sliding_window"] = "abc"
        (ckpt / "config.json").write_text(json.dumps(config))
        expect = "config.json"
    else:
        (ckpt / "vocab_map.json").write_text(json.dumps({"original_ids": [0, "x"], "original_vocab_size": 64}))
        expect = "vocab_map.json is not a valid vocabulary map"
    out = tmp_path / "e5"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("a b c d e f. " * 50)
    assert simulate.main(["pretrained", "--checkpoint", str(ckpt), "--quiet", "--out", str(out), "--corpus-source",
                          str(corpus), "--cache-dir", str(tmp_path / "cache"), "--top-tokens", "5",
                          "--token-sets", "top", "--topk", "2", "--theory-rank", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err and "Traceback" not in err, err
    assert not out.exists()


def test_corpus_messages_name_the_real_cause(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert simulate.main(["llm", "--quiet", "--out", str(tmp_path / "a"), "--corpus-source", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert "corpus_corpus" not in err and "empty corpus" in err, err
    one = tmp_path / "one"
    one.mkdir()
    (one / "a.txt").write_text("")
    assert simulate.main(["llm", "--quiet", "--out", str(tmp_path / "b"), "--corpus-source", str(one),
                          "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip()
    assert "corpus_source" in err and "tokens" in err and "eval_fraction" not in err, err
    assert simulate.main(["linear", *FAST, "--quiet", "--out", str(tmp_path / "c"), "--anchor-weights",
                          "nan,1,1,1"]) == 2
    assert "finite" in capsys.readouterr().err


def test_public_theory_functions_check_their_inputs():
    import numpy as np

    from probsig_jax.data import CompositeAdditionConfig, make_composite_addition
    from probsig_jax.signatures import signature_matrix
    from probsig_jax.theory.linear import closed_form, integrate_flow
    from probsig_jax.validation import ConfigError

    task = make_composite_addition(CompositeAdditionConfig(key_max=30))
    M = signature_matrix(task.train)
    V, d = M.shape[0], 4
    rng = np.random.default_rng(0)
    E0, U0 = 1e-3 * rng.standard_normal((d, V)), 1e-3 * rng.standard_normal((V, d))
    cases = [
        (lambda: closed_form(M, E0, U0, ["a"]), "t"),
        (lambda: closed_form("abc", E0, U0, [1.0]), "M"),
        (lambda: closed_form(np.where(M == M.max(), np.nan, M), E0, U0, [1.0]), "M"),
        (lambda: closed_form(M, np.full_like(E0, np.inf), U0, [1.0]), "E0"),
        (lambda: integrate_flow(task.train, np.full_like(E0, np.nan), U0, [0.0, 1.0]), "E0"),
        (lambda: integrate_flow(task.train, E0, U0, [0.0, 50.0], max_steps=2), "max_steps"),
        (lambda: integrate_flow(M, E0, U0, [0.0, 1.0]), "dataset"),
    ]
    for call, field in cases:
        with pytest.raises(ConfigError) as info:
            call()
        assert info.value.field == field
    with pytest.raises(TypeError, match="Dataset or SignatureCounts"):
        signature_matrix(np.zeros((3, 2)))


def test_an_interrupt_during_a_checkpoint_write_takes_effect_after_it():
    """A SIGTERM inside ``interrupts_deferred`` is held back and delivered to the previous handler once the
    block is done (this test installs that handler itself, so other tests' handlers do not matter)."""
    from probsig_jax.training.checkpoints import interrupts_deferred

    class Delivered(Exception):
        pass

    def handler(signum, frame):
        raise Delivered()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        finished = []
        with pytest.raises(Delivered):
            with interrupts_deferred():
                signal.raise_signal(signal.SIGTERM)
                finished.append(True)                  # still runs: the signal waits for the block
        assert finished == [True]
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, previous)
