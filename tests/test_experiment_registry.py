"""The house rules of the package layout (issue: one obvious place for each job), as tests that can fail.

* a config built in Python, the same config built by the command line and the one loaded back from the
  run's ``config.json`` give identical ``metrics.json`` (timings aside), for ``linear`` and ``ffn``;
* ``seed`` and ``preset`` mean the same from Python as from the command line;
* the CLI's subcommands are exactly the registry; a new experiment is one registry entry plus its module;
* each config is checked once per run and each task generated once;
* E4's and the corpus theory's imports do not load sympy or diffrax;
* no package module is over ~400 lines without a stated reason, and the public API resolves.
"""

from __future__ import annotations

import dataclasses

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import probsig_jax
from probsig_jax import simulate
from probsig_jax.data import PRESETS, DataEdit
from probsig_jax.experiments import REGISTRY, RegistryEntry, get_experiment, load_config, run_experiment
from probsig_jax.experiments.ffn import FFNExperimentConfig
from probsig_jax.experiments.intervene import InterventionConfig
from probsig_jax.experiments.linear import LinearExperimentConfig
from probsig_jax.experiments.modadd_noise import ModularNoiseConfig
from probsig_jax.data.modular import ModularTaskConfig
from probsig_jax.experiments.toy_tasks import TOY_ALIGNMENT
from probsig_jax.training.supervised import TrainConfig
from probsig_jax.validation import ConfigError

REPO = Path(__file__).resolve().parents[1]
VOLATILE = {"wall_time_s", "timings", "timing_s"}


def _metrics(run_dir: Path) -> dict:
    m = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in m.items() if k not in VOLATILE}


# --- one config, three ways ---------------------------------------------------------------------------

CASES = {
    "linear": (LinearExperimentConfig(seed=7, dim=24, init_scale=1e-3,
                                      train=TrainConfig(steps=300, learning_rate=0.05, record_every=20)),
               ["--seed", "7", "--dim", "24", "--init-scale", "1e-3", "--steps", "300"]),
    "ffn": (FFNExperimentConfig(seed=3, preset="simple", dim=16, hidden=(32,), init_scale=(1e-2,),
                                train=TrainConfig(optimizer="adam", learning_rate=2e-3, steps=100, batch_size=64,
                                                  record_every=25),
                                alignment=dataclasses.replace(TOY_ALIGNMENT, permutations=199, bootstrap=200)),
            ["--seed", "3", "--preset", "simple", "--dim", "16", "--hidden", "32", "--init-scale", "1e-2",
             "--steps", "100", "--batch-size", "64", "--record-every", "25", "--permutations", "199",
             "--bootstrap", "200"]),
    "modadd-noise": (ModularNoiseConfig(task=ModularTaskConfig(modulus=17, split_seed=2), noise_ratios=(0.3,),
                                        bijective_noise_ratios=(), mixed_moduli=(), width=16, early_steps=8,
                                        permutations=19, seed=4,
                                        train=TrainConfig(optimizer="adam", learning_rate=1e-3, steps=8,
                                                          record_every=4, schedule="warmup_cosine", warmup_steps=2,
                                                          final_learning_rate=1e-5, schedule_steps=100)),
                     ["--modulus", "17", "--split-seed", "2", "--noise-ratios", "0.3", "--bijective-noise-ratios",
                      "", "--mixed-moduli", "", "--width", "16", "--early-steps", "8", "--permutations", "19",
                      "--seed", "4", "--steps", "8", "--record-every", "4", "--warmup-steps", "2",
                      "--schedule-steps", "100"]),
}
SLOW_CASES = {"linear", "ffn"}


# linear (50-75 s) and ffn (~20 s) are slow: the default run checks the mechanism (nested TrainConfig and task
# configs, tuple options, an empty tuple) on modadd-noise; -m slow runs all
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_CASES else n
                                  for n in sorted(CASES)])
