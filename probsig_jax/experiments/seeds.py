"""Several seeds of one experiment: every number of ``metrics.json`` as mean, std and a 95 % interval.

A run with ``--seeds 0,1,2,3,4`` runs the experiment once per seed (``config.replace(seed=s)``: the seed of
the initialisation and the batch order, and for the toy tasks also of the data sampler) into
``seed_<s>/`` of the run directory, each a complete run with its figures. What the seeds share is shared
where it is data, not randomness: token shards are cached on disk, and E4/E5's corpus counts and
truncated SVD do not depend on the seed (they are computed once per process for a given stream). The
top-level ``metrics.json`` holds ``per_seed`` and ``aggregate``: the metrics tree with every number
replaced by ``{"mean", "std", "ci_low", "ci_high", "n", "values"}`` (Student-t interval over seeds) and every
list of numbers (a curve over training) by ``{"mean": [...], "std": [...]}``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import scipy.stats

from probsig_jax.validation import ConfigError, require, require_seed

SKIPPED_KEYS = frozenset({"timings", "timing_s", "wall_time_s", "shard_dir", "resumed_from"})
"""Entries that are about the machine or the run, not results: not aggregated."""
CONFIDENCE = 0.95


def parse_seeds(value: Any) -> tuple[int, ...]:
    """``"0,1,2"`` or a sequence of ints -> a tuple of distinct seeds (at least 2)."""
    if isinstance(value, str):
        try:
            seeds = tuple(int(p) for p in value.split(",") if p.strip())
        except ValueError:
            raise ConfigError("seeds", f"must be a comma list of integer seeds, got {value!r}") from None
    else:
        seeds = tuple(value)
    for s in seeds:
        require_seed(s, "seeds")
    require(len(seeds) >= 2, "seeds", f"needs at least 2 seeds for a spread, got {len(seeds)}")
    require(len(set(seeds)) == len(seeds), "seeds", f"has repeats: {seeds}")
    return tuple(int(s) for s in seeds)


def summarise(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample std and the Student-t ``CONFIDENCE`` interval of the mean over seeds (nan-free values)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    out: dict[str, Any] = {"values": [float(v) for v in values], "n": int(x.size)}
    if x.size == 0:
        return out | {"mean": None, "std": None, "ci_low": None, "ci_high": None}
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    half = float(scipy.stats.t.ppf(0.5 + CONFIDENCE / 2, x.size - 1) * std / math.sqrt(x.size)) if x.size > 1 else 0.0
    return out | {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def aggregate(trees: Sequence[Any]) -> Any:
    """The metrics trees of several seeds merged: numbers -> :func:`summarise`, equal-length lists of numbers
    -> elementwise mean / std, dicts and equal-length lists of dicts recursively; anything else (strings,
    settings that differ) is kept when equal across seeds and dropped otherwise."""
    first = trees[0]
    if all(_is_number(t) or t is None for t in trees) and any(_is_number(t) for t in trees):
        return summarise([float(t) if t is not None else float("nan") for t in trees])
    if all(isinstance(t, dict) for t in trees):
        keys = [k for k in first if k not in SKIPPED_KEYS and all(k in t for t in trees)]
        merged = {k: aggregate([t[k] for t in trees]) for k in keys}
        return {k: v for k, v in merged.items() if v is not _DROP}
    if all(isinstance(t, list) for t in trees) and len({len(t) for t in trees}) == 1 and first:
        if all(_is_number(v) or v is None for t in trees for v in t):
            arr = np.asarray([[np.nan if v is None else v for v in t] for t in trees], dtype=np.float64)
            with np.errstate(invalid="ignore"):
                return {"mean": np.nanmean(arr, axis=0).tolist(),
                        "std": (np.nanstd(arr, axis=0, ddof=1) if len(trees) > 1 else 0 * arr[0]).tolist()}
        if all(isinstance(v, dict) for t in trees for v in t):
            return [aggregate([t[i] for t in trees]) for i in range(len(first))]
    return first if all(t == first for t in trees) else _DROP


_DROP = object()


def seed_alignment_rows(tree: Any, path: str = "") -> list[str]:
    """Markdown rows ``| comparison | metric | mean | std | interval | n |`` for every aggregated comparison
    record (one with ``pearson`` and ``chance_pearson``)."""
    rows: list[str] = []
    if isinstance(tree, dict):
        if isinstance(tree.get("pearson"), dict) and "n" in tree["pearson"] and "chance_pearson" in tree:
            for name in ("pearson", "spearman", "topk_overlap", "strong_pair_precision"):
                s = tree.get(name)
                if isinstance(s, dict) and isinstance(s.get("mean"), float) and "n" in s:
                    rows.append(f"| {path} | {name} | {s['mean']:.3f} | {s['std']:.3f} | "
                                f"[{s['ci_low']:.3f}, {s['ci_high']:.3f}] | {s['n']} |")
            return rows
        for key, value in tree.items():
            rows += seed_alignment_rows(value, f"{path}.{key}" if path else str(key))
    return rows


def seed_summary_lines(aggregate_tree: dict[str, Any], seeds: Sequence[int]) -> list[str]:
    """The report's summary of a multi-seed run: the headline correlations with their spread."""
    lines = [f"{len(seeds)} seeds ({', '.join(map(str, seeds))}): mean, std and {CONFIDENCE:.0%} Student-t "
             "interval of every number over seeds; each seed's own run is in seed_<s>/"]
    for row in seed_alignment_rows(aggregate_tree):
        cells = [c.strip() for c in row.strip("|").split("|")]
        if cells[1] == "pearson":
            lines.append(f"{cells[0]}: Pearson {cells[2]} +- {cells[3]} (interval {cells[4]}, n = {cells[5]})")
    return lines


