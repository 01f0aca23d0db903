"""``python -m probsig_jax.simulate``: the experiments of PAPER section 8 from the command line.

Subcommands (``linear`` is the default when none is given)::

    python -m probsig_jax.simulate                      # E1 on the embedded default task
    python -m probsig_jax.simulate linear --dim 64 --preset anchor4 --out runs/e1
    python -m probsig_jax.simulate intervene --edit anchor_weights=4,1,1,1 --edit label_noise=0.1
    python -m probsig_jax.simulate ffn --init-scale 1e-3,1e-1,1   # E3 and the init-scale sweep
    python -m probsig_jax.simulate llm                  # E4: Qwen2.5-architecture model on the embedded corpus
    python -m probsig_jax.simulate llm --corpus-source pile/00.jsonl.zst --corpus-pile-set-names Github
    python -m probsig_jax.simulate pretrained --checkpoint path/to/Qwen2.5-0.5B   # E5

Every field of the experiment, data and training configs is an option
(``--help`` lists them with their defaults). A run directory receives
``config.json`` (the full config, seed and provenance), ``metrics.json``,
``report.md`` and PNG figures; it is written to a hidden temporary directory and
renamed into place only when complete. Bad options exit with status 2 and one
line on stderr. ``llm`` checkpoints its training beside the run directory
(``.<out>.checkpoints``): the same command after an interruption resumes where it
stopped; a diverging run (NaN/inf loss) exits with status 3 and keeps its last good
checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from probsig_jax.cli_options import add_dataclass_options, apply_options
from probsig_jax.data import PRESETS, CompositeAdditionConfig
from probsig_jax.experiments.common import LinearExperimentConfig
from probsig_jax.runs import atomic_run_dir, default_run_dir, provenance, to_jsonable, write_json, write_text
from probsig_jax.train import TrainConfig
from probsig_jax.validation import ConfigError

SUBCOMMANDS = ("linear", "intervene", "ffn", "llm", "pretrained")
CORPUS_COMMANDS = ("llm", "pretrained")
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (no usage dump) and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def _experiment_class(command: str):
    if command == "llm":
        from probsig_jax.experiments.llm import LLMExperimentConfig

        return LLMExperimentConfig
    if command == "pretrained":
        from probsig_jax.experiments.pretrained import PretrainedExperimentConfig

        return PretrainedExperimentConfig
    if command == "ffn":
        from probsig_jax.experiments.ffn import FFNExperimentConfig

        return FFNExperimentConfig
    return LinearExperimentConfig


def _add_run_options(parser: argparse.ArgumentParser, seeded: str) -> None:
    """``--out``, ``--seed`` and ``--quiet``, common to every subcommand."""
    parser.add_argument("--out", default=None, help="run directory (must not exist) [default: runs/<UTC timestamp>]")
    parser.add_argument("--seed", default=None, help=f"seed of {seeded} [int; default: 0]")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or summary")


def _add_config_options(parser: argparse.ArgumentParser, cls=LinearExperimentConfig) -> dict[str, list[str]]:
    _add_run_options(parser, "the data sampler, the initialisation and the mini-batches")
    base = cls()
    return {
        "experiment": add_dataclass_options(parser, cls, group_title="model and analysis",
                                            skip=("seed",), defaults=base),
        "data": add_dataclass_options(parser, CompositeAdditionConfig, group_title="data (applied on top of --preset)",
                                      skip=("seed",), defaults=PRESETS[base.preset]),
        "train": add_dataclass_options(parser, TrainConfig, group_title="training", skip=("seed",),
                                       defaults=base.train),
    }


def _add_corpus_options(parser: argparse.ArgumentParser, cls) -> dict[str, list[str]]:
    """Options of E4/E5: the experiment's own fields, the corpus (``--corpus-*``) and, for E4, training."""
    from probsig_jax.corpus import CorpusConfig
    from probsig_jax.experiments.corpus_alignment import CorpusAnalysisConfig

    _add_run_options(parser, "the initialisation and the batch order")
    base = cls()
    fields = {"experiment": add_dataclass_options(parser, cls, group_title="experiment", skip=("seed",), defaults=base),
              "corpus": add_dataclass_options(parser, CorpusConfig, group_title="corpus", defaults=base.corpus,
                                              prefix="corpus_"),
              "analysis": add_dataclass_options(parser, CorpusAnalysisConfig, group_title="signatures and alignment",
                                                defaults=base.analysis)}
    if hasattr(base, "train"):
        from probsig_jax.lm_training import LMRunConfig
        from probsig_jax.train_lm import LMTrainConfig

        fields["train"] = add_dataclass_options(parser, LMTrainConfig, group_title="optimiser", skip=("seed",),
                                                defaults=base.train)
        fields["run"] = add_dataclass_options(parser, LMRunConfig, group_title="batches, evaluation, checkpoints",
                                              defaults=base.run)
    return fields


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, dict[str, list[str]]]]:
    parser = _OneLineParser(prog="python -m probsig_jax.simulate",
                            description="Probability-signature experiments (PAPER section 8). "
                                        "Without a subcommand, runs `linear`.")
    sub = parser.add_subparsers(dest="command", parser_class=_OneLineParser)
    fields = {}
    p_linear = sub.add_parser("linear", help="E1: closed form vs integrated flow vs gradient descent, linear model")
    fields["linear"] = _add_config_options(p_linear)
    p_int = sub.add_parser("intervene", help="E2: edit the data distribution; predicted vs measured change of the "
                                             "key-embedding similarity")
    fields["intervene"] = _add_config_options(p_int)
    p_ffn = sub.add_parser("ffn", help="E3: feed-forward net vs linear model, accuracy and alignment over training; "
                                       "several --init-scale values run the initialisation-scale sweep")
    fields["ffn"] = _add_config_options(p_ffn, _experiment_class("ffn"))
    p_llm = sub.add_parser("llm", help="E4: Qwen2.5-architecture model trained from scratch on a corpus (default: "
                                       "the embedded Python stdlib); embedding vs signature alignment over training")
    fields["llm"] = _add_corpus_options(p_llm, _experiment_class("llm"))
    p_pre = sub.add_parser("pretrained", help="E5: a local pretrained Qwen2/Qwen2.5 checkpoint's embeddings vs the "
                                              "corpus signatures (--checkpoint DIR)")
    fields["pretrained"] = _add_corpus_options(p_pre, _experiment_class("pretrained"))
    p_int.add_argument("--edit", action="append", default=None, metavar="FIELD=VALUE",
                       help="edit of the data config giving the edited task (repeatable), e.g. "
                            "anchor_weights=4,1,1,1, label_noise=0.2, held_out=4 [default: anchor_weights=4,1,1,1]")
    return parser, fields


