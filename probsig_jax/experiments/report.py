"""``report.md`` of a run: the summary lines, a table of the scalar metrics and the figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


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


def render_report(title: str, command: str, summary: Sequence[str], metrics: dict[str, Any],
                  figures: Sequence[Path], notes: Sequence[str] = ()) -> str:
    """The Markdown of ``report.md``."""
    body = [f"# {title}", "", f"Command: `{command}`", "", "## Summary", "", *[f"- {line}" for line in summary], "",
            "## Metrics", "", metrics_table(metrics), "", "## Figures", ""]
    body += [f"![{Path(p).stem}]({Path(p).name})" for p in figures]
    body += ["", "Full config and provenance: `config.json`; all metrics: `metrics.json`; arrays: `arrays.npz`.", ""]
    body += [*notes, ""] if notes else []
    return "\n".join(body)
