"""The benchmark scripts stay runnable (smoke run; timings are not asserted)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_quick(script: str, out: Path, *args: str) -> dict:
    """Run ``benchmarks/<script> --quick`` into ``out``; its JSON result, with provenance."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--quick", *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["benchmark"] == Path(script).stem and result["provenance"]
    return result


@pytest.mark.slow
def test_linear_theory_benchmark_quick(tmp_path):
    result = run_quick("linear_theory.py", tmp_path / "bench.json", "--vocab-sizes", "64")
    row = result["results"][0]
    assert row["vocab_size"] == 64
    assert "closed_form_vs_gd_speedup" in result["summary"]


@pytest.mark.slow
def test_ffn_theory_benchmark_quick(tmp_path):
    rows = run_quick("ffn_theory.py", tmp_path / "ffn.json")["rows"]
    assert [(r["vocab_size"], r["horizon"]) for r in rows] == [(32, "plateau"), (32, "escape"), (48, "plateau"),
                                                                 (48, "escape")]
    for r in rows:
        for key in ("speedup_over_gd", "speedup_over_gd_first_call"):
            assert set(r[key]) == {"leading", "second_order"}
            assert all(v > 0 for v in r[key].values())
        assert r["flow_reached_t"]["leading"] > 0


@pytest.mark.slow
def test_qwen2_train_step_benchmark_quick(tmp_path):
    result = run_quick("qwen2_train_step.py", tmp_path / "qwen2.json", "--device", "cpu")
    summary = result["summary"]
    assert summary["preset"] == "tiny" and summary["ours_tokens_per_s"] > 0 and summary["ours_compile_s"] > 0
    runners = {r["name"]: r for r in result["runners"]}
    ours = next(r for r in result["runners"] if r["framework"] == "jax")   # the library step (auto attention)
    rounds = result["provenance"]["config"]["rounds"]
    assert ours["num_steps"] == len(ours["warmup_steps_s"]) + len(ours["steps_s"]) + rounds  # + a settle step per round
    if "skipped" not in result["torch"]:  # torch + transformers installed (the test extra): same work was timed
        for name in ("torch eager", "torch sdpa"):
            assert runners[name]["num_steps"] == ours["num_steps"]
            assert runners[name]["loss_first"] == pytest.approx(ours["loss_first"], rel=1e-4)
            assert runners[name]["loss_last"] == pytest.approx(ours["loss_last"], rel=1e-3)
        assert summary["ours_over_torch_eager"] > 0 and "target_met" in summary


@pytest.mark.slow
def test_qwen2_step_profile_quick(tmp_path):
    """The profile attributes (nearly) all of the step's operations to model parts, passes and kinds."""
    result = run_quick("qwen2_step_profile.py", tmp_path / "profile.json")
    parts = result["by_part_ms"]
    assert {"MLP", "attention core", "q/k/v projections", "embedding / output head", "loss", "optimizer"} <= set(parts)
    # "runtime" (PjRt's own events between operations) is real but no operation's; of the operations, nearly all
    # must be traced to a model part
    in_operations = result["attributed_ms_per_step"] - parts.get("runtime", 0.0)
    assert parts.get("other", 0.0) <= 0.1 * in_operations
    kinds = {row["kind"] for row in result["by_part_pass_kind_ms"]}
    passes = {row["pass"] for row in result["by_part_pass_kind_ms"]}
    assert {"matmul", "elementwise"} <= kinds and {"forward", "backward", "update"} <= passes


def _profile_module():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        return importlib.import_module("qwen2_step_profile")
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def test_step_profile_shares_overlapping_time():
    """Wall time is split equally among the operations running at each instant; gaps count for no one."""
    shares, covered, span = _profile_module().wall_time_shares([(0.0, 10.0, "a"), (5.0, 15.0, "b"), (20.0, 22.0, "a")])
    assert shares == {"a": 5.0 + 2.5 + 2.0, "b": 2.5 + 5.0}
    assert covered == 17.0 and span == 22.0