def _parse_seed(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        seed = int(text)
    except ValueError:
        raise ConfigError("seed", f"must be an integer >= 0, got {text!r}") from None
    if seed < 0:
        raise ConfigError("seed", f"must be an integer >= 0, got {seed}")
    return seed


def corpus_config_from_args(args: argparse.Namespace, fields: dict[str, list[str]], cls):
    """E4/E5 config: defaults, then every option the user gave."""
    config = apply_options(cls(), args, fields["experiment"])
    corpus = apply_options(config.corpus, args, fields["corpus"], prefix="corpus_")
    try:
        corpus.validate()
    except ConfigError as err:  # name the option the user typed: --corpus-source, not "source"
        raise ConfigError(f"corpus_{err.field}", str(err).split(": ", 1)[-1]) from None
    changes: dict[str, Any] = {"corpus": corpus,
                               "analysis": apply_options(config.analysis, args, fields["analysis"])}
    seed = _parse_seed(args.seed)
    if seed is not None:
        changes["seed"] = seed
    if "train" in fields:
        changes["train"] = apply_options(config.train, args, fields["train"])
        changes["run"] = apply_options(config.run, args, fields["run"])
    return dataclasses.replace(config, **changes).validate()


def config_from_args(args: argparse.Namespace, fields: dict[str, list[str]], cls=LinearExperimentConfig):
    """The experiment config: defaults, then ``--preset``, then every option the user gave."""
    if args.command in CORPUS_COMMANDS:
        return corpus_config_from_args(args, fields, cls)
    config = apply_options(cls(), args, fields["experiment"])
    if config.preset not in PRESETS:
        raise ConfigError("preset", f"must be one of {', '.join(sorted(PRESETS))}, got {config.preset!r}")
    data = apply_options(PRESETS[config.preset], args, fields["data"])
    train = apply_options(config.train, args, fields["train"])
    seed = _parse_seed(args.seed)
    if seed is not None:
        config = dataclasses.replace(config, seed=seed)
    data, train = data.replace(seed=config.seed), dataclasses.replace(train, seed=config.seed)
    return dataclasses.replace(config, data=data, train=train).validate()


def _corpus_summary_lines(metrics: dict[str, Any]) -> list[str]:
    kind = "trained" if metrics["experiment"] == "llm" else "pretrained"
    c = metrics["corpus"]
    lines = [f"corpus {c['source']}: {c['tokens']:,} tokens, {c.get('documents')} documents; window "
             f"{metrics['window']}; {metrics['signature_pairs']:,} distinct (context, next) pairs"]
    if kind == "trained":
        lines.append(f"model vocab {metrics['vocabulary']['model_vocab']:,} (tokenizer {metrics['vocabulary']['tokenizer_vocab']:,}); "
                     f"held-out loss {metrics['initial_eval_loss']:.3f} -> {metrics['final_eval_loss']:.3f} "
                     f"after {metrics['steps']} steps")
    for name, block in metrics["token_sets"].items():
        t = block[kind]
        e, th, u = t["embedding_vs_signature"], t["embedding_vs_theory"], t["unembedding_vs_signature"]
        sp = block["strong_pairs"]
        lines.append(f"{name} ({block['num_tokens']} tokens): W_E vs phi_next Pearson {e['pearson']:.3f} Spearman "
                     f"{e['spearman']:.3f} top-k {e['topk_overlap']:.3f}; W_E vs theory Pearson {th['pearson']:.3f}; "
                     f"W_U vs phi_pre Pearson {u['pearson']:.3f}; strong-pair precision {sp['strong_pair_precision']:.3f}"
                     f" vs weak {sp['weak_pair_precision']:.3f} (chance {sp['chance_precision']:.3f}): {sp['statement']}")
    return lines


def _summary_lines(metrics: dict[str, Any]) -> list[str]:
    if metrics["experiment"] in CORPUS_COMMANDS:
        return _corpus_summary_lines(metrics)
    if metrics["experiment"] == "linear":
        a = metrics["alignment"]
        return [
            f"final loss {metrics['final_loss']:.4f} (initial {metrics['initial_loss']:.4f})",
            f"closed form vs GD, max rel. error until growth {metrics['early_phase_growth']:.1f}x: "
            f"{metrics['closed_form_rel_err']:.3%}",
            f"integrated flow vs GD, max rel. error over the run: {metrics['flow_rel_err']:.3%}",
            f"escape time predicted {metrics['escape_time_predicted']:.1f}, measured "
            f"{metrics['escape_time_measured'] if metrics['escape_time_measured'] is None else round(metrics['escape_time_measured'], 1)}",
            f"key embedding vs signature similarity at t={metrics['alignment_time']:.0f} "
            f"(growth {metrics['alignment_growth']:.1f}x): Pearson {a['pearson']:.3f}, Spearman {a['spearman']:.3f}, "
            f"top-{int(a['k'])} overlap {a['topk_overlap']:.3f}, strong-pair precision {a['strong_pair_precision']:.3f}",
        ]
    if metrics["experiment"] == "ffn":
        lines = []
        for row in metrics["sweep"]:
            acc = ", ".join(f"{k.removesuffix('_accuracy')} {v:.3f}" for k, v in row.items() if k.endswith("_accuracy"))
            a = row["alignment"]
            lines.append(f"{row['model']} (init {row['init_scale']:g}): loss {row['final_loss']:.4f}; accuracy {acc}; "
                         f"key embedding vs signature Pearson {a['pearson']:.3f}, strong-pair precision "
                         f"{a['strong_pair_precision']:.3f}")
        return lines
    lines = [f"edits: {', '.join(metrics['edits'])}; compared at t={metrics['compare_time']:.0f}",
             f"mean |Delta S_E| measured: {metrics['mean_abs_delta_measured']:.4f}"]
    for name, s in metrics["delta_vs_prediction"].items():
        lines.append(f"Delta S_E measured vs {name}: Pearson {s['pearson']:.3f}, rel. error {s['rel_err']:.3f}")
    return lines


def _report(title: str, config: Any, metrics: dict[str, Any], figures: list[Path], out: Path) -> str:
    from probsig_jax.experiments.linear import metrics_table

    body = [f"# {title}", "", f"Command: `python -m probsig_jax.simulate {' '.join(sys.argv[1:])}`", "",
            "## Summary", "", *[f"- {line}" for line in _summary_lines(metrics)], "", "## Metrics", "",
            metrics_table(metrics), "", "## Figures", ""]
    body += [f"![{p.stem}]({p.name})" for p in figures]
    body += ["", "Full config and provenance: `config.json`; all metrics: `metrics.json`; arrays: `arrays.npz`.", ""]
    if metrics.get("experiment") == "llm":
        body += ["The trained model: `model/` (HF safetensors + `vocab_map.json`; "
                 "`python -m probsig_jax.simulate pretrained --checkpoint <this run>/model` reads it).", ""]
    return "\n".join(body)


def _run(command: str, config: Any, edits: Sequence[str] | None, out: Path, quiet: bool) -> Path:
    tic = time.perf_counter()
    with atomic_run_dir(out) as tmp:
        if command == "linear":
            from probsig_jax.experiments.linear import run_linear_theory, write_linear_report

            result = run_linear_theory(config, quiet=quiet)
            full_config: Any = config
            figures = write_linear_report(result, tmp)
            title = "E1: linear model, closed form vs integrated flow vs gradient descent"
        elif command == "llm":
            from probsig_jax.experiments.llm import checkpoint_dir_for, run_llm, write_llm_report

            result = run_llm(config, checkpoint_dir=checkpoint_dir_for(out), quiet=quiet)
            full_config = config
            figures = write_llm_report(result, tmp)
            title = "E4: Qwen2.5-architecture model trained on a corpus, embeddings vs probability signatures"
        elif command == "pretrained":
            from probsig_jax.experiments.pretrained import run_pretrained, write_pretrained_report

            result = run_pretrained(config, quiet=quiet)
            full_config = config
            figures = write_pretrained_report(result, tmp)
            title = "E5: pretrained checkpoint, embeddings vs probability signatures"
        elif command == "ffn":
            from probsig_jax.experiments.ffn import run_ffn, write_ffn_report

            result = run_ffn(config, quiet=quiet)
            full_config = config
            figures = write_ffn_report(result, tmp)
            title = "E3: feed-forward network vs linear model"
        else:
            from probsig_jax.experiments.intervene import DEFAULT_EDITS, InterventionConfig, run_intervention, \
                write_intervention_report

            full_config = InterventionConfig(base=config, edits=tuple(edits) if edits else DEFAULT_EDITS)
            result = run_intervention(full_config, quiet=quiet)
            figures = write_intervention_report(result, tmp)
            title = "E2: intervention on the data distribution, predicted vs measured embedding change"
        metrics = dict(result.metrics, wall_time_s=time.perf_counter() - tic)
        prov = provenance()
        write_json(tmp / "config.json", {"command": command, "config": to_jsonable(full_config),
                                         "seed": config.seed, "provenance": prov})
        write_json(tmp / "metrics.json", metrics)
        write_text(tmp / "report.md", _report(title, full_config, metrics, figures, out))
    if command == "llm":
        from probsig_jax.experiments.llm import remove_checkpoints

        remove_checkpoints(out)  # the run is complete: its final model is in out/model
    if not quiet:
        for line in _summary_lines(metrics):
            print(line)
        print(f"wrote {out}/ (report.md, metrics.json, config.json, {len(figures)} figures)")
    return out


def _attach_negative_numbers(argv: list[str]) -> list[str]:
    """``--opt -1e-3`` -> ``--opt=-1e-3``: argparse would read a negative number in exponent form as an option."""
    out: list[str] = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and token.startswith("-") and _is_number(token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    argv = _attach_negative_numbers(list(sys.argv[1:] if argv is None else argv))
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["linear", *argv]
    parser, fields = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args, fields[args.command], _experiment_class(args.command))
        out = Path(args.out) if args.out else default_run_dir()
        if args.command == "intervene":
            from probsig_jax.experiments.intervene import DEFAULT_EDITS, InterventionConfig

            InterventionConfig(base=config, edits=tuple(args.edit) if args.edit else DEFAULT_EDITS).validate()
        _run(args.command, config, getattr(args, "edit", None), out, args.quiet)
    except ConfigError as err:
        print(f"{parser.prog} {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as err:
        from probsig_jax.lm_training import TrainingDiverged

        if not isinstance(err, TrainingDiverged):
            raise
        print(f"{parser.prog} {args.command}: {err}; nothing was written to --out", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; nothing was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
