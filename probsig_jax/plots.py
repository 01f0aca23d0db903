"""Matplotlib figures for training curves and embedding/signature geometry.

Every function

* takes its data as numpy arrays (anything ``np.asarray`` accepts),
* creates its own figure and closes it after saving,
* writes a PNG at 120 dpi to ``path`` atomically: the figure is saved to
  ``path.with_suffix('.tmp.png')`` and then moved over ``path`` with ``os.replace``,
  so a reader never sees a half-written file,
* returns ``path`` as a :class:`pathlib.Path`.

The non-interactive ``Agg`` backend is selected at import only when nothing has chosen a
backend yet (no ``MPLBACKEND``, pyplot not imported), so notebooks keep their inline backend.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import sys

import matplotlib

if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from probsig_jax.validation import ConfigError, require  # noqa: E402

__all__ = [
    "plot_curves",
    "plot_relative_errors",
    "plot_similarity_heatmaps",
    "plot_similarity_scatter",
    "plot_projection_trajectory",
    "plot_singular_values",
]

DPI = 120
MAX_TICK_LABELS = 20
MAX_POINT_LABELS = 30
MAX_SNAPSHOTS = 6
MAX_SINGULAR_VALUES = 8
_LINESTYLES = ("-", "--", ":", "-.")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _save(fig: Any, path: str | os.PathLike) -> Path:
    """Save ``fig`` as PNG atomically to ``path``, close it, and return the Path."""
    target = Path(path)
    tmp = target.with_suffix(".tmp.png")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(tmp, dpi=DPI, format="png")
        os.replace(tmp, target)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return target


def _array(x: Any, field: str, ndim: int) -> np.ndarray:
    """Convert ``x`` to a float array with ``ndim`` dimensions, else ConfigError."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(field, f"must be a real {ndim}-D array, got {type(x).__name__}") from None
    require(arr.ndim == ndim, field, f"must be a {ndim}-D array, got shape {arr.shape}")
    return arr


