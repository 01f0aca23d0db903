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
from probsig_jax.validation import ConfigError


def work_dir_for(out: str | Path) -> Path:
    """Where a run writing to ``out`` keeps what must survive an interruption (beside ``out``, stable)."""
    out = Path(out)
    return out.with_name(f".{out.name}.work")


@contextmanager
def _drop_empty_work_dir(work_dir: Path) -> Iterator[None]:
    """On failure, remove ``work_dir`` if it holds no file (e.g. a run that diverged before its first
    checkpoint); a work directory with checkpoints is kept for the rerun to resume."""
    try:
        yield
    except BaseException:
        if work_dir.is_dir() and not any(p.is_file() for p in work_dir.rglob("*")):
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
                   command: str | None = None) -> Path:
    """Run experiment ``name`` with ``config`` into the run directory ``out`` (default ``runs/<UTC time>``,
    which must not exist) and return its path. ``command`` is recorded in ``report.md`` (default: this
    process's command line)."""
    experiment = get_experiment(name)
    config = prepare_config(experiment, config)
    if out is not None and str(out).strip() == "":
        raise ConfigError("out", "must be a directory path, got an empty string")
    out = Path(out) if out is not None else default_run_dir()
    context = RunContext(out=out, quiet=quiet, work_dir=work_dir_for(out))
    tic = time.perf_counter()
    # Once the run is in place nothing is left to resume: the work directory goes (under the run lock).
    with atomic_run_dir(out, after_complete=lambda: shutil.rmtree(context.work_dir, ignore_errors=True)) as tmp, \
            _drop_empty_work_dir(context.work_dir):
        result = experiment.run(config, context)
        metrics = dict(result.metrics, wall_time_s=time.perf_counter() - tic)
        figures = experiment.write_outputs(result, tmp)
        write_json(tmp / "config.json", {"command": name, "config": to_jsonable(config), "seed": config.seed,
                                         "provenance": provenance()})
        write_json(tmp / "metrics.json", metrics)
        summary = experiment.summary(metrics)
        notes = experiment.notes(metrics) if experiment.notes is not None else ()
        shown = command or "python -m probsig_jax.simulate " + " ".join(sys.argv[1:])
        write_text(tmp / "report.md", render_report(experiment.title, shown, summary, metrics, figures, notes))
    if not quiet:
        for line in summary:
            print(line)
        print(f"wrote {out}/ (report.md, metrics.json, config.json, {len(figures)} figures)")
    return out


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
