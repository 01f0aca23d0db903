"""Tests for probsig_jax.analysis.fourier: per-unit DFT / Walsh-Hadamard diagnostics against explicit sums and
constructed units whose answers are known in closed form."""

from __future__ import annotations

import json

import numpy as np
import pytest

from probsig_jax.analysis import (
    dominant_frequency,
    dominant_walsh_index,
    fold_frequencies,
    frequency_matching,
    mean_resultant_length,
    phase_alignment,
    sparsity,
    summarise_units,
    unit_diagnostics,
    unit_spectra,
    walsh_hadamard_spectra,
    walsh_sparsity,
)
from probsig_jax.analysis.fourier import _wrap
from probsig_jax.validation import ConfigError


def _cos(P: int, r, phase) -> np.ndarray:
    """(D, P) rows ``cos(2 pi r_d x / P + phase_d)``."""
    x = np.arange(P)
    return np.cos(2 * np.pi * np.outer(r, x) / P + np.asarray(phase, float)[:, None])


def _wrapped_close(a, b, atol=1e-9) -> bool:
    return bool(np.all(np.abs(np.angle(np.exp(1j * (np.asarray(a) - np.asarray(b))))) < atol))


# ---------------------------------------------------------------------------
# DFT convention and folding
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("P", [7, 8])
def test_unit_spectra_is_the_unnormalised_forward_dft(P):
    rng = np.random.default_rng(0)
    D = 3
    U, V, W = rng.normal(size=(D, P)), rng.normal(size=(D, P)), rng.normal(size=(P, D))
    U_hat, V_hat, W_hat = unit_spectra(U, V, W)
    for hat, rows in ((U_hat, U), (V_hat, V), (W_hat, W.T)):
        assert hat.shape == (D, P) and np.iscomplexobj(hat)
        explicit = np.array([[sum(rows[d, x] * np.exp(-2j * np.pi * r * x / P) for x in range(P))
                              for r in range(P)] for d in range(D)])
        np.testing.assert_allclose(hat, explicit, atol=1e-12)


def test_fold_frequencies_labels_and_nyquist():
    rng = np.random.default_rng(1)
    s7 = np.fft.fft(rng.normal(size=(2, 7)), axis=1)
    power, r = fold_frequencies(s7)
    assert r.tolist() == [1, 2, 3] and power.shape == (2, 3)
    np.testing.assert_allclose(power[:, 0], np.abs(s7[:, 1]) ** 2 + np.abs(s7[:, 6]) ** 2)
    np.testing.assert_allclose(power.sum(1), (np.abs(s7[:, 1:]) ** 2).sum(1))
    s8 = np.fft.fft(rng.normal(size=(2, 8)), axis=1)
    power, r = fold_frequencies(s8)
    assert r.tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(power[:, 3], np.abs(s8[:, 4]) ** 2)       # Nyquist stands alone
    np.testing.assert_allclose(power.sum(1), (np.abs(s8[:, 1:]) ** 2).sum(1))


