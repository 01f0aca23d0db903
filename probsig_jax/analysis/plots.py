"""Matplotlib figures for training curves and embedding / signature geometry, used by the experiments and
the notebooks alike.

Every plot function

* takes its data as numpy arrays (anything ``np.asarray`` accepts) and checks it (ConfigError naming the
  argument);
* draws into a given ``ax`` (or ``axes`` for multi-panel plots), or into a new figure when none is given,
  and returns the ``Axes`` (multi-panel plots: the ``Figure``), so a notebook can compose panels and an
  experiment can save them;
* never writes a file: :func:`save` does, atomically (rendered in memory, then
  :func:`probsig_jax.runs.write_bytes`), and closes the figure.

The non-interactive ``Agg`` backend is selected at import only when nothing has chosen a backend yet (no
``MPLBACKEND``, pyplot not imported), so notebooks keep their inline backend.
"""

from __future__ import annotations

import io
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import matplotlib

if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from probsig_jax.runs import write_bytes  # noqa: E402
from probsig_jax.validation import ConfigError, require  # noqa: E402

__all__ = ["save", "plot_curves", "plot_heatmap", "plot_similarity_heatmaps", "plot_similarity_scatter",
           "plot_projection_trajectory", "plot_singular_values"]

DPI = 120
MAX_TICK_LABELS = 20
MAX_POINT_LABELS = 30
MAX_SNAPSHOTS = 6
MAX_SINGULAR_VALUES = 8
TIME_LABEL = "t = step × lr"
_LINESTYLES = ("-", "--", ":", "-.")


def save(figure: Figure | Axes, path: str | os.PathLike) -> Path:
    """Write ``figure`` (or the figure of an ``Axes``) as a PNG at ``path`` atomically, close it, return the path."""
    fig = figure.figure if isinstance(figure, Axes) else figure
    target = Path(path)
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=DPI, format="png")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(target, buffer.getbuffer())
    finally:
        plt.close(fig)
    return target


def _axes(ax: Axes | None, figsize=(6.4, 4.2)) -> Axes:
    if ax is not None:
        return ax
    _, new = plt.subplots(figsize=figsize, constrained_layout=True)
    return new


def _array(x: Any, field: str, ndim: int) -> np.ndarray:
    """Convert ``x`` to a float array with ``ndim`` dimensions, else ConfigError."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(field, f"must be a real {ndim}-D array, got {type(x).__name__}") from None
    require(arr.ndim == ndim, field, f"must be a {ndim}-D array, got shape {arr.shape}")
    return arr


def _xy_curves(curves: Any, field: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Check a ``{label: (x, y)}`` mapping of equal-length 1-D arrays."""
    require(isinstance(curves, dict) and len(curves) > 0, field, "must be a non-empty dict label -> (x, values)")
    out = {}
    for label, pair in curves.items():
        require(isinstance(pair, (tuple, list)) and len(pair) == 2, field, f"entry {label!r} must be a (x, values) pair")
        x = _array(pair[0], f"{field}[{label!r}] x", 1)
        y = _array(pair[1], f"{field}[{label!r}] values", 1)
        require(x.shape == y.shape, field,
                f"entry {label!r}: x and values must have equal length, got {x.size} and {y.size}")
        out[str(label)] = (x, y)
    return out


def _thin_ticks(n: int, max_shown: int = MAX_TICK_LABELS) -> np.ndarray:
    """Evenly spaced tick positions, at most about ``max_shown`` of ``n``."""
    return np.arange(0, n, max(1, math.ceil(n / max_shown)))


def _snapshot_indices(T: int, max_shown: int = MAX_SNAPSHOTS) -> np.ndarray:
    """Up to ``max_shown`` evenly spaced indices in ``[0, T)`` including ``0`` and ``T - 1``."""
    return np.unique(np.round(np.linspace(0, T - 1, min(T, max_shown))).astype(int))


