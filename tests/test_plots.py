"""Tests for probsig_jax.plots: each figure is written as a real PNG, atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from probsig_jax import plots
from probsig_jax.validation import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(result: Path, expected: Path) -> None:
    assert Path(result) == expected
    data = expected.read_bytes()
    assert len(data) > 1000
    assert data[:8] == PNG_MAGIC
    leftovers = [p.name for p in expected.parent.iterdir() if ".tmp" in p.name]
    assert leftovers == []


def test_loss_curves(tmp_path):
    t = np.linspace(0.0, 5.0, 50)
    out = tmp_path / "loss.png"
    res = plots.plot_curves(
        str(out),
        {"train": (t, np.exp(-t) + 1e-3), "theory": (t, np.exp(-1.1 * t) + 1e-3)},
        vline=2.0,
        vline_label="switch",
    )
    _assert_png(res, out)


def test_loss_curves_creates_parent_and_overwrites(tmp_path):
    t = np.arange(5.0)
    out = tmp_path / "sub" / "dir" / "loss.png"
    plots.plot_curves(out, {"a": (t, t + 1)}, logy=False)
    first = out.read_bytes()
    plots.plot_curves(out, {"a": (t, t + 1), "b": (t, 2 * t + 1)}, logy=False)
    _assert_png(out, out)
    assert out.read_bytes() != first


def test_curves_as_a_sweep_plot(tmp_path, monkeypatch):
    """logx + markers (the init-scale sweep): the axis really is logarithmic and every point is marked."""
    import matplotlib.pyplot as plt

    seen = {}
    real_save = plots._save

    def spy(fig, path):
        ax = fig.axes[0]
        seen["xscale"], seen["markers"] = ax.get_xscale(), [line.get_marker() for line in ax.get_lines()]
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    scales = np.array([1e-3, 1e-2, 1e-1, 1.0])
    out = plots.plot_curves(tmp_path / "sweep.png", {"ffn": (scales, [0.6, 0.62, 0.7, 0.3])}, xlabel="init scale",
                            ylabel="Pearson", logy=False, logx=True, marker="o")
    _assert_png(out, tmp_path / "sweep.png")
    assert seen == {"xscale": "log", "markers": ["o"]}
    plt.close("all")


def test_relative_errors(tmp_path):
    t = np.linspace(0.0, 3.0, 40)
    out = tmp_path / "relerr.png"
    res = plots.plot_relative_errors(
        out,
        {"embedding": (t, 0.5 * np.exp(-t) + 1e-4), "signature": (t, 0.01 + 0 * t)},
        threshold=0.02,
        vlines={"t*": 1.0, "end of phase": 2.5},
    )
    _assert_png(res, out)


def test_similarity_heatmaps(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.normal(size=(45, 4))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    S = v @ v.T
    out = tmp_path / "heat.png"
    res = plots.plot_similarity_heatmaps(
        out, {"embedding": S, "signature": S ** 3}, [str(i) for i in range(45)], title="cosine"
    )
    _assert_png(res, out)
    # Tick thinning keeps at most ~20 labels.
    assert len(plots._thin_ticks(45)) <= 20
    assert len(plots._thin_ticks(10)) == 10


def test_similarity_scatter(tmp_path):
    rng = np.random.default_rng(1)
    S1 = rng.uniform(-1, 1, size=(12, 12))
    S1 = (S1 + S1.T) / 2
    out = tmp_path / "scatter.png"
    res = plots.plot_similarity_scatter(
        out, S1, 0.5 * S1 + 0.1, xlabel="signature", ylabel="embedding", title="t=1", stats={"pearson": 1.0, "k": 5}
    )
    _assert_png(res, out)
    out1d = tmp_path / "scatter1d.png"
    plots.plot_similarity_scatter(out1d, np.arange(10.0), np.arange(10.0) ** 2, xlabel="x", ylabel="y")
    _assert_png(out1d, out1d)


def test_projection_trajectory(tmp_path):
    T, n = 9, 40
    rng = np.random.default_rng(2)
    angles = np.linspace(0, np.pi, n)
    base = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    proj = np.stack([base * s + 0.05 * rng.normal(size=(n, 2)) for s in np.linspace(0.1, 1.0, T)])
    out = tmp_path / "traj.png"
    res = plots.plot_projection_trajectory(out, proj, np.linspace(0, 4, T), [str(i) for i in range(n)], title="numbers")
    _assert_png(res, out)


def test_snapshot_indices_include_endpoints():
    np.testing.assert_array_equal(plots._snapshot_indices(1), [0])
    np.testing.assert_array_equal(plots._snapshot_indices(4), [0, 1, 2, 3])
    idx = plots._snapshot_indices(100)
    assert len(idx) == 6 and idx[0] == 0 and idx[-1] == 99


def test_singular_values(tmp_path):
    t = np.linspace(0, 5, 30)
    sv = np.exp(np.outer(t, np.linspace(0.1, 1.0, 10)))  # (T, 10): only first 8 drawn
    out = tmp_path / "sv.png"
    res = plots.plot_singular_values(out, t, {"simulation": sv, "theory": 1.1 * sv})
    _assert_png(res, out)


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda p: plots.plot_curves(p, {}), "curves"),
        (lambda p: plots.plot_similarity_heatmaps(p, {"a": np.ones((3, 4))}), "matrices"),
        (lambda p: plots.plot_similarity_heatmaps(p, {"a": np.eye(3)}, ["x"]), "tick_labels"),
        (lambda p: plots.plot_projection_trajectory(p, np.zeros((2, 3, 3)), np.arange(2.0), ["a"] * 3), "projections"),
        (lambda p: plots.plot_projection_trajectory(p, np.zeros((2, 3, 2)), np.arange(3.0), ["a"] * 3), "times"),
        (lambda p: plots.plot_singular_values(p, np.arange(3.0), {"a": np.ones((4, 2))}), "values"),
        (lambda p: plots.plot_similarity_scatter(p, np.ones(3), np.ones(4), xlabel="x", ylabel="y"), "y"),
    ],
)
def test_bad_input_raises_config_error(tmp_path, call, field):
    with pytest.raises(ConfigError) as info:
        call(tmp_path / "bad.png")
    assert info.value.field == field
    assert list(tmp_path.iterdir()) == []
