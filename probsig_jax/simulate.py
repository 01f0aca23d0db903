"""``python -m probsig_jax.simulate``: the experiments of PAPER section 8 from the command line.

Subcommands are the entries of :data:`probsig_jax.experiments.REGISTRY` (``linear`` when none is given)::

    python -m probsig_jax.simulate                      # E1 on the embedded default task
    python -m probsig_jax.simulate linear --dim 64 --preset anchor4 --out runs/e1
    python -m probsig_jax.simulate intervene --edit anchor_weights=4,1,1,1 --edit label_noise=0.1
    python -m probsig_jax.simulate ffn --init-scale 1e-3,1e-1,1   # E3 and the init-scale sweep
    python -m probsig_jax.simulate llm                  # E4: Qwen2.5-architecture model on the embedded corpus
    python -m probsig_jax.simulate llm --corpus-source pile/00.jsonl.zst --corpus-pile-set-names Github
    python -m probsig_jax.simulate pretrained --checkpoint path/to/Qwen2.5-0.5B   # E5
    python -m probsig_jax.simulate --config runs/e1/config.json   # rerun a recorded run (options override it)

Every field of an experiment's config tree is an option (``--help`` lists them with their defaults). A
run directory receives ``config.json`` (the full config, seed and provenance), ``metrics.json``,
``report.md`` and PNG figures; it is written to a hidden temporary directory and renamed into place only
when complete (:func:`probsig_jax.experiments.runner.run_experiment`). Bad options exit with status 2 and
one line on stderr. An interrupted run keeps its work directory (``.<out>.work``, e.g. ``llm``'s training
checkpoints): the same command resumes where it stopped; a diverging run (NaN/inf loss) exits with status 3.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Sequence

from probsig_jax.cli_options import Option, add_config_options, apply_config_options
from probsig_jax.experiments import DEFAULT_EXPERIMENT, REGISTRY, get_experiment
from probsig_jax.validation import ConfigError

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130      # 128 + SIGINT
EXIT_TERMINATED = 143       # 128 + SIGTERM


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (no usage dump) and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(commands: Sequence[str] | None = None) -> tuple[argparse.ArgumentParser, dict[str, list[Option]]]:
    """The parser with one subcommand per registry entry; the options of ``commands`` (default: all) are
    generated from their config classes (the others are listed, their modules not imported)."""
    parser = _OneLineParser(prog="python -m probsig_jax.simulate",
                            description="Probability-signature experiments (PAPER section 8). "
                                        f"Without a subcommand, runs `{DEFAULT_EXPERIMENT}`.")
    sub = parser.add_subparsers(dest="command", parser_class=_OneLineParser)
    options: dict[str, list[Option]] = {}
    for name, entry in REGISTRY.items():
        p = sub.add_parser(name, help=entry.help, description=entry.help)
        p.add_argument("--out", default=None, help="run directory (must not exist) [default: runs/<UTC timestamp>]")
        p.add_argument("--config", default=None, metavar="CONFIG_JSON",
                       help="start from a recorded run's config.json (or its run directory); options override it")
        p.add_argument("--quiet", action="store_true", help="no progress bars or summary")
        p.add_argument("--seeds", default=None, metavar="S1,S2,...",
                       help="run once per seed (seed_<s>/) and report every number as mean, std and 95 %% "
                            "interval over the seeds (a --config of such a run reuses its seeds)")
        if commands is None or name in commands:
            experiment = get_experiment(name)
            if experiment.streams_metrics:
                p.add_argument("--tensorboard", default=None, metavar="DIR",
                               help="also write the training metrics as TensorBoard event files into DIR (needs "
                                    "tensorboardX); the live metrics.jsonl is in .<out>.work/ while the run goes")
            options[name] = add_config_options(p, experiment.config_class)
    return parser, options


def config_from_args(command: str, args: argparse.Namespace, options: list[Option]):
    """The experiment config: the defaults (or ``--config``), then every option the user gave, resolved."""
    from probsig_jax.experiments.runner import load_config

    experiment = get_experiment(command)
    base = load_config(args.config, command)[1] if args.config else experiment.config_class()
    return apply_config_options(base, args, options)


def _attach_negative_numbers(argv: list[str]) -> list[str]:
    """``--opt -1e-3`` -> ``--opt=-1e-3``: argparse would read a negative number in exponent form (or a list
    starting with one) as an option."""
    out: list[str] = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and token.startswith("-") and _is_number(token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def _is_number(text: str) -> bool:
    """A number or a comma-separated list of numbers (``-1e-3``, ``-1,1,1,1``)."""
    try:
        [float(part) for part in text.split(",")]
    except ValueError:
        return False
    return True


#: ``simulate ffn --optimizer gd`` is the FFN theory comparison (full-batch gradient descent against the flows).
ALIASES = {("ffn", "gd"): "ffn-theory"}


def _resolve_alias(argv: list[str]) -> list[str]:
    """``ffn --optimizer gd ...`` -> ``ffn-theory ...`` (the optimizer option is dropped: that run is GD)."""
    if not argv:
        return argv
    for i, token in enumerate(argv[1:], start=1):
        value = token.partition("=")[2] if token.startswith("--optimizer=") else (
            argv[i + 1] if token == "--optimizer" and i + 1 < len(argv) else None)
        target = ALIASES.get((argv[0], value))
        if target:
            width = 1 if token.startswith("--optimizer=") else 2
            return [target, *argv[1:i], *argv[i + width:]]
    return argv


def _command_of(argv: list[str]) -> str:
    """The subcommand: the first argument, else the experiment of a ``--config`` file, else the default."""
    if argv and argv[0] in REGISTRY:
        return argv[0]
    for i, token in enumerate(argv):
        path = token.partition("=")[2] if token.startswith("--config=") else (
            argv[i + 1] if token == "--config" and i + 1 < len(argv) else None)
        if path:
            target = Path(path) / "config.json" if Path(path).is_dir() else Path(path)
            try:
                recorded = json.loads(target.read_text()).get("command")
            except (OSError, ValueError, AttributeError):
                recorded = None
            if recorded in REGISTRY:
                return recorded
    return DEFAULT_EXPERIMENT


def _seeds_of(args: argparse.Namespace):
    """``--seeds``, else the seeds recorded in a ``--config`` of a multi-seed run, else None."""
    if args.seeds is not None:
        return args.seeds
    if args.config:
        target = Path(args.config) / "config.json" if Path(args.config).is_dir() else Path(args.config)
        try:
            return json.loads(target.read_text()).get("seeds")
        except (OSError, ValueError, AttributeError):
            return None
    return None


class _Terminated(KeyboardInterrupt):
    """SIGTERM (what ``timeout`` and job schedulers send), handled like Ctrl-C."""


def _terminate(signum, frame) -> None:
    raise _Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    from probsig_jax.training.divergence import TrainingDiverged
    from probsig_jax.training.host_allocator import tune_host_allocator

    tune_host_allocator()        # before any JAX computation starts XLA's threads (module docstring there)

    argv = _resolve_alias(_attach_negative_numbers(list(sys.argv[1:] if argv is None else argv)))
    if argv and argv[0] in ("-h", "--help"):
        build_parser(())[0].parse_args(argv)
    command = _command_of(argv)
    if not argv or argv[0] not in REGISTRY:
        argv = [command, *argv]
    parser, options = build_parser([command])
    args = parser.parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        with warnings.catch_warnings():       # a warning is one line on stderr, like an error
            warnings.showwarning = lambda message, category, *a, **k: print(
                f"{parser.prog} {command}: warning: {message}", file=sys.stderr)
            from probsig_jax.experiments.runner import run_experiment

            config = config_from_args(command, args, options[command])
            run_experiment(command, config, out=args.out, quiet=args.quiet, seeds=_seeds_of(args),
                           tensorboard=getattr(args, "tensorboard", None))
    except ConfigError as err:
        print(f"{parser.prog} {command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingDiverged as err:
        print(f"{parser.prog} {command}: {err}; nothing was written to --out", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt as err:
        terminated = isinstance(err, _Terminated)
        print(f"{parser.prog}: {'terminated' if terminated else 'interrupted'}; nothing was written to --out "
              "(the same command resumes from the run's work directory where it has one)", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