def plot_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], *, ax: Axes | None = None,
                xlabel: str = TIME_LABEL, ylabel: str = "loss", title: str | None = None, logy: bool = True,
                logx: bool = False, marker: str | None = None, styles: dict[str, dict] | None = None,
                vlines: dict[str, float] | None = None, hlines: dict[str, float] | None = None,
                ylim: tuple[float, float] | None = None,
                bands: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> Axes:
    """One line per entry: loss, accuracy, error or alignment against time, or a metric against a swept value.

    Args:
        curves: ``label -> (x, y)`` with ``x`` and ``y`` 1-D of equal length.
        ax: draw here (default: a new figure).
        xlabel, ylabel, title: labels.
        logy, logx: logarithmic axes (``logx`` e.g. for a sweep over initialisation scales).
        marker: matplotlib marker at every point (e.g. ``"o"`` for a sweep), none by default.
        styles: optional ``label -> matplotlib line keywords`` (e.g. ``{"ls": "--"}``) for some entries.
        vlines: ``label -> x`` dashed vertical markers (e.g. a predicted escape time), each in the legend.
        hlines: ``label -> y`` dotted horizontal markers (e.g. a 2 % threshold), each in the legend.
        ylim: optional y range.
        bands: optional ``label -> (low, high)``: a shaded interval around that entry's curve (same x), e.g.
            a bootstrap interval or a spread over seeds.
    """
    data = _xy_curves(curves, "curves")
    require(bands is None or isinstance(bands, dict), "bands", "must be a dict label -> (low, high) or None")
    for label, band in (bands or {}).items():
        require(label in data, "bands", f"names a curve that is not drawn: {label!r}")
        require(len(band) == 2 and all(np.shape(b) == data[label][0].shape for b in band), "bands",
                f"{label!r} must be (low, high), each shaped like its curve's x {data[label][0].shape}")
    for name, marks in (("vlines", vlines), ("hlines", hlines)):
        require(marks is None or isinstance(marks, dict), name, "must be a dict label -> position or None")
    ax = _axes(ax)
    for label, (x, y) in data.items():
        line, = ax.plot(x, y, **{"label": label, "lw": 1.5, "marker": marker, **(styles or {}).get(label, {})})
        if label in (bands or {}):
            low, high = (np.asarray(b, dtype=float) for b in bands[label])
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, lw=0)
    for i, (label, x) in enumerate((vlines or {}).items()):
        ax.axvline(float(x), color="k" if i == 0 else f"C{(i + len(data)) % 10}", ls="--", lw=1.0, label=str(label))
    for label, y in (hlines or {}).items():
        ax.axhline(float(y), color="gray", ls=":", lw=1.2, label=str(label))
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def plot_heatmap(matrix: np.ndarray, tick_labels: Sequence[str] | None = None, *, ax: Axes | None = None,
                 title: str | None = None, vmin: float = -1, vmax: float = 1, cmap: str = "coolwarm",
                 colorbar: str | None = None):
    """One ``(n, m)`` matrix as an image (at most about 20 tick labels shown); returns the image.

    ``colorbar``: label of a colour bar drawn beside this axes (none by default)."""
    m = _array(matrix, "matrix", 2)
    require(float(vmin) < float(vmax), "vmin", f"must be < vmax ({vmax}), got {vmin}")
    ax = _axes(ax, figsize=(5.0, 4.4))
    image = ax.imshow(m, cmap=cmap, vmin=float(vmin), vmax=float(vmax), interpolation="nearest")
    if title:
        ax.set_title(title, fontsize="medium")
    rows, cols = _thin_ticks(m.shape[0]), _thin_ticks(m.shape[1])
    if tick_labels is not None:
        require(len(tick_labels) == m.shape[0] == m.shape[1], "tick_labels",
                f"must have n = {m.shape[0]} entries for a square matrix, got {len(tick_labels)} for {m.shape}")
        ax.set_xticks(cols, [str(tick_labels[i]) for i in cols], rotation=90, fontsize="x-small")
        ax.set_yticks(rows, [str(tick_labels[i]) for i in rows], fontsize="x-small")
    else:
        ax.set_xticks(cols)
        ax.set_yticks(rows)
    ax.grid(False)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, shrink=0.85, label=colorbar)
    return image