def test_step_profile_traces_operations_to_python_functions():
    """The compiled HLO's stack frames lead each operation back to the function that made it (here the XLA
    version in use decides the frame table's format, which the parser must follow)."""
    import jax
    import jax.numpy as jnp

    profile = _profile_module()

    def hidden_layer_of_this_test(x, w):
        return jnp.tanh(x @ w)

    def loss(w, x):
        return jnp.sum(hidden_layer_of_this_test(x, w) ** 2)

    x, w = jnp.ones((16, 8), jnp.float32), jnp.ones((8, 4), jnp.float32)
    ops = profile.hlo_op_sources(jax.jit(jax.grad(loss)).lower(w, x).compile().as_text())
    assert any("hidden_layer_of_this_test" in op["stack"][0] and "loss" in op["stack"][1] for op in ops.values()
               if len(op["stack"]) >= 2)
    assert any("transpose(" in op["op_name"] for op in ops.values())       # the backward pass is marked


@pytest.mark.slow
def test_qwen2_train_step_sweep_quick(tmp_path):
    """The sweep runs the step benchmark in a fresh process and aggregates its ratios (min / median / max)."""
    result = run_quick("qwen2_train_step_sweep.py", tmp_path / "sweep.json")
    row = result["shapes"]["4x32"]
    run = json.loads((tmp_path / "sweep_runs" / "4x32_run1.json").read_text())["summary"]
    assert row["ours_tokens_per_s"]["runs"] == [run["ours_tokens_per_s"]] and result["target_met"] is None
    for key in (k for k in run if k.startswith("ours_over_torch_")):
        assert row[key]["min"] == row[key]["median"] == row[key]["max"] == run[key]


def test_corpus_pipeline_benchmark_quick(tmp_path):
    """Default run (about 15 s): every stage runs, and the baselines agree with ours."""
    result = run_quick("corpus_pipeline.py", tmp_path / "corpus.json")
    summary = result["summary"]
    assert summary["tokens"] > 10_000 and summary["tokenize_mb_per_s_2_threads"] > 0
    for row in result["counting"]:
        assert row["counter_equal"] and row.get("dense_equal", True)
        assert "dense_equal" in row or "dense_skipped" in row
    top = {r["method"]: r["top_singular_value"] for r in result["svd"] if "seconds" in r}
    assert set(top) == {"arpack", "randomized", "dense numpy.linalg.svd"}
    assert top["randomized"] == pytest.approx(top["arpack"], rel=1e-8)
    assert top["dense numpy.linalg.svd"] == pytest.approx(top["arpack"], rel=1e-8)


def test_alignment_statistics_benchmark_quick(tmp_path):
    """Quick run: ours and the loops agree on the same permutations and resamples."""
    summary = run_quick("alignment_statistics.py", tmp_path / "stats.json")["summary"]
    assert summary["max_abs_diff_mantel_null_vs_loop"] < 1e-6
    assert summary["max_abs_diff_bootstrap_vs_loop"] < 1e-12
    assert summary["mantel_p"] <= 0.01 and summary["bootstrap_ci95"][0] < summary["observed_pearson"]


# slow: tokenizes 2 MB and counts twice; the default suite tests the update against a recount in test_corpus_edits
@pytest.mark.slow
def test_corpus_edit_benchmark_quick(tmp_path):
    """The incremental count update equals the recount on the benchmark's own edit (its correctness is also a
    default-suite unit test, test_corpus_edits)."""
    summary = run_quick("corpus_edit.py", tmp_path / "edit.json")["summary"]
    assert summary["counts_equal"] and summary["edited_positions"] > 0
    assert summary["count_speedup"]["min"] > 0 and summary["ours_total_median_s"] > 0


@pytest.mark.slow   # 13-15 s (three fresh interpreters); the reader itself is tested in tests/test_hf_embeddings.py
def test_hf_embedding_read_benchmark_quick(tmp_path):
    """Quick run (about 15 s: three fresh interpreters): the reader's embeddings equal those of the full load."""
    result = run_quick("hf_embedding_read.py", tmp_path / "hf.json")
    summary = result["summary"]
    assert summary["embeddings_equal"] and summary["shards"] == 4
    assert summary["reader_median_s"] > 0 and summary["all_tensors_peak_rss_mib"] > 0
    assert set(result["timing"]) == {"reader", "all_tensors", "imports_only"}
