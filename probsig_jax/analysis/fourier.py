"""Per-unit Fourier and Walsh-Hadamard diagnostics of the modular-addition network (MODADD.md section 4).

The model is ``f(a, b) = W sigma(U e_a + V e_b)`` with ``U, V: (D, P)`` and ``W: (P, D)``. Hidden unit ``d`` owns
the triple ``(u, v, w) = (U[d, :], V[d, :], W[:, d])``: two rows of the input maps and one column of the output
map, each a signal over the ``P`` tokens. Every function here works on all ``D`` units at once and keeps them
on the leading axis: a spectrum is a ``(D, P)`` array, units x frequencies (W is transposed for this).

Conventions
-----------
* DFT (unnormalised, numpy's forward transform ``numpy.fft.fft``): ``u_r = sum_x u_x exp(-2 pi i r x / P)``.
  For ``u_x = cos(2 pi r x / P + alpha)`` (``2r != 0 mod P``) this gives ``u_r = (P / 2) exp(i alpha)``, so the
  phase read at ``r`` (not ``P - r``, where it is ``-alpha``) is ``alpha``. Computed in float64.
* For real signals ``u_{P-r} = conj(u_r)``: ``r`` and ``P - r`` are one mode. Frequencies are labelled by
  ``r in 1..floor(P/2)``; for even ``P`` the Nyquist frequency ``P/2`` has no partner and stands alone.
  The constant (``r = 0``) component never counts as a frequency.
* Walsh-Hadamard (for XOR, ``P`` a power of two): Sylvester order (``scipy.linalg.hadamard``), unnormalised,
  ``u_k = sum_x u_x (-1)^popcount(k & x)``, ``k in 0..P-1``. Walsh modes are real and unpaired: no folding.
* Ties in an argmax go to the lowest frequency (index). A unit with no power at nonzero frequencies (zero or
  constant, up to rounding: below ``1e-24`` of its total power) has sparsity 0; its "dominant" frequency is
  the argmax of rounding noise (1 for an exact zero vector) and means nothing, so look at the sparsity.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.linalg import hadamard

from probsig_jax.validation import require, require_float

__all__ = ["unit_spectra", "fold_frequencies", "dominant_frequency", "sparsity", "frequency_matching",
           "phase_alignment", "mean_resultant_length", "walsh_hadamard_spectra", "dominant_walsh_index",
           "walsh_sparsity", "unit_diagnostics", "summarise_units", "pooled_unit_diagnostics", "trained_unit_structure",
           "frequency_agreement"]

BASES = ("fourier", "walsh")
_ROUNDING = 1e-24   # nonzero-frequency power at or below this share of the total is rounding noise (float64)


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------


def _real_matrix(x: Any, field: str) -> np.ndarray:
    x = np.asarray(x)
    require(x.ndim == 2, field, f"must be a 2-D array, got shape {x.shape}")
    require(np.issubdtype(x.dtype, np.number) and not np.iscomplexobj(x), field,
            f"must be a real numeric array, got dtype {x.dtype}")
    require(x.shape[0] >= 1 and x.shape[1] >= 2, field, f"needs at least 1 x 2 entries, got shape {x.shape}")
    x = x.astype(np.float64)
    require(bool(np.all(np.isfinite(x))), field, "must be finite")
    return x


def _weights(U: Any, V: Any, W: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated float64 ``(U, V, W^T)``, each ``(D, P)``."""
    U, V, W = _real_matrix(U, "U"), _real_matrix(V, "V"), _real_matrix(W, "W")
    D, P = U.shape
    require(V.shape == U.shape, "V", f"must have the shape of U, ({D}, {P}), got {V.shape}")
    require(W.shape == (P, D), "W", f"must have shape (P, D) = ({P}, {D}) (W is P x D), got {W.shape}")
    return U, V, W.T