def plot_similarity_heatmaps(matrices: dict[str, np.ndarray], tick_labels: Sequence[str] | None = None, *,
                             axes: Sequence[Axes] | None = None, title: str | None = None, vmin: float = -1,
                             vmax: float = 1, cmap: str = "coolwarm", colorbar: str = "similarity") -> Figure:
    """Side-by-side heatmaps of ``(n, n)`` similarity matrices on one colour scale, one shared colour bar.

    Args:
        matrices: ``panel title -> (n, n)`` matrix; all must have the same shape.
        tick_labels: optional ``n`` token names.
        axes: one axes per panel (default: a new one-row figure).
        title: optional figure title.
        vmin, vmax, cmap: the shared colour scale.
    """
    require(isinstance(matrices, dict) and len(matrices) > 0, "matrices",
            "must be a non-empty dict title -> (n, n) matrix")
    mats = {str(k): _array(v, f"matrices[{k!r}]", 2) for k, v in matrices.items()}
    shape = next(iter(mats.values())).shape
    for name, m in mats.items():
        require(m.shape[0] == m.shape[1], "matrices", f"entry {name!r} must be square (n, n), got {m.shape}")
        require(m.shape == shape, "matrices", f"entries must share one shape {shape}, got {m.shape} for {name!r}")
    if axes is None:
        _, grid = plt.subplots(1, len(mats), figsize=(4.2 * len(mats) + 1.0, 4.4), constrained_layout=True,
                               squeeze=False)
        axes = list(grid[0])
    require(len(axes) == len(mats), "axes", f"needs one axes per matrix ({len(mats)}), got {len(axes)}")
    image = None
    for ax, (name, m) in zip(axes, mats.items()):
        image = plot_heatmap(m, tick_labels, ax=ax, title=name, vmin=vmin, vmax=vmax, cmap=cmap)
    fig = axes[0].figure
    fig.colorbar(image, ax=list(axes), shrink=0.85, label=colorbar)
    if title:
        fig.suptitle(title)
    return fig


def plot_similarity_scatter(x: np.ndarray, y: np.ndarray, *, ax: Axes | None = None, xlabel: str, ylabel: str,
                            title: str | None = None, stats: dict[str, Any] | None = None, label: str | None = None,
                            diagonal: bool = False) -> Axes:
    """Scatter of off-diagonal similarities of one matrix against another.

    Args:
        x, y: two ``(n, n)`` matrices (their strict upper triangles are used) or two 1-D arrays of pair values.
        ax: draw here (default: a new figure); several calls on one ``ax`` overlay (give each a ``label``).
        xlabel, ylabel, title: labels.
        stats: optional ``name -> value`` shown in a text box (e.g. the alignment metrics).
        diagonal: draw ``y = x`` (only meaningful when both share a scale, e.g. predicted vs measured changes).
    """
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    for name, arr in (("x", xs), ("y", ys)):
        require(arr.ndim == 1 or (arr.ndim == 2 and arr.shape[0] == arr.shape[1]), name,
                f"must be a 1-D array of pair values or a square (n, n) matrix, got shape {arr.shape}")
    require(xs.shape == ys.shape, "y", f"must have the same shape as x {xs.shape}, got {ys.shape}")
    if xs.ndim == 2:
        rows, cols = np.triu_indices(xs.shape[0], k=1)
        xs, ys = xs[rows, cols], ys[rows, cols]
    ax = _axes(ax, figsize=(5.2, 4.8))
    ax.scatter(xs, ys, s=8, alpha=0.5, edgecolors="none", label=label)
    if diagonal:
        lim = [min(xs.min(), ys.min()), max(xs.max(), ys.max())]
        ax.plot(lim, lim, "k--", lw=0.8, label="y = x")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    if label or diagonal:
        ax.legend(fontsize="small", markerscale=2)
    if stats:
        text = "\n".join(f"{k} = {v:.3g}" if isinstance(v, (int, float, np.number)) else f"{k} = {v}"
                         for k, v in stats.items())
        ax.text(0.03, 0.97, text, transform=ax.transAxes, va="top", ha="left", fontsize="small",
                family="monospace", bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85})
    return ax