def seed_number_rows(tree: Any, path: str = "") -> list[str]:
    """Markdown rows ``| metric | mean | std | interval | n | values |`` for every number of an aggregated metrics
    tree (the :func:`summarise` records; curves and strings are left out), in the tree's order."""
    if isinstance(tree, dict):
        if {"mean", "std", "ci_low", "ci_high", "n", "values"} <= set(tree):
            if not isinstance(tree["mean"], float):
                return [f"| {path} | - | - | - | {tree['n']} | - |"] if tree["n"] == 0 else []
            values = ", ".join("nan" if v is None or not math.isfinite(v) else f"{v:.4g}" for v in tree["values"])
            return [f"| {path} | {tree['mean']:.4g} | {tree['std']:.3g} | [{tree['ci_low']:.4g}, "
                    f"{tree['ci_high']:.4g}] | {tree['n']} | {values} |"]
        rows: list[str] = []
        for key, value in tree.items():
            rows += seed_number_rows(value, f"{path}.{key}" if path else str(key))
        return rows
    if isinstance(tree, list):
        return [row for i, v in enumerate(tree) for row in seed_number_rows(v, f"{path}[{i}]")]
    return []


def seed_number_table(aggregate_tree: dict[str, Any]) -> str:
    """Every number of a multi-seed run over seeds, one markdown row each ("" if there is none)."""
    rows = seed_number_rows(aggregate_tree)
    if not rows:
        return ""
    return "\n".join([f"| metric | mean over seeds | std | {CONFIDENCE:.0%} interval | seeds | per seed |",
                      "|---|---|---|---|---|---|", *rows])


def seed_table(aggregate_tree: dict[str, Any]) -> str:
    rows = seed_alignment_rows(aggregate_tree)
    if not rows:
        return ""
    return "\n".join(["| comparison | metric | mean over seeds | std | 95 % interval | seeds |",
                      "|---|---|---|---|---|---|", *rows])


def seed_curves(aggregate_tree: Any) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``label -> (x, mean, std)`` of the Pearson curves over training in an aggregated tree: every
    ``alignment_over_time`` record (x = ``time`` or ``step``) and, for language models, the ``evals`` list
    (x = step, one curve per token set and comparison)."""
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def walk(tree: Any, path: str) -> None:
        if not isinstance(tree, dict):
            return
        for key, value in tree.items():
            here = f"{path}.{key}" if path else key
            if key == "alignment_over_time" and isinstance(value, dict) and "pearson" in value:
                x = value.get("time", value.get("step"))
                if isinstance(x, dict) and "mean" in value["pearson"]:
                    curves[f"{path or 'run'} Pearson"] = (np.asarray(x["mean"]), np.asarray(value["pearson"]["mean"]),
                                                          np.asarray(value["pearson"]["std"]))
            elif key == "evals" and isinstance(value, list) and value and isinstance(value[0], dict):
                _eval_curves(value, curves)
            else:
                walk(value, here)

    walk(aggregate_tree, "")
    return curves


def _eval_curves(evals: list[dict[str, Any]], curves: dict) -> None:
    points = [e for e in evals if isinstance(e.get("step"), dict) and isinstance(e.get("alignment"), dict)]
    if not points:
        return
    for set_name, table in points[0]["alignment"].items():
        for comparison in table:
            rows = [(e["step"]["mean"], e["alignment"][set_name][comparison]["pearson"]) for e in points
                    if comparison in e["alignment"].get(set_name, {})]
            rows = [(x, p["mean"], p["std"]) for x, p in rows if isinstance(p, dict) and p.get("mean") is not None]
            if rows and comparison in ("embedding_vs_signature", "unembedding_vs_signature"):
                x, mean, std = (np.asarray(c, dtype=float) for c in zip(*rows))
                curves[f"{set_name}: {comparison.replace('_', ' ')}"] = (x, mean, std)