def _xy_curves(curves: Any, field: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Check a ``{label: (t, y)}`` mapping of equal-length 1-D arrays."""
    require(isinstance(curves, dict) and len(curves) > 0, field, "must be a non-empty dict label -> (t, values)")
    out = {}
    for label, pair in curves.items():
        require(
            isinstance(pair, (tuple, list)) and len(pair) == 2,
            field,
            f"entry {label!r} must be a (t, values) pair",
        )
        t = _array(pair[0], f"{field}[{label!r}] t", 1)
        y = _array(pair[1], f"{field}[{label!r}] values", 1)
        require(t.shape == y.shape, field, f"entry {label!r}: t and values must have equal length, got {t.size} and {y.size}")
        out[str(label)] = (t, y)
    return out


def _thin_ticks(n: int, max_shown: int = MAX_TICK_LABELS) -> np.ndarray:
    """Evenly spaced tick positions, at most about ``max_shown`` of ``n``."""
    step = max(1, math.ceil(n / max_shown))
    return np.arange(0, n, step)


def _snapshot_indices(T: int, max_shown: int = MAX_SNAPSHOTS) -> np.ndarray:
    """Up to ``max_shown`` evenly spaced indices in ``[0, T)`` including ``0`` and ``T - 1``."""
    return np.unique(np.round(np.linspace(0, T - 1, min(T, max_shown))).astype(int))


# ---------------------------------------------------------------------------
# curves
# ---------------------------------------------------------------------------


def plot_curves(
    path: str | os.PathLike,
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    xlabel: str = "t = step × lr",
    ylabel: str = "loss",
    logy: bool = True,
    logx: bool = False,
    marker: str | None = None,
    vline: float | None = None,
    vline_label: str | None = None,
) -> Path:
    """One line per entry (loss, accuracy or alignment against time, or a metric against a swept value).

    Args:
        path: output PNG.
        curves: ``label -> (x, y)`` with ``x`` and ``y`` 1-D of equal length.
        xlabel, ylabel: axis labels.
        logy, logx: logarithmic axes (``logx`` e.g. for a sweep over initialisation scales).
        marker: matplotlib marker at every point (e.g. ``"o"`` for a sweep), none by default.
        vline: optional x position of a dashed vertical marker (e.g. a phase change).
        vline_label: legend label for the marker.
    """
    data = _xy_curves(curves, "curves")
    fig, ax = plt.subplots(figsize=(6.4, 4.2), constrained_layout=True)
    for label, (t, y) in data.items():
        ax.plot(t, y, label=label, lw=1.5, marker=marker)
    if vline is not None:
        ax.axvline(float(vline), color="k", ls="--", lw=1.0, label=vline_label)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def plot_relative_errors(
    path: str | os.PathLike,
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    threshold: float | None = None,
    vlines: dict[str, float] | None = None,
) -> Path:
    """Relative error against time on a log y axis.

    Args:
        path: output PNG.
        curves: ``label -> (t, relative_error)``, 1-D arrays of equal length.
        threshold: optional horizontal dotted line (e.g. ``0.02``).
        vlines: optional ``label -> t`` vertical dashed lines, each in the legend.
    """
    data = _xy_curves(curves, "curves")
    require(vlines is None or isinstance(vlines, dict), "vlines", "must be a dict label -> t or None")
    fig, ax = plt.subplots(figsize=(6.4, 4.2), constrained_layout=True)
    for label, (t, y) in data.items():
        ax.plot(t, y, label=label, lw=1.5)
    if threshold is not None:
        ax.axhline(float(threshold), color="gray", ls=":", lw=1.2, label=f"threshold {float(threshold):g}")
    for i, (label, x) in enumerate((vlines or {}).items()):
        ax.axvline(float(x), color=f"C{(i + len(data)) % 10}", ls="--", lw=1.0, label=str(label))
    ax.set_yscale("log")
    ax.set_xlabel("t = step × lr")
    ax.set_ylabel("relative error")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


# ---------------------------------------------------------------------------
# similarity matrices
# ---------------------------------------------------------------------------


def plot_similarity_heatmaps(
    path: str | os.PathLike,
    matrices: dict[str, np.ndarray],
    tick_labels: list[str] | None = None,
    *,
    title: str | None = None,
    vmin: float = -1,
    vmax: float = 1,
) -> Path:
    """Side-by-side heatmaps of ``(n, n)`` similarity matrices on one colour scale.

    Args:
        path: output PNG.
        matrices: ``panel title -> (n, n)`` matrix; all must have the same shape.
        tick_labels: optional ``n`` token names; at most about 20 are shown.
        title: optional figure title.
        vmin, vmax: shared colour range (``coolwarm`` colormap), ``vmin < vmax``.
    """
    require(isinstance(matrices, dict) and len(matrices) > 0, "matrices", "must be a non-empty dict title -> (n, n) matrix")
    mats = {str(k): _array(v, f"matrices[{k!r}]", 2) for k, v in matrices.items()}
    shape = next(iter(mats.values())).shape
    for name, m in mats.items():
        require(m.shape[0] == m.shape[1], "matrices", f"entry {name!r} must be square (n, n), got {m.shape}")
        require(m.shape == shape, "matrices", f"entries must share one shape {shape}, got {m.shape} for {name!r}")
    n = shape[0]
    if tick_labels is not None:
        require(len(tick_labels) == n, "tick_labels", f"must have n = {n} entries, got {len(tick_labels)}")
    require(float(vmin) < float(vmax), "vmin", f"must be < vmax ({vmax}), got {vmin}")

    panels = len(mats)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels + 1.0, 4.4), constrained_layout=True, squeeze=False)
    ticks = _thin_ticks(n)
    image = None
    for ax, (name, m) in zip(axes[0], mats.items()):
        image = ax.imshow(m, cmap="coolwarm", vmin=float(vmin), vmax=float(vmax), interpolation="nearest")
        ax.set_title(name)
        if tick_labels is not None:
            shown = [str(tick_labels[i]) for i in ticks]
            ax.set_xticks(ticks, shown, rotation=90, fontsize="x-small")
            ax.set_yticks(ticks, shown, fontsize="x-small")
        else:
            ax.set_xticks(ticks)
            ax.set_yticks(ticks)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.85, label="similarity")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_similarity_scatter(
    path: str | os.PathLike,
    x: np.ndarray,
    y: np.ndarray,
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    stats: dict[str, float] | None = None,
) -> Path:
    """Scatter of off-diagonal similarities of one matrix against another.

    No ``y = x`` reference line is drawn, since the two similarities need not share a
    scale.

    Args:
        path: output PNG.
        x, y: either two ``(n, n)`` matrices (their strict upper triangles are used)
            or two 1-D arrays of already-extracted pair values, of equal length.
        xlabel, ylabel: axis labels.
        title: optional title.
        stats: optional ``name -> value`` shown in a text box (e.g. the output of
            :func:`probsig_jax.analysis.alignment_metrics`).
    """
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    for name, arr in (("x", xs), ("y", ys)):
        require(
            arr.ndim == 1 or (arr.ndim == 2 and arr.shape[0] == arr.shape[1]),
            name,
            f"must be a 1-D array of pair values or a square (n, n) matrix, got shape {arr.shape}",
        )
    require(xs.shape == ys.shape, "y", f"must have the same shape as x {xs.shape}, got {ys.shape}")
    if xs.ndim == 2:
        rows, cols = np.triu_indices(xs.shape[0], k=1)
        xs, ys = xs[rows, cols], ys[rows, cols]

    fig, ax = plt.subplots(figsize=(5.2, 4.8), constrained_layout=True)
    ax.scatter(xs, ys, s=8, alpha=0.5, edgecolors="none")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    if stats:
        text = "\n".join(f"{k} = {v:.3g}" if isinstance(v, (int, float, np.number)) else f"{k} = {v}" for k, v in stats.items())
        ax.text(
            0.03,
            0.97,
            text,
            transform=ax.transAxes,
            va="top",
            ha="left",
            fontsize="small",
            family="monospace",
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85},
        )
    return _save(fig, path)


# ---------------------------------------------------------------------------
# geometry over time
# ---------------------------------------------------------------------------


def plot_projection_trajectory(
    path: str | os.PathLike,
    projections: np.ndarray,
    times: np.ndarray,
    labels: list[str],
    *,
    title: str | None = None,
) -> Path:
    """2-D projections of token embeddings at several training times.

    One panel per snapshot: up to 6 evenly chosen from the ``T`` available, always
    including the first and the last.  Points are coloured by token index (viridis),
    consecutive tokens are joined by a thin line (revealing ordered structure, e.g.
    of number tokens), and points are annotated with their labels (every
    ``ceil(n / 30)``-th label when ``n > 30``).

    Args:
        path: output PNG.
        projections: ``(T, n, 2)`` coordinates, e.g. from
            :func:`probsig_jax.analysis.pca_projection` with a fixed ``basis_from``.
        times: ``(T,)`` time of each snapshot.
        labels: ``n`` token names.
        title: optional figure title.
    """
    proj = _array(projections, "projections", 3)
    require(proj.shape[2] == 2 and proj.shape[0] >= 1 and proj.shape[1] >= 1, "projections", f"must have shape (T, n, 2) with T, n >= 1, got {proj.shape}")
    T, n, _ = proj.shape
    ts = _array(times, "times", 1)
    require(ts.size == T, "times", f"must have T = {T} entries, got {ts.size}")
    require(len(labels) == n, "labels", f"must have n = {n} entries, got {len(labels)}")

    snaps = _snapshot_indices(T)
    cols = min(3, len(snaps))
    rows = math.ceil(len(snaps) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols + 0.8, 3.8 * rows), constrained_layout=True, squeeze=False)
    label_step = max(1, math.ceil(n / MAX_POINT_LABELS)) if n > MAX_POINT_LABELS else 1
    colours = np.arange(n)
    scatter = None
    for ax, s in zip(axes.ravel(), snaps):
        pts = proj[s]
        ax.plot(pts[:, 0], pts[:, 1], color="0.6", lw=0.6, zorder=1)
        scatter = ax.scatter(pts[:, 0], pts[:, 1], c=colours, cmap="viridis", vmin=0, vmax=max(n - 1, 1), s=18, zorder=2)
        for i in range(0, n, label_step):
            ax.annotate(str(labels[i]), pts[i], fontsize="xx-small", xytext=(2, 2), textcoords="offset points")
        ax.set_title(f"t = {ts[s]:.4g}")
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.grid(True, alpha=0.3)
    for ax in axes.ravel()[len(snaps):]:
        ax.set_visible(False)
    fig.colorbar(scatter, ax=axes.ravel().tolist(), shrink=0.8, label="token index")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_singular_values(
    path: str | os.PathLike,
    times: np.ndarray,
    values: dict[str, np.ndarray],
) -> Path:
    """Singular values over time on a log y axis.

    Colour encodes the singular-value index (the first 8 are drawn), line style
    encodes the entry (e.g. ``"simulation"`` solid vs ``"theory"`` dashed).

    Args:
        path: output PNG.
        times: ``(T,)`` time points.
        values: ``label -> (T, r)`` singular values at each time.
    """
    ts = _array(times, "times", 1)
    require(isinstance(values, dict) and len(values) > 0, "values", "must be a non-empty dict label -> (T, r) array")
    data = {}
    for label, v in values.items():
        arr = _array(v, f"values[{label!r}]", 2)
        require(arr.shape[0] == ts.size, "values", f"entry {label!r} must have shape (T, r) with T = {ts.size}, got {arr.shape}")
        data[str(label)] = arr

    fig, ax = plt.subplots(figsize=(6.4, 4.4), constrained_layout=True)
    r_max = 0
    for j, (label, arr) in enumerate(data.items()):
        style = _LINESTYLES[j % len(_LINESTYLES)]
        r = min(arr.shape[1], MAX_SINGULAR_VALUES)
        r_max = max(r_max, r)
        for i in range(r):
            ax.plot(ts, arr[:, i], color=f"C{i}", ls=style, lw=1.3)
    handles = [Line2D([], [], color="k", ls=_LINESTYLES[j % len(_LINESTYLES)], label=label) for j, label in enumerate(data)]
    handles += [Line2D([], [], color=f"C{i}", ls="-", label=f"σ{i + 1}") for i in range(r_max)]
    ax.legend(handles=handles, fontsize="x-small", ncol=2)
    ax.set_yscale("log")
    ax.set_xlabel("t = step × lr")
    ax.set_ylabel("singular value")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)