@pytest.mark.parametrize("P", [7, 113])
def test_pure_cosine_has_its_frequency_and_sparsity_one_with_r_and_P_minus_r_identified(P):
    rng = np.random.default_rng(P)
    r = np.arange(1, (P - 1) // 2 + 1)
    both = np.concatenate([r, P - r])                       # cos at r and at P - r: the same mode
    rows = _cos(P, both, rng.uniform(-np.pi, np.pi, size=len(both))) * rng.uniform(0.5, 2, size=(len(both), 1))
    spectrum = np.fft.fft(rows + 3.0, axis=1)               # a constant offset is not a frequency
    np.testing.assert_array_equal(dominant_frequency(spectrum), np.concatenate([r, r]))
    np.testing.assert_allclose(sparsity(spectrum), 1.0, atol=1e-12)


def test_sparsity_is_the_papers_formula_for_odd_P_and_one_for_a_pure_nyquist_mode():
    rng = np.random.default_rng(2)
    P = 13
    s = np.fft.fft(rng.normal(size=(50, P)), axis=1)
    tau = dominant_frequency(s)
    literal = 2 * np.abs(s[np.arange(50), tau]) ** 2 / (np.abs(s[:, 1:]) ** 2).sum(1)
    np.testing.assert_allclose(sparsity(s), literal, rtol=1e-12)
    nyquist = np.fft.fft((-1.0) ** np.arange(8)[None], axis=1)
    assert dominant_frequency(nyquist).tolist() == [4]
    np.testing.assert_allclose(sparsity(nyquist), 1.0)


def test_sparsity_of_zero_and_constant_units_is_zero():
    spectrum = np.fft.fft(np.stack([np.zeros(11), np.full(11, 2.5), _cos(11, [2], [0.0])[0]]), axis=1)
    np.testing.assert_allclose(sparsity(spectrum), [0.0, 0.0, 1.0], atol=1e-12)
    assert dominant_frequency(spectrum)[0] == 1                # documented: argmax of zeros
    np.testing.assert_allclose(sparsity(spectrum, frequency=np.array([1, 1, 3])), [0.0, 0.0, 0.0], atol=1e-12)


@pytest.mark.parametrize("P", [7, 113])
def test_white_noise_sparsity_in_expectation(P):
    """For Gaussian white noise and odd P the n = (P - 1) / 2 folded powers are i.i.d. exponential, so their
    shares are flat-Dirichlet: the share at a fixed frequency has mean 1/n = 2/(P - 1) and variance
    (n - 1) / (n^2 (n + 1)); the share at the argmax (rho itself) has mean H_n / n and second moment
    (H_n^2 + H2_n) / (n (n + 1)) (Renyi's representation of the largest exponential). Tolerance: 5 standard
    errors of the mean over N units."""
    N, n = 4000, (P - 1) // 2
    rng = np.random.default_rng(P + 1)
    spectrum = np.fft.fft(rng.normal(size=(N, P)), axis=1)
    fixed = sparsity(spectrum, frequency=rng.integers(1, n + 1, size=N))
    sd_fixed = np.sqrt((n - 1) / (n ** 2 * (n + 1)))
    assert abs(fixed.mean() - 2 / (P - 1)) < 5 * sd_fixed / np.sqrt(N)
    k = np.arange(1, n + 1)
    H, H2 = (1 / k).sum(), (1 / k ** 2).sum()
    mean_max = H / n
    sd_max = np.sqrt((H ** 2 + H2) / (n * (n + 1)) - mean_max ** 2)
    rho = sparsity(spectrum)
    assert abs(rho.mean() - mean_max) < 5 * sd_max / np.sqrt(N)
    assert np.all((rho >= 1 / n - 1e-12) & (rho <= 1))


# ---------------------------------------------------------------------------
# phases and matching
# ---------------------------------------------------------------------------


def test_wrap_is_onto_minus_pi_exclusive_pi_inclusive():
    np.testing.assert_allclose(_wrap(np.array([np.pi, -np.pi, 3 * np.pi, 0.5 - 4 * np.pi])), [np.pi, np.pi, np.pi, 0.5])
    w = _wrap(np.random.default_rng(3).uniform(-20, 20, size=1000))
    assert np.all((w > -np.pi) & (w <= np.pi))


@pytest.mark.parametrize("P", [7, 113])
def test_phase_alignment_reads_alpha_plus_beta_minus_gamma_at_r(P):
    rng = np.random.default_rng(4)
    D = 40
    r = rng.integers(1, (P - 1) // 2 + 1, size=D)
    alpha, beta, gamma = (rng.uniform(-np.pi, np.pi, size=D) for _ in range(3))
    U, V, W = _cos(P, r, alpha), _cos(P, r, beta), _cos(P, r, gamma).T
    U_hat, V_hat, W_hat = unit_spectra(U, V, W)
    d = np.arange(D)
    assert _wrapped_close(np.angle(U_hat[d, r]), alpha)     # the convention: arg at r is the cosine's phase
    assert _wrapped_close(np.angle(U_hat[d, P - r]), -alpha)
    phase = phase_alignment(U, V, W)
    assert np.all((phase > -np.pi) & (phase <= np.pi))
    assert _wrapped_close(phase, alpha + beta - gamma)
    assert not _wrapped_close(phase, alpha + beta + gamma, atol=1e-3)   # W's arg at P - r would give this
    np.testing.assert_allclose(phase_alignment(U, V, W, frequency=r), phase)
    # the same unit written at P - r: the cosines' phases flip sign, the answer at r is -(alpha + beta - gamma)
    Up, Vp, Wp = _cos(P, P - r, alpha), _cos(P, P - r, beta), _cos(P, P - r, gamma).T
    assert _wrapped_close(phase_alignment(Up, Vp, Wp), -(alpha + beta - gamma))


def test_phase_alignment_aligned_and_misaligned_units_and_resultant_length():
    P, D = 113, 60
    rng = np.random.default_rng(5)
    r = rng.integers(1, 57, size=D)
    alpha, beta = rng.uniform(-np.pi, np.pi, size=(2, D))
    aligned = phase_alignment(_cos(P, r, alpha), _cos(P, r, beta), _cos(P, r, alpha + beta).T)
    np.testing.assert_allclose(aligned, 0.0, atol=1e-9)
    assert mean_resultant_length(aligned) == pytest.approx(1.0)
    offset = np.where(np.arange(D) % 2 == 0, 1.0, -1.0)           # +-1 rad: resultant length cos(1)
    misaligned = phase_alignment(_cos(P, r, alpha), _cos(P, r, beta), _cos(P, r, alpha + beta - offset).T)
    np.testing.assert_allclose(misaligned, offset, atol=1e-9)
    assert mean_resultant_length(misaligned) == pytest.approx(np.cos(1.0))
    assert np.isnan(mean_resultant_length(np.array([])))


def test_frequency_matching_mask():
    P = 7
    tau_u = np.array([1, 2, 3, 1, 2])
    tau_v = np.array([1, 2, 3, 2, 2])
    tau_w = np.array([1, 2, 3, 1, 3])
    phase = np.zeros(5)
    # v at P - tau for the third unit: still the same mode
    tau_v_written = np.where(np.arange(5) == 2, P - tau_v, tau_v)
    out = frequency_matching(_cos(P, tau_u, phase), _cos(P, tau_v_written, phase), _cos(P, tau_w, phase).T)
    np.testing.assert_array_equal(out["tau_U"], tau_u)
    np.testing.assert_array_equal(out["tau_V"], tau_v)
    np.testing.assert_array_equal(out["tau_W"], tau_w)
    np.testing.assert_array_equal(out["matched"], [True, True, True, False, False])
    assert out["matched_fraction"] == pytest.approx(0.6)


# ---------------------------------------------------------------------------
# Walsh-Hadamard
# ---------------------------------------------------------------------------


def _walsh(P: int, k) -> np.ndarray:
    x = np.arange(P)
    return np.array([[(-1.0) ** bin(kk & xx).count("1") for xx in x] for kk in k])


@pytest.mark.parametrize("P", [8, 64])
def test_walsh_hadamard_is_the_popcount_sum(P):
    rng = np.random.default_rng(6)
    D = 3
    U, V, W = rng.normal(size=(D, P)), rng.normal(size=(D, P)), rng.normal(size=(P, D))
    H = _walsh(P, range(P))                                        # H[k, x] = (-1)^popcount(k & x)
    for hat, rows in zip(walsh_hadamard_spectra(U, V, W), (U, V, W.T)):
        explicit = np.array([[sum(rows[d, x] * H[k, x] for x in range(P)) for k in range(P)] for d in range(D)])
        np.testing.assert_allclose(hat, explicit, atol=1e-12)


def test_pure_walsh_function_has_its_index_and_sparsity_one():
    P = 16
    k = np.arange(1, P)
    rows = 1.5 * _walsh(P, k) + 0.25                               # constant offset lives at k = 0
    U_wh, _, _ = walsh_hadamard_spectra(rows, rows, rows.T)
    np.testing.assert_array_equal(dominant_walsh_index(U_wh), k)
    np.testing.assert_allclose(walsh_sparsity(U_wh), 1.0)


def test_walsh_sparsity_has_no_factor_two_and_zero_units_give_zero():
    P = 8
    rows = np.stack([2 * _walsh(P, [3])[0] + 1 * _walsh(P, [5])[0], np.zeros(P), np.ones(P)])
    U_wh, _, _ = walsh_hadamard_spectra(rows, rows, rows.T)
    assert dominant_walsh_index(U_wh)[0] == 3
    np.testing.assert_allclose(walsh_sparsity(U_wh), [4 / 5, 0.0, 0.0])
    np.testing.assert_allclose(walsh_sparsity(U_wh, index=np.array([5, 1, 1])), [1 / 5, 0.0, 0.0])


# ---------------------------------------------------------------------------
# unit_diagnostics and the summary
# ---------------------------------------------------------------------------


def test_unit_diagnostics_fourier_on_constructed_units():
    P, D = 113, 20
    rng = np.random.default_rng(7)
    r = rng.integers(1, 57, size=D)
    alpha, beta = rng.uniform(-np.pi, np.pi, size=(2, D))
    U, V, W = _cos(P, r, alpha), _cos(P, r, beta), _cos(P, r, alpha + beta).T
    noisy = np.arange(D) >= 15                                     # last five units: white noise
    U[noisy], V[noisy], W[:, noisy] = (rng.normal(size=(5, P)), rng.normal(size=(5, P)), rng.normal(size=(P, 5)))
    diag = unit_diagnostics(U, V, W)
    for key in ("tau_U", "tau_V", "tau_W", "sparsity_U", "sparsity_V", "sparsity_W", "matched", "high_sparsity",
                "phase"):
        assert diag[key].shape == (D,), key
    np.testing.assert_array_equal(diag["tau_U"][~noisy], r[~noisy])
    np.testing.assert_array_equal(diag["high_sparsity"], ~noisy)   # white noise at P = 113: rho ~ 0.08
    assert diag["matched"][~noisy].all()
    np.testing.assert_allclose(diag["phase"][~noisy], 0.0, atol=1e-9)
    assert diag["high_sparsity_fraction"] == pytest.approx(0.75)
    assert diag["matched_fraction"] == pytest.approx(diag["matched"].mean())
    summary = summarise_units(diag)
    assert set(summary) == {"units", "matched_fraction", "high_sparsity_fraction", "phase_coherence"}
    assert summary["units"] == D and summary["high_sparsity_fraction"] == pytest.approx(0.75)
    json.dumps(summary, allow_nan=False)
    stricter = unit_diagnostics(U, V, W, sparsity_threshold=1.0)  # "> threshold": nothing exceeds 1
    assert not stricter["high_sparsity"].any()


def test_unit_diagnostics_phase_coherence_none_when_nothing_matches_and_walsh_has_no_phase():
    P = 7
    zero = np.zeros(2)
    diag = unit_diagnostics(_cos(P, [1, 2], zero), _cos(P, [2, 3], zero), _cos(P, [3, 1], zero).T)
    assert diag["matched_fraction"] == 0.0 and np.isnan(diag["phase_coherence"])
    assert summarise_units(diag)["phase_coherence"] is None
    P = 8
    U = _walsh(P, [3, 5])
    diag = unit_diagnostics(U, U, _walsh(P, [3, 6]).T, basis="walsh")
    assert "phase" not in diag and "phase_coherence" not in diag
    np.testing.assert_array_equal(diag["matched"], [True, False])
    assert diag["high_sparsity"].all()
    assert set(summarise_units(diag)) == {"units", "matched_fraction", "high_sparsity_fraction"}


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------


def _field(call) -> str:
    with pytest.raises(ConfigError) as err:
        call()
    return err.value.field


def test_bad_inputs_name_the_argument():
    rng = np.random.default_rng(8)
    D, P = 4, 7
    U, V, W = rng.normal(size=(D, P)), rng.normal(size=(D, P)), rng.normal(size=(P, D))
    assert _field(lambda: unit_spectra(U, V[:, :-1], W)) == "V"
    assert _field(lambda: unit_spectra(U, V, W.T)) == "W"          # W must be (P, D), not (D, P)
    assert _field(lambda: unit_spectra(U[0], V, W)) == "U"
    assert _field(lambda: unit_spectra(U + 0j, V, W)) == "U"
    assert _field(lambda: unit_spectra(U, np.where(V > 0, np.nan, V), W)) == "V"
    assert _field(lambda: phase_alignment(U, V, W, frequency=np.full(D, 4))) == "frequency"
    assert _field(lambda: phase_alignment(U, V, W, frequency=np.ones(D - 1, int))) == "frequency"
    assert _field(lambda: sparsity(np.fft.fft(U)[0])) == "spectrum_DxP"
    assert _field(lambda: unit_diagnostics(U, V, W, basis="haar")) == "basis"
    assert _field(lambda: unit_diagnostics(U, V, W, sparsity_threshold=1.5)) == "sparsity_threshold"
    assert _field(lambda: walsh_hadamard_spectra(U, V, W)) == "U"  # P = 7 is not a power of two
    assert _field(lambda: walsh_sparsity(np.ones((2, 6)))) == "spectrum_DxP"
    assert _field(lambda: walsh_sparsity(np.ones((2, 8)), index=np.array([0, 1]))) == "index"
    assert _field(lambda: mean_resultant_length(np.zeros((2, 2)))) == "phases"
