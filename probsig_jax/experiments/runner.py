"""Run a registered experiment into a run directory, and load a run's config back.

A run directory holds ``config.json`` (the resolved config, its seed and the provenance), ``metrics.json``,
``report.md``, the figures and ``arrays.npz``. It is written into a hidden temporary directory and renamed
into place only when complete; the experiment's work directory (``.<out>.work``, e.g. training
checkpoints) survives an interruption, so the same call resumes, and is removed once the run is complete.
``load_config`` reads a run's ``config.json`` back into its config class: the same config gives the same
``metrics.json`` (timings aside) on the same machine.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from probsig_jax.experiments import Experiment, RunContext, get_experiment
from probsig_jax.experiments.report import render_report
from probsig_jax.runs import atomic_run_dir, default_run_dir, provenance, to_jsonable, write_json, write_text
from probsig_jax.training.metrics_log import JSONL_NAME
from probsig_jax.validation import ConfigError


def work_dir_for(out: str | Path) -> Path:
    """Where a run writing to ``out`` keeps what must survive an interruption (beside ``out``, stable)."""
    out = Path(out)
    return out.with_name(f".{out.name}.work")


@contextmanager
def _drop_empty_work_dir(work_dir: Path) -> Iterator[None]:
    """On failure, remove ``work_dir`` if it holds nothing to resume from (e.g. a run that diverged before its first
    checkpoint: no file but the live ``metrics.jsonl``); a work directory with checkpoints is kept for the rerun to
    resume."""
    try:
        yield
    except BaseException:
        if work_dir.is_dir() and not any(p.is_file() and p.name != JSONL_NAME for p in work_dir.rglob("*")):
            shutil.rmtree(work_dir, ignore_errors=True)
        raise


def prepare_config(experiment: Experiment, config: Any | None):
    """``config`` (default: the experiment's defaults) resolved and validated, once."""
    config = experiment.config_class() if config is None else config
    if not isinstance(config, experiment.config_class):
        raise ConfigError("config", f"experiment {experiment.name} takes a {experiment.config_class.__name__}, "
                                    f"got {type(config).__name__}")
    return config.resolved().validate()


def run_experiment(name: str, config: Any | None = None, *, out: str | Path | None = None, quiet: bool = False,
                   command: str | None = None, seeds: Any = None, tensorboard: str | Path | None = None) -> Path:
    """Run experiment ``name`` with ``config`` into the run directory ``out`` (default ``runs/<UTC time>``,
    which must not exist) and return its path. ``command`` is recorded in ``report.md`` (default: this
    process's command line). ``seeds`` (e.g. ``(0, 1, 2, 3, 4)``): one run per seed in ``seed_<s>/`` and the
    numbers aggregated over seeds at the top (:mod:`probsig_jax.experiments.seeds`). ``tensorboard``: a directory
    for the TensorBoard event files of the experiments that train (one subdirectory ``seed_<s>`` per seed); their
    live ``metrics.jsonl`` is in the work directory ``.<out>.work/`` while the run goes, and in the run directory
    afterwards."""
    experiment = get_experiment(name)
    config = prepare_config(experiment, config)
    if seeds is not None:
        from probsig_jax.experiments.seeds import parse_seeds
        seeds = parse_seeds(seeds)
        configs = [prepare_config(experiment, config.replace(seed=s)) for s in seeds]
    if out is not None and str(out).strip() == "":
        raise ConfigError("out", "must be a directory path, got an empty string")
    out = Path(out) if out is not None else default_run_dir()
    work_dir = work_dir_for(out)
    shown = command or "python -m probsig_jax.simulate " + " ".join(sys.argv[1:])
    if tensorboard is not None and str(tensorboard).strip() == "":
        raise ConfigError("tensorboard", "must be a directory path, got an empty string")
    tb = Path(tensorboard) if tensorboard is not None else None
    tic = time.perf_counter()
    # Once the run is in place nothing is left to resume: the work directory goes (under the run lock).
    with atomic_run_dir(out, after_complete=lambda: shutil.rmtree(work_dir, ignore_errors=True)) as tmp, \
            _drop_empty_work_dir(work_dir):
        if seeds is None:
            summary, figures = _run_into(experiment, config, tmp, RunContext(out=out, quiet=quiet, work_dir=work_dir,
                                                                              tensorboard_dir=tb), shown, tic)
        else:
            per_seed = {}
            for seed, seed_config in zip(seeds, configs):
                sub = tmp / f"seed_{seed}"
                sub.mkdir()
                context = RunContext(out=out / sub.name, quiet=quiet, work_dir=work_dir / sub.name,
                                     tensorboard_dir=None if tb is None else tb / sub.name)
                _run_into(experiment, seed_config, sub, context, shown, time.perf_counter())
                per_seed[seed] = json.loads((sub / "metrics.json").read_text())
            summary, figures = _aggregate_into(experiment, config, seeds, per_seed, tmp, shown, tic)
    if not quiet:
        for line in summary:
            print(line)
        print(f"wrote {out}/ (report.md, metrics.json, config.json, {len(figures)} figures)")
    return out


def _run_into(experiment: Experiment, config: Any, directory: Path, context: RunContext, shown: str,
              tic: float) -> tuple[list[str], list[Path]]:
    """One run's outputs into ``directory``; returns its summary lines and figures."""
    result = experiment.run(config, context)
    metrics = dict(result.metrics, wall_time_s=time.perf_counter() - tic)
    figures = experiment.write_outputs(result, directory)
    write_json(directory / "config.json", {"command": experiment.name, "config": to_jsonable(config),
                                           "seed": config.seed, "provenance": provenance()})
    write_json(directory / "metrics.json", metrics)
    summary = experiment.summary(metrics)
    notes = experiment.notes(metrics) if experiment.notes is not None else ()
    write_text(directory / "report.md", render_report(experiment.title, shown, summary, metrics, figures, notes))
    return summary, figures


INLINE_NUMBER_ROWS = 200
"""A multi-seed report lists every number inline up to this many rows; beyond, only in numbers_over_seeds.md."""


def _aggregate_into(experiment: Experiment, config: Any, seeds: tuple[int, ...], per_seed: dict[int, Any],
                    directory: Path, shown: str, tic: float) -> tuple[list[str], list[Path]]:
    """The top of a multi-seed run: aggregated metrics, the curves over training with bands, the report."""
    from probsig_jax.analysis import plots
    from probsig_jax.experiments.seeds import (aggregate, seed_curves, seed_number_table, seed_summary_lines,
                                               seed_table)

    aggregated = aggregate([per_seed[s] for s in seeds])
    metrics = {"experiment": experiment.name, "seeds": list(seeds), "aggregate": aggregated,
               "per_seed": {str(s): m for s, m in per_seed.items()}, "wall_time_s": time.perf_counter() - tic}
    figures = []
    curves = seed_curves(aggregated)
    if curves:
        ax = plots.plot_curves({k: (x, m) for k, (x, m, _) in curves.items()},
                               bands={k: (m - sd, m + sd) for k, (x, m, sd) in curves.items()},
                               xlabel="time" if experiment.name in ("linear", "intervene") else "step",
                               ylabel="Pearson r (mean over seeds, band: +- 1 std)", logy=False,
                               title=f"{len(seeds)} seeds")
        figures.append(plots.save(ax, directory / "alignment_over_seeds.png"))
    write_json(directory / "config.json", {"command": experiment.name, "config": to_jsonable(config),
                                           "seed": config.seed, "seeds": list(seeds), "provenance": provenance()})
    write_json(directory / "metrics.json", metrics)
    summary = seed_summary_lines(aggregated, seeds)
    table = seed_table(aggregated)
    numbers = seed_number_table(aggregated)
    write_text(directory / "numbers_over_seeds.md", f"# {experiment.title}: every number over {len(seeds)} seeds\n\n"
               + (numbers or "(no numbers)") + "\n")
    inline = numbers.count("\n") <= INLINE_NUMBER_ROWS
    body = [f"# {experiment.title} ({len(seeds)} seeds)", "", f"Command: `{shown}`", "", "## Summary", "",
            *[f"- {line}" for line in summary], "", "## Alignment over seeds", "", table or "(no comparisons)", "",
            "## Every number over seeds", "",
            numbers if inline else "See `numbers_over_seeds.md` (one row per number of `metrics.json`).", "",
            "## Figures", "", *[f"![{p.stem}]({p.name})" for p in figures], "",
            "Each seed's complete run (figures, report, metrics) is in `seed_<s>/`; `metrics.json` holds "
            "`per_seed` and `aggregate`.", ""]
    write_text(directory / "report.md", "\n".join(body))
    return summary, figures


def load_config(path: str | Path, name: str | None = None) -> tuple[str, Any]:
    """``(experiment name, config)`` from a run directory or its ``config.json``; ``name``, if given, must be
    the experiment that wrote it."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError("config", f"cannot read a run config from {path}: {err}") from None
    if not (isinstance(record, dict) and "command" in record and "config" in record):
        raise ConfigError("config", f"{path} is not a run's config.json (no command/config entries)")
    recorded = record["command"]
    if name is not None and recorded != name:
        raise ConfigError("config", f"{path} is a config of experiment {recorded!r}, not {name!r}")
    experiment = get_experiment(recorded)
    return recorded, experiment.config_class.from_dict(record["config"], "config")