def test_python_cli_and_saved_config_give_the_same_run(name, tmp_path):
    config, argv = CASES[name]
    py = run_experiment(name, config, out=tmp_path / "python", quiet=True)
    assert simulate.main([name, *argv, "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    # rerun from the record: the subcommand comes from the file when it is not given
    assert simulate.main(["--config", str(py / "config.json"), "--out", str(tmp_path / "rerun"), "--quiet"]) == 0
    records = {k: json.loads((tmp_path / k / "config.json").read_text()) for k in ("python", "cli", "rerun")}
    assert records["python"]["config"] == records["cli"]["config"] == records["rerun"]["config"]
    assert all(r["command"] == name and r["seed"] == config.seed for r in records.values())
    a, b, c = (_metrics(tmp_path / k) for k in ("python", "cli", "rerun"))
    assert a == b == c
    assert load_config(py)[1] == config.resolved()
    # an override on top of the record changes the run (and only what it says)
    assert simulate.main([name, "--config", str(py), "--seed", "8", "--out", str(tmp_path / "seed8"),
                          "--quiet"]) == 0
    changed = json.loads((tmp_path / "seed8" / "config.json").read_text())["config"]
    assert changed["seed"] == 8
    if "data" in changed:                       # the toy tasks' seed also draws the data and the batches
        assert changed["data"]["seed"] == changed["train"]["seed"] == 8
    assert _without_seeds(changed) == _without_seeds(records["python"]["config"])
    assert _metrics(tmp_path / "seed8") != a


def _without_seeds(tree):
    if isinstance(tree, dict):
        return {k: _without_seeds(v) for k, v in tree.items() if k != "seed"}
    return tree


def test_seed_reaches_data_initialisation_and_training():
    resolved = LinearExperimentConfig(seed=7).resolved()
    assert resolved.data.seed == 7 and resolved.train.seed == 7 and resolved.data == PRESETS["simple"].replace(seed=7)
    assert resolved.resolved() is resolved                         # a resolved config resolves to itself
    ffn = FFNExperimentConfig(seed=5, train=TrainConfig(seed=99)).resolved()
    assert ffn.data.seed == 5 and ffn.train.seed == 5               # the experiment's seed wins, as documented
    edited = InterventionConfig(base=LinearExperimentConfig(seed=4)).resolved()
    assert edited.edited_data.seed == 4 and edited.edited_data.anchor_weights == (4.0, 1.0, 1.0, 1.0)


# slow: 25-35 s; kept out of the default run for its CI budget (run with -m slow)
@pytest.mark.slow
def test_preset_means_the_same_from_python_and_the_cli(tmp_path):
    assert FFNExperimentConfig(preset="simple").resolved().data == PRESETS["simple"]
    assert LinearExperimentConfig(preset="anchor4").resolved().data == PRESETS["anchor4"].replace(seed=0)
    from probsig_jax.experiments.ffn import run_ffn

    small = TrainConfig(optimizer="adam", learning_rate=2e-3, steps=20, batch_size=32, record_every=10)
    result = run_ffn(FFNExperimentConfig(preset="simple", dim=8, hidden=(16,), train=small), quiet=True)
    assert result.task.config == PRESETS["simple"] and result.metrics["vocab_size"] == 64
    # a new --preset on top of a recorded config drops the recorded data config
    out = run_experiment("ffn", FFNExperimentConfig(dim=8, hidden=(16,), train=small), out=tmp_path / "a", quiet=True)
    assert simulate.main(["ffn", "--config", str(out), "--preset", "simple", "--key-max", "45",
                          "--out", str(tmp_path / "b"), "--quiet"]) == 0
    data = json.loads((tmp_path / "b" / "config.json").read_text())["config"]["data"]
    assert data["key_max"] == 45 and data["anchors_per_input"] == 1 and data["seq_len"] == 2


def test_config_json_round_trip_is_exact():
    config = InterventionConfig(base=LinearExperimentConfig(seed=2, dim=16),
                                edits=(DataEdit("held_out", ("4",)), DataEdit("relabel", ({"combo": [3], "shift": 9},)),
                                       DataEdit("label_noise", 0.1))).resolved()
    from probsig_jax.runs import to_jsonable

    again = InterventionConfig.from_dict(json.loads(json.dumps(to_jsonable(config))))
    assert again == config
    assert [str(e) for e in again.edits] == ["held_out=4", "relabel=3=9", "label_noise=0.1"]
    with pytest.raises(ConfigError, match="unknown field"):
        LinearExperimentConfig.from_dict({"dimm": 3})
    with pytest.raises(ConfigError, match="config.dim"):
        LinearExperimentConfig.from_dict({"dim": "wide"})


def test_cli_rejects_a_config_of_another_experiment(tmp_path, capsys):
    out = run_experiment("modadd-noise", CASES["modadd-noise"][0], out=tmp_path / "e6", quiet=True)
    assert simulate.main(["ffn", "--config", str(out), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "modadd-noise" in err and "config" in err
    assert simulate.main(["linear", "--config", str(tmp_path / "missing.json"), "--out", str(tmp_path / "y")]) == 2


# --- the registry ---------------------------------------------------------------------------------------

def _subcommands(parser) -> set[str]:
    return set(next(a for a in parser._actions if a.dest == "command").choices)


def test_cli_subcommands_are_exactly_the_registry():
    parser, options = simulate.build_parser()
    assert _subcommands(parser) == set(REGISTRY) == set(options)
    for name in REGISTRY:
        assert get_experiment(name).name == name
    # --tensorboard exactly where the experiment streams its training metrics
    sub = next(a for a in parser._actions if a.dest == "command")
    with_tb = {n for n, p in sub.choices.items() if any("--tensorboard" in a.option_strings for a in p._actions)}
    assert with_tb == {n for n in REGISTRY if get_experiment(n).streams_metrics} == {"llm"}


TOY_MODULE = '''
from dataclasses import dataclass, field
from probsig_jax.analysis import plots
from probsig_jax.config_base import Config
from probsig_jax.experiments import Experiment
from probsig_jax.training.supervised import TrainConfig


@dataclass(frozen=True)
class CountConfig(Config):
    n: int = 3
    """How many."""
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    derived_fields = ("train.seed",)

    def resolved(self):
        return self.replace(train=self.train.replace(seed=self.seed))


@dataclass
class Result:
    metrics: dict


def run(config, ctx):
    return Result({"experiment": "count", "total": config.n * (config.seed + 1), "steps": config.train.steps})


def write_outputs(result, out):
    return [plots.save(plots.plot_curves({"n": ([0, 1], [0, result.metrics["total"]])}, logy=False), out / "n.png")]


EXPERIMENT = Experiment(name="count", title="a toy", config_class=CountConfig, run=run, write_outputs=write_outputs,
                        summary=lambda m: [f"total {m['total']}"])
'''


def test_a_new_experiment_is_one_registry_entry_plus_its_module(tmp_path, monkeypatch):
    (tmp_path / "count_experiment.py").write_text(textwrap.dedent(TOY_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(REGISTRY, "count", RegistryEntry("count_experiment", "a toy experiment"))
    parser, _ = simulate.build_parser(["count"])
    assert "count" in _subcommands(parser)
    out = tmp_path / "run"
    assert simulate.main(["count", "--n", "4", "--seed", "2", "--steps", "7", "--record-every", "7", "--out", str(out),
                          "--quiet"]) == 0
    assert _metrics(out) == {"experiment": "count", "total": 12, "steps": 7}
    assert {"config.json", "metrics.json", "report.md", "n.png"} <= {p.name for p in out.iterdir()}
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["train"]["seed"] == 2 and "total 12" in (out / "report.md").read_text()


# --- checked once, generated once -----------------------------------------------------------------------

# slow: 25-35 s; kept out of the default run for its CI budget (run with -m slow)
@pytest.mark.slow
def test_the_task_generator_runs_once_per_task_of_simulate_intervene(tmp_path, monkeypatch):
    """E2 has two tasks (baseline and edited): each is generated exactly once, before the first training step."""
    import probsig_jax.data.composite_addition as ca

    original, calls = ca.make_composite_addition, []

    def counting(config):
        calls.append(config)
        return original(config)

    for module in [m for name, m in sys.modules.items() if name.startswith("probsig_jax")]:
        if getattr(module, "make_composite_addition", None) is original:
            monkeypatch.setattr(module, "make_composite_addition", counting)
    assert simulate.main(["intervene", "--dim", "16", "--steps", "200", "--edit", "label_noise=0.2",
                          "--out", str(tmp_path / "e2"), "--quiet"]) == 0
    assert len(calls) == 2 and calls[0] != calls[1]
    assert calls[1].label_noise == 0.2 and calls[0].label_noise == 0.0


# slow: 25-35 s; kept out of the default run for its CI budget (run with -m slow)
@pytest.mark.slow
def test_each_config_is_checked_once_per_e4_run(tmp_path, monkeypatch):
    from probsig_jax.experiments.llm import LLMExperimentConfig
    from probsig_jax.training.lm_loop import LMRunConfig
    from probsig_jax.training.lm_optimizer import LMTrainConfig

    counts = {}
    for cls in (LMTrainConfig, LMRunConfig, LLMExperimentConfig):
        real = cls._check

        def counted(self, real=real, name=cls.__name__):
            counts[name] = counts.get(name, 0) + 1
            return real(self)

        monkeypatch.setattr(cls, "_check", counted)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("the cat sat on the mat. 1 2 3 4 5 6 7 8 9 0. the dog sat on the log.\n" * 40)
    assert simulate.main(["llm", "--out", str(tmp_path / "e4"), "--quiet", "--corpus-source", str(corpus),
                          "--cache-dir", str(tmp_path / "cache"), "--num-workers", "1", "--top-tokens", "10",
                          "--theory-rank", "4", "--hidden-size", "16", "--total-steps", "4", "--warmup-steps", "1",
                          "--batch-size", "2", "--seq-len", "8", "--eval-every", "2"]) == 0
    assert counts == {"LMTrainConfig": 1, "LMRunConfig": 1, "LLMExperimentConfig": 1}


# --- imports, sizes, the public API ------------------------------------------------------------------------

LIGHT_MODULES = ("probsig_jax", "probsig_jax.theory.corpus", "probsig_jax.experiments.llm",
                 "probsig_jax.experiments.pretrained")


def test_corpus_side_imports_load_neither_sympy_nor_diffrax():
    """One fresh interpreter imports the modules one after another and lists what is loaded after each: a module
    whose import pulls in sympy or diffrax shows it on its own line (none of the modules before it loaded them, so
    it is the one), exactly as a fresh interpreter per module would (one start-up instead of four)."""
    code = ("import importlib, sys\n"
            f"for module in {LIGHT_MODULES!r}:\n"
            "    importlib.import_module(module)\n"
            "    print(module, ','.join(m for m in ('sympy', 'diffrax') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split(" ")[0] for line in lines] == list(LIGHT_MODULES), proc.stdout
    for module, line in zip(LIGHT_MODULES, lines):
        heavy = line.split(" ", 1)[1].strip()
        assert heavy == "", f"{module} imports {heavy}"


LONG_MODULES_WITH_REASON: set[str] = set()


def test_no_package_module_is_long_without_a_stated_reason():
    long = {}
    for path in sorted((REPO / "probsig_jax").rglob("*.py")):
        lines = len(path.read_text().splitlines())
        rel = path.relative_to(REPO).as_posix()
        if lines > 420:
            long[rel] = lines
    assert set(long) <= LONG_MODULES_WITH_REASON, long
    for rel in LONG_MODULES_WITH_REASON:
        assert "Length (over the ~400-line guideline" in (REPO / rel).read_text()


def test_no_two_modules_share_a_name_across_jobs():
    """Module stems are unique within a package tree level that a reader scans together (no train.py beside
    train_lm.py beside lm_training.py)."""
    top = sorted(p.stem for p in (REPO / "probsig_jax").glob("*.py"))
    assert not {"train", "train_lm", "lm_training", "lm_data", "losses", "checkpoints", "sharding", "plots",
                "analysis", "tokenizer", "vocab"} & set(top), top
    training = sorted(p.stem for p in (REPO / "probsig_jax" / "training").glob("*.py"))
    assert "train" not in training and "lm_training" not in training


def test_the_public_api_resolves_every_name():
    assert 20 <= len(probsig_jax.__all__) <= 35
    for name in probsig_jax.__all__:
        assert getattr(probsig_jax, name) is not None, name
    assert "data" in probsig_jax.__doc__ and "experiments" in probsig_jax.__doc__
    task = probsig_jax.make_composite_addition(probsig_jax.CompositeAdditionConfig())
    assert probsig_jax.signature_matrix(task.train).shape == (64, 64)
    np.testing.assert_allclose(probsig_jax.signature_matrix(task.train).sum(axis=0), 0.0, atol=1e-12)