def plot_projection_trajectory(projections: np.ndarray, times: np.ndarray, labels: Sequence[str], *,
                               axes: Sequence[Axes] | None = None, title: str | None = None,
                               time_label: str = "t") -> Figure:
    """2-D projections of token vectors at several training times, one panel per snapshot.

    Up to 6 snapshots evenly chosen from the ``T`` available (first and last included), or one per given
    axes. Points are coloured by token index (viridis), consecutive tokens are joined by a thin line (showing
    ordered structure, e.g. of number tokens), and labelled (every ``ceil(n / 30)``-th when ``n > 30``).

    Args:
        projections: ``(T, n, 2)`` coordinates, e.g. from :func:`probsig_jax.analysis.geometry.pca_projection`
            with a fixed ``basis_from``.
        times: ``(T,)`` time (or step) of each snapshot.
        labels: ``n`` token names.
    """
    proj = _array(projections, "projections", 3)
    require(proj.shape[2] == 2 and proj.shape[0] >= 1 and proj.shape[1] >= 1, "projections",
            f"must have shape (T, n, 2) with T, n >= 1, got {proj.shape}")
    T, n, _ = proj.shape
    ts = _array(times, "times", 1)
    require(ts.size == T, "times", f"must have T = {T} entries, got {ts.size}")
    require(len(labels) == n, "labels", f"must have n = {n} entries, got {len(labels)}")
    snaps = _snapshot_indices(T, MAX_SNAPSHOTS if axes is None else len(axes))
    if axes is None:
        cols = min(3, len(snaps))
        rows = math.ceil(len(snaps) / cols)
        _, grid = plt.subplots(rows, cols, figsize=(4.0 * cols + 0.8, 3.8 * rows), constrained_layout=True,
                               squeeze=False)
        axes = list(grid.ravel())
    step = max(1, math.ceil(n / MAX_POINT_LABELS)) if n > MAX_POINT_LABELS else 1
    scatter = None
    for ax, s in zip(axes, snaps):
        pts = proj[s]
        ax.plot(pts[:, 0], pts[:, 1], color="0.6", lw=0.6, zorder=1)
        scatter = ax.scatter(pts[:, 0], pts[:, 1], c=np.arange(n), cmap="viridis", vmin=0, vmax=max(n - 1, 1), s=18,
                             zorder=2)
        for i in range(0, n, step):
            ax.annotate(str(labels[i]), pts[i], fontsize="xx-small", xytext=(2, 2), textcoords="offset points")
        ax.set(title=f"{time_label} = {ts[s]:.4g}", xlabel="PC 1", ylabel="PC 2")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(snaps):]:
        ax.set_visible(False)
    fig = axes[0].figure
    fig.colorbar(scatter, ax=list(axes), shrink=0.8, label="token index")
    if title:
        fig.suptitle(title)
    return fig


def plot_singular_values(times: np.ndarray, values: dict[str, np.ndarray], *, ax: Axes | None = None,
                         reference: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                         ylim: tuple[float, float] | None = None, title: str | None = None) -> Axes:
    """Singular values over time on a log y axis.

    Colour encodes the singular-value index (the first 8 are drawn), line style the entry (e.g. gradient
    descent solid, closed form dashed). ``reference``: extra ``label -> (t, y)`` curves in black (e.g. the
    theory's predicted growth of the leading mode).
    """
    ts = _array(times, "times", 1)
    require(isinstance(values, dict) and len(values) > 0, "values", "must be a non-empty dict label -> (T, r) array")
    data = {}
    for label, v in values.items():
        arr = _array(v, f"values[{label!r}]", 2)
        require(arr.shape[0] == ts.size, "values",
                f"entry {label!r} must have shape (T, r) with T = {ts.size}, got {arr.shape}")
        data[str(label)] = arr
    ax = _axes(ax, figsize=(6.4, 4.4))
    r_max = 0
    for j, (label, arr) in enumerate(data.items()):
        style = _LINESTYLES[j % len(_LINESTYLES)]
        r = min(arr.shape[1], MAX_SINGULAR_VALUES)
        r_max = max(r_max, r)
        for i in range(r):
            ax.plot(ts, arr[:, i], color=f"C{i}", ls=style, lw=1.3)
    handles = [Line2D([], [], color="k", ls=_LINESTYLES[j % len(_LINESTYLES)], label=label) for j, label in enumerate(data)]
    handles += [Line2D([], [], color=f"C{i}", ls="-", label=f"σ{i + 1}") for i in range(r_max)]
    for label, (t, y) in (reference or {}).items():
        (line,) = ax.plot(_array(t, "reference t", 1), _array(y, "reference values", 1), color="k", ls=":", lw=1.4,
                          label=label)
        handles.append(line)
    ax.legend(handles=handles, fontsize="x-small", ncol=2)
    ax.set_yscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set(xlabel=TIME_LABEL, ylabel="singular value")
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    return ax