def _spectrum(spectrum: Any, field: str = "spectrum") -> np.ndarray:
    s = np.asarray(spectrum)
    require(s.ndim == 2, field, f"must be a 2-D (D, P) array (units x frequencies), got shape {s.shape}")
    require(np.issubdtype(s.dtype, np.number), field, f"must be numeric, got dtype {s.dtype}")
    require(s.shape[0] >= 1 and s.shape[1] >= 2, field, f"needs at least 1 x 2 entries, got shape {s.shape}")
    require(bool(np.all(np.isfinite(s))), field, "must be finite")
    return s


def _frequencies(frequency: Any, D: int, top: int, field: str = "frequency") -> np.ndarray:
    f = np.asarray(frequency)
    require(f.shape == (D,), field, f"must have shape (D,) = ({D},), got {f.shape}")
    require(np.issubdtype(f.dtype, np.integer), field, f"must be integers, got dtype {f.dtype}")
    require(bool(np.all((f >= 1) & (f <= top))), field, f"must lie in 1..{top}")
    return f.astype(np.int64)


def _require_power_of_two(P: int, field: str) -> None:
    require(P >= 2 and P & (P - 1) == 0, field, f"needs P (its last axis) a power of two for Walsh-Hadamard, got {P}")


def _share(power_at: np.ndarray, nonzero_total: np.ndarray, total: np.ndarray) -> np.ndarray:
    """``power_at / nonzero_total``, 0 where the nonzero-frequency power is zero up to rounding."""
    empty = nonzero_total <= _ROUNDING * total
    return np.where(empty, 0.0, power_at / np.where(empty, 1.0, nonzero_total))


# ---------------------------------------------------------------------------
# Fourier (modular addition)
# ---------------------------------------------------------------------------


