"""The experiments of PAPER section 8, one module each, and their registry.

``REGISTRY`` maps a name (the ``simulate`` subcommand) to the module that defines it and a one-line
description. Each module defines ``EXPERIMENT``, an :class:`Experiment`: its config class, its ``run``,
the writer of its figures and arrays, and its summary. Adding an experiment is one registry entry plus
its module; the command line, ``run_experiment`` and the reruns from a saved ``config.json`` pick it up.
Modules are imported on first use, so an experiment never pays for another's imports (E4 does not load
sympy or diffrax).

    from probsig_jax.experiments import get_experiment, run_experiment
    out = run_experiment("linear", LinearExperimentConfig(seed=7), out="runs/e1-seed7")
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

from probsig_jax._lazy import lazy_exports
from probsig_jax.validation import ConfigError


class RegistryEntry(NamedTuple):
    module: str
    """The module defining ``EXPERIMENT``."""
    help: str
    """One line for ``simulate --help``."""


REGISTRY: dict[str, RegistryEntry] = {
    "linear": RegistryEntry("probsig_jax.experiments.linear",
                            "E1: closed form vs integrated flow vs gradient descent, linear model"),
    "intervene": RegistryEntry("probsig_jax.experiments.intervene",
                               "E2: edit the data distribution; predicted vs measured change of the key-embedding "
                               "similarity"),
    "ffn": RegistryEntry("probsig_jax.experiments.ffn",
                         "E3: feed-forward net vs linear model, accuracy and alignment over training; several "
                         "--init-scale values run the initialisation-scale sweep"),
    "ffn-theory": RegistryEntry("probsig_jax.experiments.ffn_theory",
                                "E3 theory: the FFN's small-initialisation flow (leading and second order) vs "
                                "full-batch gradient descent, escape-time law, gradient cosines (also: ffn "
                                "--optimizer gd)"),
    "llm": RegistryEntry("probsig_jax.experiments.llm",
                         "E4: Qwen2.5-architecture model trained from scratch on a corpus (default: the embedded "
                         "Python stdlib); embedding vs signature alignment over training"),
    "llm-edit": RegistryEntry("probsig_jax.experiments.llm_edit",
                              "E4 intervention: edit the corpus (default: a planted cluster), predict the change "
                              "of W_E / W_U similarity from the counts, train baseline and edited models from one "
                              "initialisation and measure it"),
    "ladder": RegistryEntry("probsig_jax.experiments.ladder",
                            "E4 ladder (a, b): the exact bigram model over the corpus's top-K tokens, gradient descent "
                            "vs the closed form, Adam vs the gradient-flow and sign-descent predictions"),
    "modadd": RegistryEntry("probsig_jax.experiments.modadd",
                            "E6: modular addition; each hidden unit's Fourier frequency predicted from the "
                            "initialisation (argmin of the modes' blow-up times) and by the truncated model, against "
                            "gradient-descent training"),
    "modadd-gradients": RegistryEntry("probsig_jax.experiments.modadd_gradients",
                                      "E6: the Proposition-1, Theorem-1 and Theorem-2 estimates of the gradient "
                                      "against the true one along Adam training (GELU, x^2; full table, noisy split)"),
    "modadd-regimes": RegistryEntry("probsig_jax.experiments.modadd_regimes",
                                    "E6: clean / noisy / test accuracy over training for a grid of weight decays "
                                    "(Adam, label noise)"),
    "modadd-noise": RegistryEntry("probsig_jax.experiments.modadd_noise",
                                  "E6: the early-noise puzzle; clean vs noisy (and per-part) loss over the first "
                                  "epochs against the label-collision counts, with the bijective-noise and "
                                  "mixed-moduli controls"),
    "pretrained": RegistryEntry("probsig_jax.experiments.pretrained",
                                "E5: a local HF causal LM checkpoint's (or a series') embeddings vs the corpus "
                                "signatures (--checkpoint DIR)"),
}
DEFAULT_EXPERIMENT = "linear"


@dataclass(frozen=True)
class RunContext:
    """What the runner gives an experiment besides its config.

    Attributes:
      out: the run directory being written (it exists only once the run is complete).
      quiet: no progress bars.
      work_dir: a directory beside ``out`` that survives an interrupted run and is removed when the run
        completes (e.g. training checkpoints, so the same command resumes, and the live ``metrics.jsonl``);
        ``None`` for a run with no run directory.
      tensorboard_dir: where a training experiment writes TensorBoard event files (``--tensorboard``); None for
        none.
    """

    out: Path | None = None
    quiet: bool = False
    work_dir: Path | None = None
    tensorboard_dir: Path | None = None


@dataclass(frozen=True)
class Experiment:
    """One experiment.

    Attributes:
      name: its registry name.
      title: the heading of its ``report.md``.
      config_class: its config (a :class:`~probsig_jax.config_base.Config` with a ``seed``).
      run: ``(config, RunContext) -> result`` with ``result.metrics`` (JSON-able); the config is resolved
        and validated.
      write_outputs: ``(result, directory) -> figure paths``: the PNG figures and ``arrays.npz`` (and
        anything else the experiment keeps) written into the run directory.
      summary: ``metrics -> lines`` printed after the run and listed in ``report.md``.
      notes: ``metrics -> lines`` appended to ``report.md`` (optional).
      streams_metrics: the experiment trains and streams its metrics while it runs (``metrics.jsonl`` in the
        work directory, TensorBoard with ``--tensorboard``).
    """

    name: str
    title: str
    config_class: type
    run: Callable[[Any, RunContext], Any]
    write_outputs: Callable[[Any, Path], list[Path]]
    summary: Callable[[dict[str, Any]], list[str]]
    notes: Callable[[dict[str, Any]], list[str]] | None = None
    streams_metrics: bool = False


def get_experiment(name: str) -> Experiment:
    """The registered experiment ``name`` (its module is imported now)."""
    if name not in REGISTRY:
        raise ConfigError("experiment", f"must be one of {', '.join(REGISTRY)}, got {name!r}")
    experiment = importlib.import_module(REGISTRY[name].module).EXPERIMENT
    if experiment.name != name:
        raise RuntimeError(f"{REGISTRY[name].module}.EXPERIMENT is named {experiment.name!r}, registered as {name!r}")
    return experiment


__getattr__, __dir__ = lazy_exports(__name__, {"run_experiment": "probsig_jax.experiments.runner",
                                               "load_config": "probsig_jax.experiments.runner"})


__all__ = ["DEFAULT_EXPERIMENT", "Experiment", "REGISTRY", "RegistryEntry", "RunContext", "get_experiment",
           "load_config", "run_experiment"]
