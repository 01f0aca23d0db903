"""``report.md`` of a run: the summary lines, a table of the scalar metrics and the figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

from probsig_jax.analysis.alignment import CORRELATIONS, LIMITED_METRICS


def metrics_table(metrics: dict[str, Any]) -> str:
    """A Markdown table of the scalar metrics and of the dictionaries of scalars (one level deep)."""
    lines = ["| metric | value |", "|---|---|"]
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lines.append(f"| {key} | {value:.6g} |")
        elif isinstance(value, dict) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                        for v in value.values()):
            for k2, v2 in value.items():
                lines.append(f"| {key}.{k2} | {v2:.6g} |")
    return "\n".join(lines)


def _alignment_records(tree: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """``(dotted path, metrics)`` of every comparison record (a dict with ``chance_pearson``) in the metrics
    tree; lists (records over training) are not entered."""
    if isinstance(tree, dict):
        if isinstance(tree.get("chance_pearson"), float):
            yield path, tree
            return
        for key, value in tree.items():
            yield from _alignment_records(value, f"{path}.{key}" if path else str(key))


def _num(x: Any) -> str:
    return "-" if x is None else f"{x:.3g}" if isinstance(x, float) and abs(x) < 1e-3 and x != 0 else f"{x:.3f}"


def alignment_table(metrics: dict[str, Any]) -> str:
    """Every comparison of the metrics tree with its value, interval, Mantel p, chance level and ceiling side
    by side (Markdown; empty when the run has no comparison)."""
    lines = []
    for path, m in _alignment_records(metrics):
        for name in LIMITED_METRICS:
            if name not in m:
                continue
            ci = (f"[{_num(m[name + '_ci_low'])}, {_num(m[name + '_ci_high'])}]" if name + "_ci_low" in m else "-")
            p = _num(m.get(name + "_p")) if name in CORRELATIONS else "-"
            lines.append(f"| {path} | {name} | {_num(m[name])} | {ci} | {p} | {_num(m['chance_' + name])} | "
                         f"{_num(m['ceiling_' + name])} |")
    if not lines:
        return ""
    head = ["| comparison | metric | value | bootstrap interval (tokens) | Mantel p | chance | ceiling |",
            "|---|---|---|---|---|---|---|"]
    return "\n".join(head + lines)


def interval_text(entry: dict[str, Any], low: str = "ci_low", high: str = "ci_high") -> str:
    return f" [{entry[low]:.3f}, {entry[high]:.3f}]" if low in entry else ""


def with_interval(metrics: dict[str, Any], name: str) -> str:
    """``0.601 [0.55, 0.65] p=0.001`` of one correlation in a comparison record."""
    text = f"{metrics[name]:.3f}{interval_text(metrics, name + '_ci_low', name + '_ci_high')}"
    return text + (f" p={metrics[name + '_p']:.3g}" if name + "_p" in metrics else "")


def render_report(title: str, command: str, summary: Sequence[str], metrics: dict[str, Any],
                  figures: Sequence[Path], notes: Sequence[str] = ()) -> str:
    """The Markdown of ``report.md``."""
    body = [f"# {title}", "", f"Command: `{command}`", "", "## Summary", "", *[f"- {line}" for line in summary], "",
            *_alignment_section(metrics), "## Metrics", "", metrics_table(metrics), "", "## Figures", ""]
    body += [f"![{Path(p).stem}]({Path(p).name})" for p in figures]
    body += ["", "Full config and provenance: `config.json`; all metrics: `metrics.json`; arrays: `arrays.npz`.", ""]
    body += [*notes, ""] if notes else []
    return "\n".join(body)


def _alignment_section(metrics: dict[str, Any]) -> list[str]:
    table = alignment_table(metrics)
    if not table:
        return []
    return ["## Alignment with its null and ceiling", "",
            "Chance: the expected value under a random relabelling of the tokens. Ceiling: the expected value of "
            "an embedding equal to the signature similarity up to tie-breaking (below 1 where the signature has "
            "ties). Mantel p: one-sided permutation p-value of the correlation over token relabellings. The "
            "interval resamples tokens, not pairs.", "", table, ""]