def unit_spectra(U_DxP: Any, V_DxP: Any, W_PxD: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unnormalised DFTs of every unit's ``(u, v, w)``: three complex128 ``(D, P)`` arrays ``(U_hat, V_hat, W_hat)``.

    ``U_hat[d, r] = sum_x U[d, x] exp(-2 pi i r x / P)`` (``numpy.fft.fft`` along the token axis, which is
    exactly this convention), likewise for the rows of ``V`` and the columns of ``W`` (``W_hat[d, r]`` is the
    DFT of ``W[:, d]``). ``U, V: (D, P)``, ``W: (P, D)``; a mismatch raises ``ConfigError`` naming the argument.
    """
    U, V, Wt = _weights(U_DxP, V_DxP, W_PxD)
    return np.fft.fft(U, axis=1), np.fft.fft(V, axis=1), np.fft.fft(Wt, axis=1)


def fold_frequencies(spectrum_DxP: Any) -> tuple[np.ndarray, np.ndarray]:
    """Power per mode with ``r`` and ``P - r`` identified: ``(power (D, R), frequencies (R,))``.

    ``frequencies = 1..floor(P/2)``, so ``R = (P - 1) // 2`` for odd P and ``P / 2`` for even P.
    ``power[d, j] = |s_r|^2 + |s_{P-r}|^2`` for ``r = frequencies[j] < P / 2``; for even P the Nyquist column
    (``r = P / 2``) is ``|s_{P/2}|^2`` alone. The constant term ``s_0`` is dropped, so ``power.sum(1)`` is the
    total nonzero-frequency power ``sum_{k >= 1} |s_k|^2``.
    """
    s = _spectrum(spectrum_DxP, "spectrum_DxP")
    P = s.shape[1]
    r = np.arange(1, P // 2 + 1)
    mag2 = np.abs(s) ** 2
    power = mag2[:, r] + mag2[:, P - r]
    if P % 2 == 0:
        power[:, -1] = mag2[:, P // 2]
    return power, r


def dominant_frequency(spectrum_DxP: Any) -> np.ndarray:
    """(D,) int in ``1..floor(P/2)``: ``tau(u) = argmax_{k != 0} |u_k|`` with ``k`` and ``P - k`` identified,
    i.e. the argmax of the folded power (:func:`fold_frequencies`); ties go to the lowest frequency."""
    power, r = fold_frequencies(spectrum_DxP)
    return r[np.argmax(power, axis=1)]


def sparsity(spectrum_DxP: Any, frequency: Any = None) -> np.ndarray:
    """(D,) in [0, 1]: the share of a unit's nonzero-frequency power in its dominant mode.

    ``rho(u) = 2 |u_tau|^2 / sum_{k >= 1} |u_k|^2`` (MODADD section 4), computed as the folded power at ``tau``
    over the total nonzero-frequency power; for a real signal and odd P the two are identical (``|u_tau|^2 =
    |u_{P-tau}|^2``). For even P the Nyquist mode counts once (the factor 2 would give it 2 for ``(-1)^x``).
    A pure cosine at any frequency gives 1; a unit with no nonzero-frequency power (zero or constant) gives 0.
    ``frequency`` ((D,) ints in ``1..floor(P/2)``) evaluates the share at given frequencies instead of at
    ``tau`` (e.g. at a predicted one). For Gaussian white noise and odd P the folded powers are i.i.d.
    exponential, so the share at a fixed frequency has mean ``2 / (P - 1)`` exactly, and ``rho`` itself (at
    the argmax) has mean ``H_n / n`` with ``n = (P - 1) / 2`` and ``H_n`` the harmonic number.
    """
    s = _spectrum(spectrum_DxP, "spectrum_DxP")
    power, r = fold_frequencies(s)
    if frequency is None:
        at = power.max(axis=1)
    else:
        f = _frequencies(frequency, s.shape[0], int(r[-1]))
        at = power[np.arange(len(f)), f - 1]
    nonzero = power.sum(axis=1)
    return _share(at, nonzero, nonzero + np.abs(s[:, 0]) ** 2)


def _wrap(phase: np.ndarray) -> np.ndarray:
    """Angles wrapped to (-pi, pi]."""
    return np.pi - np.mod(np.pi - phase, 2 * np.pi)


def _alignment(U_hat: np.ndarray, V_hat: np.ndarray, W_hat: np.ndarray, frequency: np.ndarray) -> np.ndarray:
    d = np.arange(U_hat.shape[0])
    return _wrap(np.angle(U_hat[d, frequency]) + np.angle(V_hat[d, frequency]) - np.angle(W_hat[d, frequency]))


def phase_alignment(U_DxP: Any, V_DxP: Any, W_PxD: Any, frequency: Any = None) -> np.ndarray:
    """(D,) phase ``arg u_r + arg v_r - arg w_r`` wrapped to (-pi, pi], read at each unit's ``r``.

    ``r`` is the dominant frequency of the unit's ``U`` row (:func:`dominant_frequency`) unless ``frequency``
    ((D,) ints in ``1..floor(P/2)``) is given. The phases are read at ``r``, never at ``P - r`` (there every
    phase flips sign): with the DFT convention of :func:`unit_spectra`, a unit ``u_x = cos(2 pi r x/P + alpha)``,
    ``v_y = cos(2 pi r y/P + beta)``, ``w_z = cos(2 pi r z/P + gamma)`` gets ``alpha + beta - gamma``, and the
    alignment condition of MODADD section 4 is that this is 0 (then the unit's logit term
    ``cos(2 pi r (a + b - z)/P)`` peaks at ``z = a + b``). A zero coefficient has phase 0 (``numpy.angle``).
    """
    U_hat, V_hat, W_hat = unit_spectra(U_DxP, V_DxP, W_PxD)
    D, P = U_hat.shape
    r = dominant_frequency(U_hat) if frequency is None else _frequencies(frequency, D, P // 2)
    return _alignment(U_hat, V_hat, W_hat, r)


def mean_resultant_length(phases: Any) -> float:
    """``|mean_d exp(i phase_d)|`` in [0, 1] for a 1-D array of angles: 1 when all are equal, near 0 when they
    are spread uniformly (about ``1 / sqrt(n)`` for n random phases); nan for an empty array."""
    p = np.asarray(phases, dtype=np.float64)
    require(p.ndim == 1, "phases", f"must be a 1-D array, got shape {p.shape}")
    return float(np.abs(np.mean(np.exp(1j * p)))) if p.size else float("nan")


# ---------------------------------------------------------------------------
# Walsh-Hadamard (XOR)
# ---------------------------------------------------------------------------


def walsh_hadamard_spectra(U_DxP: Any, V_DxP: Any, W_PxD: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unnormalised Walsh-Hadamard transforms of every unit's ``(u, v, w)``: three float64 ``(D, P)`` arrays.

    ``U_wh[d, k] = sum_x U[d, x] (-1)^popcount(k & x)``: the Sylvester-ordered ``scipy.linalg.hadamard(P)``,
    whose entry ``[k, x]`` is exactly ``(-1)^popcount(k & x)``. ``W_wh[d]`` transforms the column ``W[:, d]``.
    ``P`` must be a power of two (the XOR task); shapes as in :func:`unit_spectra`.
    """
    U, V, Wt = _weights(U_DxP, V_DxP, W_PxD)
    _require_power_of_two(U.shape[1], "U")
    H = hadamard(U.shape[1]).astype(np.float64)   # symmetric, so x @ H transforms each row
    return U @ H, V @ H, Wt @ H


def dominant_walsh_index(spectrum_DxP: Any) -> np.ndarray:
    """(D,) int in ``1..P-1``: ``argmax_{k != 0} |u_k|`` of a Walsh spectrum (no folding: Walsh modes are real
    and each stands alone); ties go to the lowest index."""
    s = _spectrum(spectrum_DxP, "spectrum_DxP")
    _require_power_of_two(s.shape[1], "spectrum_DxP")
    return 1 + np.argmax(np.abs(s[:, 1:]), axis=1)


def walsh_sparsity(spectrum_DxP: Any, index: Any = None) -> np.ndarray:
    """(D,) in [0, 1]: ``|u_tau|^2 / sum_{k >= 1} |u_k|^2`` of a Walsh spectrum, ``tau`` its dominant index.

    No factor 2 (unlike :func:`sparsity`): a Walsh mode is real and has no ``P - k`` partner, so a pure Walsh
    function ``(-1)^popcount(k & x)`` gives exactly 1. ``index`` ((D,) ints in ``1..P-1``) evaluates the share
    at given indices instead; a unit with no power at ``k >= 1`` (zero or constant) gives 0.
    """
    s = _spectrum(spectrum_DxP, "spectrum_DxP")
    _require_power_of_two(s.shape[1], "spectrum_DxP")
    mag2 = np.abs(s) ** 2
    if index is None:
        at = mag2[:, 1:].max(axis=1)
    else:
        k = _frequencies(index, s.shape[0], s.shape[1] - 1, "index")
        at = mag2[np.arange(len(k)), k]
    nonzero = mag2[:, 1:].sum(axis=1)
    return _share(at, nonzero, nonzero + mag2[:, 0])


# ---------------------------------------------------------------------------
# per-unit summaries
# ---------------------------------------------------------------------------


def _basis(basis: str) -> str:
    require(basis in BASES, "basis", f"must be one of {', '.join(BASES)}, got {basis!r}")
    return basis


def _spectra_and_taus(U: Any, V: Any, W: Any, basis: str):
    if _basis(basis) == "fourier":
        spectra = unit_spectra(U, V, W)
        return spectra, [dominant_frequency(s) for s in spectra]
    spectra = walsh_hadamard_spectra(U, V, W)
    return spectra, [dominant_walsh_index(s) for s in spectra]


def frequency_matching(U_DxP: Any, V_DxP: Any, W_PxD: Any, basis: str = "fourier") -> dict[str, Any]:
    """Whether each unit's three signals share one dominant frequency (``tau(U_d) = tau(V_d) = tau(W^d)``).

    Returns ``tau_U``, ``tau_V``, ``tau_W`` ((D,) int: :func:`dominant_frequency`, or
    :func:`dominant_walsh_index` for ``basis="walsh"``), ``matched`` ((D,) bool) and ``matched_fraction``
    (float, the mean of ``matched``).
    """
    _, (tu, tv, tw) = _spectra_and_taus(U_DxP, V_DxP, W_PxD, basis)
    matched = (tu == tv) & (tv == tw)
    return {"tau_U": tu, "tau_V": tv, "tau_W": tw, "matched": matched, "matched_fraction": float(matched.mean())}


def unit_diagnostics(U_DxP: Any, V_DxP: Any, W_PxD: Any, basis: str = "fourier",
                     sparsity_threshold: float = 0.7) -> dict[str, Any]:
    """Every section-4 diagnostic for each of the D hidden units, and their summaries.

    Per unit ((D,) arrays): ``tau_U``, ``tau_V``, ``tau_W`` (dominant frequency, or Walsh index for
    ``basis="walsh"``), ``sparsity_U``, ``sparsity_V``, ``sparsity_W`` (:func:`sparsity` or
    :func:`walsh_sparsity`), ``matched`` (the three taus agree), ``high_sparsity`` (all three sparsities
    ``> sparsity_threshold``; MODADD reads "high" as ``rho > 0.7``) and, for Fourier only, ``phase``
    (:func:`phase_alignment` at ``tau_U``). Scalars: ``basis``, ``units`` (D), ``matched_fraction``,
    ``high_sparsity_fraction`` and, for Fourier only, ``phase_coherence`` (:func:`mean_resultant_length` of
    ``phase`` over the matched units; nan when none match).
    """
    threshold = require_float(sparsity_threshold, "sparsity_threshold", minimum=0.0, maximum=1.0)
    spectra, (tu, tv, tw) = _spectra_and_taus(U_DxP, V_DxP, W_PxD, basis)
    rho = sparsity if basis == "fourier" else walsh_sparsity
    sU, sV, sW = (rho(s) for s in spectra)
    matched = (tu == tv) & (tv == tw)
    high = (sU > threshold) & (sV > threshold) & (sW > threshold)
    out: dict[str, Any] = {"basis": basis, "units": int(len(tu)), "tau_U": tu, "tau_V": tv, "tau_W": tw,
                           "sparsity_U": sU, "sparsity_V": sV, "sparsity_W": sW, "matched": matched,
                           "high_sparsity": high, "matched_fraction": float(matched.mean()),
                           "high_sparsity_fraction": float(high.mean())}
    if basis == "fourier":
        phase = _alignment(*spectra, tu)
        out["phase"] = phase
        out["phase_coherence"] = mean_resultant_length(phase[matched])
    return out


def summarise_units(diag: dict[str, Any]) -> dict[str, float | None]:
    """The JSON-ready scalars of a :func:`unit_diagnostics` result: ``units`` (int), ``matched_fraction``,
    ``high_sparsity_fraction`` and (Fourier) ``phase_coherence``, as plain floats; an undefined value (nan:
    no matched unit) becomes None, so ``json.dumps(..., allow_nan=False)`` accepts it."""
    out: dict[str, float | None] = {"units": int(diag["units"])}
    for key in ("matched_fraction", "high_sparsity_fraction", "phase_coherence"):
        if key in diag:
            value = float(diag[key])
            out[key] = value if np.isfinite(value) else None
    return out


def pooled_unit_diagnostics(final_params: dict[str, np.ndarray], sparsity_threshold: float = 0.7) -> dict[str, Any]:
    """:func:`unit_diagnostics` of the units of several networks pooled (``final_params``: U, V (I, D, P), W
    (I, P, D) for I networks), plus ``norm``: (I * D,) each unit's triple norm ``sqrt(|U_d|^2 + |V_d|^2 + |W^d|^2)``."""
    U = final_params["U"].reshape(-1, final_params["U"].shape[-1])
    V = final_params["V"].reshape(-1, final_params["V"].shape[-1])
    W = np.concatenate(list(final_params["W"]), axis=1)
    diag = unit_diagnostics(U, V, W, sparsity_threshold=sparsity_threshold)
    diag["norm"] = np.sqrt(np.sum(U**2, 1) + np.sum(V**2, 1) + np.sum(W**2, 0))
    return diag


def trained_unit_structure(final_params: dict[str, np.ndarray], valid: Any, threshold: float = 0.7
                           ) -> dict[str, Any]:
    """Frequency matching, sparsity and phase alignment of trained units (all, and those in the bool mask ``valid``
    over the pooled units), with the phase coherence uniform random phases would give (the null,
    ``sqrt(pi / (4 n))``) and 1 (the ceiling). ``final_params`` as :func:`pooled_unit_diagnostics`."""
    diag = pooled_unit_diagnostics(final_params, threshold)
    out: dict[str, Any] = {"all": summarise_units(diag)}
    valid = np.asarray(valid, bool)
    matched_valid = diag["matched"] & valid
    out["valid"] = {"units": int(valid.sum()),
                    "matched_fraction": float(diag["matched"][valid].mean()) if valid.any() else None,
                    "phase_coherence": (float(mean_resultant_length(diag["phase"][matched_valid]))
                                        if matched_valid.any() else None)}
    n = int(diag["matched"].sum())
    # E|mean of n uniform unit phasors| ~ sqrt(pi / (4 n)) (Rayleigh); the ceiling is 1 (all phases equal).
    out["phase_coherence_null"] = float(np.sqrt(np.pi / (4 * n))) if n else None
    out["phase_coherence_ceiling"] = 1.0
    return out


def frequency_agreement(predicted: Any, observed: Any, mask: Any, classes: int,
                        confidence: float = 0.95) -> dict[str, Any]:
    """How often a per-unit frequency prediction equals the observed one, over the units in ``mask``.

    Args: predicted, observed: (n,) ints in 1..classes (0 = no prediction / no outcome, counted as a miss);
    mask: (n,) bool, the units scored; classes: the number of frequency classes R.

    Returns ``hits``, ``n``, ``agreement`` (hits / n, nan if n = 0), its Clopper-Pearson interval ``ci_low``,
    ``ci_high`` at ``confidence``, and ``chance_marginal = sum_r p_pred(r) p_obs(r)``: the expected agreement of
    independent guesses with the same marginals as the prediction and the outcome (the null a predictor must
    beat; ``1 / classes`` is the uniform guess), and ``ceiling`` = 1: every unit has exactly one observed
    frequency (ties in the power go to the lowest frequency), so a perfect predictor scores 1.
    """
    from scipy.stats import binomtest

    predicted, observed = np.asarray(predicted, int), np.asarray(observed, int)
    mask = np.asarray(mask, bool)
    require(predicted.shape == observed.shape == mask.shape and predicted.ndim == 1, "predicted",
            f"predicted, observed and mask must be 1-D of one length, got {predicted.shape}, {observed.shape}, "
            f"{mask.shape}")
    require(isinstance(classes, (int, np.integer)) and classes >= 1, "classes", f"must be >= 1, got {classes!r}")
    p, o = predicted[mask], observed[mask]
    n, hits = int(mask.sum()), int(np.sum((p == o) & (p > 0)))
    if n == 0:
        return {"hits": 0, "n": 0, "agreement": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
                "chance_marginal": float("nan"), "ceiling": 1.0}
    ci = binomtest(hits, n).proportion_ci(confidence_level=confidence, method="exact")
    bins = np.arange(1, classes + 1)
    chance = float(np.sum([np.mean(p == r) * np.mean(o == r) for r in bins]))
    return {"hits": hits, "n": n, "agreement": hits / n, "ci_low": float(ci.low), "ci_high": float(ci.high),
            "chance_marginal": chance, "ceiling": 1.0}
