"""Tests for probsig_jax.analysis.plots: each plot draws into a given Axes (or a new figure), and ``save``
writes a real PNG atomically through the one atomic writer."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from probsig_jax.analysis import plots
from probsig_jax.validation import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(result: Path, expected: Path) -> None:
    assert Path(result) == expected
    data = expected.read_bytes()
    assert len(data) > 1000
    assert data[:8] == PNG_MAGIC
    leftovers = [p.name for p in expected.parent.iterdir() if p.name != expected.name and p.name.startswith(".")]
    assert leftovers == []


def test_loss_curves(tmp_path):
    t = np.linspace(0.0, 5.0, 50)
    out = tmp_path / "loss.png"
    ax = plots.plot_curves({"train": (t, np.exp(-t) + 1e-3), "theory": (t, np.exp(-1.1 * t) + 1e-3)},
                           vlines={"switch": 2.0}, hlines={"floor": 1e-3})
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[:2] == ["train", "theory"] and "switch" in labels and "floor" in labels
    _assert_png(plots.save(ax, out), out)
    assert not plt.fignum_exists(ax.figure.number)          # save closes the figure


def test_save_creates_parent_and_overwrites_atomically(tmp_path, monkeypatch):
    t = np.arange(5.0)
    out = tmp_path / "sub" / "dir" / "loss.png"
    plots.save(plots.plot_curves({"a": (t, t + 1)}, logy=False), out)
    first = out.read_bytes()
    writes = []
    real = plots.write_bytes
    monkeypatch.setattr(plots, "write_bytes", lambda path, data: writes.append(path) or real(path, data))
    plots.save(plots.plot_curves({"a": (t, t + 1), "b": (t, 2 * t + 1)}, logy=False), out)
    _assert_png(out, out)
    assert out.read_bytes() != first and writes == [out]     # through probsig_jax.runs.write_bytes


def test_curves_draw_into_a_given_axes():
    """The notebooks compose panels: a plot drawn into ``ax`` stays there, no new figure is made."""
    fig, axes = plt.subplots(1, 2)
    before = plt.get_fignums()
    scales = np.array([1e-3, 1e-2, 1e-1, 1.0])
    ax = plots.plot_curves({"ffn": (scales, [0.6, 0.62, 0.7, 0.3])}, ax=axes[1], xlabel="init scale",
                           ylabel="Pearson", logy=False, logx=True, marker="o", styles={"ffn": {"ls": "--"}})
    assert ax is axes[1] and plt.get_fignums() == before
    assert ax.get_xscale() == "log" and [line.get_marker() for line in ax.get_lines()] == ["o"]
    assert ax.get_lines()[0].get_linestyle() == "--" and not axes[0].get_lines()
    plt.close(fig)


def test_similarity_heatmaps(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.normal(size=(45, 4))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    S = v @ v.T
    out = tmp_path / "heat.png"
    fig = plots.plot_similarity_heatmaps({"embedding": S, "signature": S ** 3}, [str(i) for i in range(45)],
                                         title="cosine")
    assert [ax.get_title() for ax in fig.axes[:2]] == ["embedding", "signature"]
    _assert_png(plots.save(fig, out), out)
    # Tick thinning keeps at most ~20 labels.
    assert len(plots._thin_ticks(45)) <= 20
    assert len(plots._thin_ticks(10)) == 10


def test_heatmaps_into_given_axes_share_one_scale():
    fig, axes = plt.subplots(1, 3)
    got = plots.plot_similarity_heatmaps({"a": np.eye(3), "b": -np.eye(3)}, axes=axes[:2], vmin=-2, vmax=2,
                                         cmap="PuOr_r")
    assert got is fig
    assert [im.get_clim() for ax in axes[:2] for im in ax.get_images()] == [(-2, 2), (-2, 2)]
    assert not axes[2].get_images()
    plt.close(fig)


def test_similarity_scatter(tmp_path):
    rng = np.random.default_rng(1)
    S1 = rng.uniform(-1, 1, size=(12, 12))
    S1 = (S1 + S1.T) / 2
    out = tmp_path / "scatter.png"
    ax = plots.plot_similarity_scatter(S1, 0.5 * S1 + 0.1, xlabel="signature", ylabel="embedding", title="t=1",
                                       stats={"pearson": 1.0, "k": 5})
    assert len(ax.collections[0].get_offsets()) == 66           # the 12 * 11 / 2 off-diagonal pairs
    _assert_png(plots.save(ax, out), out)
    ax = plots.plot_similarity_scatter(np.arange(10.0), np.arange(10.0) ** 2, xlabel="x", ylabel="y", diagonal=True,
                                       label="pairs")
    assert "y = x" in [line.get_label() for line in ax.get_lines()]
    plt.close(ax.figure)


def test_projection_trajectory(tmp_path):
    T, n = 9, 40
    rng = np.random.default_rng(2)
    angles = np.linspace(0, np.pi, n)
    base = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    proj = np.stack([base * s + 0.05 * rng.normal(size=(n, 2)) for s in np.linspace(0.1, 1.0, T)])
    out = tmp_path / "traj.png"
    fig = plots.plot_projection_trajectory(proj, np.linspace(0, 4, T), [str(i) for i in range(n)], title="numbers")
    _assert_png(plots.save(fig, out), out)
    fig, axes = plt.subplots(1, 2)
    plots.plot_projection_trajectory(proj, np.linspace(0, 4, T), [str(i) for i in range(n)], axes=axes,
                                     time_label="step")
    assert [ax.get_title() for ax in axes] == ["step = 0", "step = 4"]     # one snapshot per given axes
    plt.close(fig)


def test_snapshot_indices_include_endpoints():
    np.testing.assert_array_equal(plots._snapshot_indices(1), [0])
    np.testing.assert_array_equal(plots._snapshot_indices(4), [0, 1, 2, 3])
    idx = plots._snapshot_indices(100)
    assert len(idx) == 6 and idx[0] == 0 and idx[-1] == 99


def test_singular_values(tmp_path):
    t = np.linspace(0, 5, 30)
    sv = np.exp(np.outer(t, np.linspace(0.1, 1.0, 10)))  # (T, 10): only first 8 drawn
    out = tmp_path / "sv.png"
    ax = plots.plot_singular_values(t, {"simulation": sv, "theory": 1.1 * sv}, reference={"sinh": (t, np.sinh(t))})
    assert len(ax.get_lines()) == 2 * 8 + 1
    _assert_png(plots.save(ax, out), out)


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda: plots.plot_curves({}), "curves"),
        (lambda: plots.plot_curves({"a": ([1, 2], [1])}), "curves"),
        (lambda: plots.plot_similarity_heatmaps({"a": np.ones((3, 4))}), "matrices"),
        (lambda: plots.plot_similarity_heatmaps({"a": np.eye(3)}, ["x"]), "tick_labels"),
        (lambda: plots.plot_projection_trajectory(np.zeros((2, 3, 3)), np.arange(2.0), ["a"] * 3), "projections"),
        (lambda: plots.plot_projection_trajectory(np.zeros((2, 3, 2)), np.arange(3.0), ["a"] * 3), "times"),
        (lambda: plots.plot_singular_values(np.arange(3.0), {"a": np.ones((4, 2))}), "values"),
        (lambda: plots.plot_similarity_scatter(np.ones(3), np.ones(4), xlabel="x", ylabel="y"), "y"),
        (lambda: plots.plot_heatmap(np.eye(2), vmin=1, vmax=0), "vmin"),
    ],
)
def test_bad_input_raises_config_error(call, field):
    before = plt.get_fignums()
    with pytest.raises(ConfigError) as info:
        call()
    assert info.value.field == field
    plt.close("all") if plt.get_fignums() != before else None
