"""``--seeds``: one run per seed, every number aggregated (mean, std, Student-t interval), reproducible."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats

from probsig_jax import simulate
from probsig_jax.experiments.runner import run_experiment
from probsig_jax.experiments.seeds import aggregate, parse_seeds, summarise
from probsig_jax.validation import ConfigError

SMALL = {"linear": ["--steps", "300", "--dim", "16"],
         # the simple task and 199 / 200 relabellings / resamples: the mechanism, not the numbers, is under test
         "ffn": ["--steps", "150", "--init-scale", "1e-2", "--record-every", "50", "--preset", "simple", "--dim",
                 "16", "--hidden", "32", "--permutations", "199", "--bootstrap", "200"],
         "modadd-noise": ["--modulus", "17", "--noise-ratios", "0.3", "--bijective-noise-ratios", "", "--mixed-moduli",
                          "", "--width", "16", "--steps", "8", "--record-every", "4", "--early-steps", "8",
                          "--warmup-steps", "2", "--schedule-steps", "100", "--permutations", "19"]}


def test_summarise_is_the_student_t_interval():
    values = [0.5, 0.6, 0.7, 0.65]
    s = summarise(values)
    half = scipy.stats.t.ppf(0.975, 3) * np.std(values, ddof=1) / 2
    assert s["mean"] == pytest.approx(np.mean(values)) and s["std"] == pytest.approx(np.std(values, ddof=1))
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((np.mean(values) - half, np.mean(values) + half))
    merged = aggregate([{"a": 1.0, "c": [1.0, 2.0], "name": "x", "timings": {"s": 1.0}},
                        {"a": 3.0, "c": [3.0, 4.0], "name": "x", "timings": {"s": 9.0}}])
    assert merged["a"]["mean"] == 2.0 and merged["c"] == {"mean": [2.0, 3.0], "std": [np.sqrt(2), np.sqrt(2)]}
    assert merged["name"] == "x" and "timings" not in merged


@pytest.mark.parametrize("value, message", [("0", "at least 2"), ("0,0", "repeats"), ("a,b", "comma list"),
                                            ("0,-1", "seeds")])
def test_bad_seeds_are_one_line_errors(value, message):
    with pytest.raises(ConfigError) as err:
        parse_seeds(value)
    assert err.value.field == "seeds" and message in str(err.value)


# linear (90-135 s) and ffn (30-50 s) are slow: the default run checks the seed mechanism on a tiny modadd-noise;
# -m slow runs all three
@pytest.mark.parametrize("command", [pytest.param("linear", marks=pytest.mark.slow),
                                     pytest.param("ffn", marks=pytest.mark.slow), "modadd-noise"])
def test_seeds_on_the_toy_experiments_aggregate_and_reproduce(command, tmp_path):
    # (The same seeds giving the same numbers is checked by the rerun from the record at the end.)
    assert simulate.main([command, *SMALL[command], "--seeds", "0,1", "--out", str(tmp_path / "a"), "--quiet"]) == 0
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert a["seeds"] == [0, 1] and set(a["per_seed"]) == {"0", "1"}
    final_loss = a["aggregate"]["final_loss"] if command == "linear" else None
    if final_loss is not None:
        values = [a["per_seed"][s]["final_loss"] for s in ("0", "1")]
        assert final_loss["values"] == values and final_loss["mean"] == pytest.approx(np.mean(values))
        assert final_loss["ci_low"] <= final_loss["mean"] <= final_loss["ci_high"] and final_loss["std"] > 0
    report = (tmp_path / "a" / "report.md").read_text()
    assert "mean over seeds" in report and (tmp_path / "a" / "seed_1" / "report.md").is_file()
    if command in ("linear", "ffn"):      # the toy tasks' alignment has a figure over seeds
        assert (tmp_path / "a" / "alignment_over_seeds.png").read_bytes()[:4] == b"\x89PNG"
    else:
        drop = a["aggregate"]["conditions"]["uniform alpha=0.3"]["subsets"]["noisy"]["loss_drop_early"]
        values = [a["per_seed"][s]["conditions"]["uniform alpha=0.3"]["subsets"]["noisy"]["loss_drop_early"]
                  for s in ("0", "1")]
        assert drop["values"] == values and values[0] != values[1] and drop["ci_low"] <= drop["mean"] <= drop["ci_high"]
    # The seed's own run is the single-seed run with that seed.
    single = tmp_path / "single"
    assert simulate.main([command, *SMALL[command], "--seed", "1", "--out", str(single), "--quiet"]) == 0
    one = json.loads((single / "metrics.json").read_text())
    strip = lambda m: {k: v for k, v in m.items() if k not in ("timings", "wall_time_s")}  # noqa: E731
    assert strip(one) == strip(a["per_seed"]["1"])
    # A rerun from the record reuses its seeds.
    assert simulate.main(["--config", str(tmp_path / "a"), "--out", str(tmp_path / "c"), "--quiet"]) == 0
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["aggregate"] == a["aggregate"]


# slow: 90-130 s; the seed mechanism is the runner's, checked on ffn by default (run with -m slow)
@pytest.mark.slow
def test_seeds_on_llm(tmp_path):
    from test_experiments_llm import small_config, write_corpus

    corpus = write_corpus(tmp_path / "corpus")
    config = small_config(corpus, tmp_path / "cache", steps=8)
    out = run_experiment("llm", config, out=tmp_path / "run", quiet=True, seeds=(0, 1))
    m = json.loads((out / "metrics.json").read_text())
    top = m["aggregate"]["token_sets"]["top"]["trained"]["embedding_vs_signature"]["pearson"]
    assert top["n"] == 2 and top["ci_low"] <= top["mean"] <= top["ci_high"]
    assert top["values"] == [m["per_seed"][s]["token_sets"]["top"]["trained"]["embedding_vs_signature"]["pearson"]
                             for s in ("0", "1")]
    assert top["values"][0] != top["values"][1]                      # different initialisations
    assert (out / "alignment_over_seeds.png").is_file() and (out / "seed_0" / "model").is_dir()
    again = run_experiment("llm", config, out=tmp_path / "again", quiet=True, seeds=(0, 1))
    assert json.loads((again / "metrics.json").read_text())["aggregate"] == m["aggregate"]


def test_every_number_over_seeds_is_one_table_row():
    from probsig_jax.experiments.seeds import seed_number_rows, seed_number_table

    trees = [{"a": 1.0, "curve": [1.0, 2.0], "name": "x", "rows": [{"b": 2.0}], "missing": None},
             {"a": 3.0, "curve": [3.0, 4.0], "name": "x", "rows": [{"b": 4.0}], "missing": None}]
    rows = seed_number_rows(aggregate(trees))
    s = summarise([1.0, 3.0])
    assert rows[0] == (f"| a | 2 | {s['std']:.3g} | [{s['ci_low']:.4g}, {s['ci_high']:.4g}] | 2 | 1, 3 |")
    assert rows[1].startswith("| rows[0].b | 3 |")
    assert len(rows) == 2            # the curve and the string are not numbers over seeds; all-None is dropped
    assert seed_number_table(aggregate(trees)).splitlines()[0].startswith("| metric | mean over seeds |")
    assert seed_number_table({"name": "x"}) == ""
