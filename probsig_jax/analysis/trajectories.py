"""Comparisons of weight trajectories (stacked ``(T, ...)`` arrays recorded over training or from the theory)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

__all__ = ["approximation_window", "crossing_time", "fit_power_law", "relative_error", "joint_relative_error", "norm_growth", "last_index_within",
           "product_singular_values"]


def _flat_norms(x_T) -> np.ndarray:
    x = np.asarray(x_T)
    return np.linalg.norm(x.reshape(len(x), -1), axis=1)


def relative_error(x_T: np.ndarray, ref_T: np.ndarray) -> np.ndarray:
    """(T,) ``||x(t) - ref(t)||_F / ||ref(t)||_F``."""
    return _flat_norms(np.asarray(x_T) - np.asarray(ref_T)) / _flat_norms(ref_T)


def joint_relative_error(E_T, U_T, E_ref, U_ref) -> np.ndarray:
    """(T,) relative error of the concatenated parameters (E, U)."""
    num = _flat_norms(np.asarray(E_T) - np.asarray(E_ref)) ** 2 + _flat_norms(np.asarray(U_T) - np.asarray(U_ref)) ** 2
    den = _flat_norms(E_ref) ** 2 + _flat_norms(U_ref) ** 2
    return np.sqrt(num / den)


def norm_growth(E_T: np.ndarray, E0: np.ndarray) -> np.ndarray:
    """(T,) ``||E(t)||_F / ||E(0)||_F``: how far the weights have grown from their initialisation."""
    return _flat_norms(E_T) / np.linalg.norm(np.asarray(E0))


def last_index_within(growth_T: np.ndarray, factor: float) -> int:
    """The last record index whose growth is ``<= factor`` (0 if none)."""
    within = np.nonzero(np.asarray(growth_T) <= factor)[0]
    return int(within[-1]) if len(within) else 0


def product_singular_values(E_T: np.ndarray, U_T: np.ndarray, k: int = 8) -> np.ndarray:
    """(T, k) leading singular values of the logit map ``U(t) E(t)`` (E (T, d, F), U (T, V, d))."""
    return np.stack([np.linalg.svd(U @ E, compute_uv=False)[:k] for E, U in zip(np.asarray(E_T), np.asarray(U_T))])


APPROXIMATION_THRESHOLDS = (0.01, 0.02)


def approximation_window(rel_err_T: np.ndarray, growth_T: np.ndarray, times: np.ndarray) -> dict[str, Any]:
    """Where an approximation first leaves the exact flow by more than 1 % and 2 %: ``growth_at_<p>pct`` (the
    exact flow's ||E_t|| / ||E_0|| there) and ``time_at_<p>pct``; None when it never does in the run."""
    out: dict[str, Any] = {}
    for threshold in APPROXIMATION_THRESHOLDS:
        above = np.flatnonzero(np.asarray(rel_err_T) > threshold)
        key = f"{round(threshold * 100)}pct"
        out[f"growth_at_{key}"] = float(growth_T[above[0]]) if above.size else None
        out[f"time_at_{key}"] = float(times[above[0]]) if above.size else None
    return out


def crossing_time(times: np.ndarray, values: np.ndarray, threshold: float) -> float:
    """First time ``values`` reaches ``threshold``, log-linear interpolation between records; nan if never."""
    above = np.flatnonzero(np.asarray(values) >= threshold)
    if not above.size:
        return float("nan")
    i = int(above[0])
    if i == 0:
        return float(times[0])
    lo, hi = np.log(values[i - 1]), np.log(values[i])
    frac = (np.log(threshold) - lo) / (hi - lo) if hi > lo else 1.0
    return float(times[i - 1] + frac * (times[i] - times[i - 1]))


def fit_power_law(scales, times, confidence: float = 0.95) -> dict[str, float]:
    """Least-squares slope of log t* on log eps with its t-interval (``exponent``, ``ci_low``, ``ci_high``)."""
    with np.errstate(divide="ignore", invalid="ignore"):  # zero or nan times are dropped just below
        x, y = np.log(np.asarray(scales, float)), np.log(np.asarray(times, float))
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return {"exponent": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "points": int(ok.sum())}
    fit = stats.linregress(x[ok], y[ok])
    half = stats.t.ppf(0.5 + confidence / 2, ok.sum() - 2) * fit.stderr
    return {"exponent": float(fit.slope), "ci_low": float(fit.slope - half), "ci_high": float(fit.slope + half),
            "points": int(ok.sum())}
