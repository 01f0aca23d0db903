"""The FFN's small-initialisation theory (issue 12): derivation, fields against jax.grad, the joint-signature
form of the second-order term, and the comparison with full-batch gradient descent (``simulate ffn --optimizer gd``)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from probsig_jax import simulate
from probsig_jax.data import PRESETS, make_composite_addition
from probsig_jax.models.ffn import FeedForwardModel
from probsig_jax.numerics import numerics
from probsig_jax.theory import ffn as T
from probsig_jax.theory import ffn_derivation as FD
from probsig_jax.validation import ConfigError


@pytest.fixture(scope="module")
def simple_task():
    return make_composite_addition(PRESETS["simple"]).train


def _params(ds, hidden, activation, eps, dtype, seed=0):
    return FeedForwardModel(ds.vocab_size, 16, seq_len=ds.seq_len, hidden=hidden, activation=activation,
                            init_scale=eps, init_convention="absolute", bias=False, dtype=dtype,
                            rngs=nnx.Rngs(seed)).weight_tree()


def test_activation_coefficients_match_autodiff():
    """sympy's Taylor coefficients against JAX derivatives of the model's own activations at 0."""
    from probsig_jax.models.ffn import ACTIVATIONS
    with numerics("float64"):
        for name in FD.ACTIVATION_EXPRESSIONS:
            c1, c2, c3 = (float(c) for c in FD.activation_coefficients(name))
            f = ACTIVATIONS[name]
            d1, d2, d3 = jax.grad(f), jax.grad(jax.grad(f)), jax.grad(jax.grad(jax.grad(f)))
            np.testing.assert_allclose([d1(0.0), d2(0.0), d3(0.0)], [c1, c2, c3], atol=1e-12)
    with pytest.raises(ConfigError, match="activation"):
        FD.activation_coefficients("relu")


def test_symbolic_checks_pass():
    checks = FD.verify_ffn_flow()
    assert all(checks.values()) and len(checks) >= 12
    assert FD.derive_ffn_flow(1).field_orders == {"leading": 2, "second_order": 4, "third_order": 6, "softmax": 5}


@pytest.mark.parametrize("hidden,activation,leading_ratio,second_ratio", [
    ((32,), "gelu", 4.0, 8.0),        # c2 != 0: leading misses O(eps^2) relative, + curvature leaves softmax O(eps^3)
    ((24, 24), "gelu", 4.0, 16.0),    # two layers: the softmax term is O(eps^4) relative
    ((32,), "tanh", 8.0, 8.0),        # c2 = 0: the leading field already misses only the softmax term
])
def test_field_residual_scales_as_derived(simple_task, hidden, activation, leading_ratio, second_ratio):
    """Truncated fields vs jax.grad of the real loss: the residual ratio when eps halves (4 = O(eps^2), ...)."""
    with numerics("float64") as dt:
        th = T.FFNTheory.from_dataset(simple_task, activation=activation, depth=len(hidden))
        r = {eps: T.field_residuals(th, _params(simple_task, hidden, activation, eps, dt)) for eps in (0.01, 0.005)}
    for order, expected in (("leading", leading_ratio), ("second_order", second_ratio)):
        ratio = r[0.01][order] / r[0.005][order]
        assert abs(ratio / expected - 1) < 0.1, (order, ratio, r)
    assert r[0.005]["second_order"] <= r[0.005]["leading"] * (1 + 1e-9)


def test_second_order_term_is_the_joint_signature_contraction(simple_task):
    """The sample form of Phi_2 equals the contraction with T = f_s J_s (I - u 1 1^T), and T equals the raw
    moment E[c_s c_r (1{Y=y} - u)] computed directly from the rows."""
    with numerics("float64") as dt:
        th = T.FFNTheory.from_dataset(simple_task, activation="gelu", depth=2)
        p = _params(simple_task, (8, 8), "gelu", 0.3, dt)
        tensor = T.joint_moment_tensor(simple_task)
        w = simple_task.sample_weights() / simple_task.sample_weights().sum()
        V = simple_task.vocab_size
        direct = np.zeros_like(tensor)
        for x, y, wi in zip(simple_task.inputs, simple_task.labels, w):
            c = np.bincount(x, minlength=V).astype(float)
            direct += wi * np.einsum("s,r,y->sry", c, c, np.eye(V)[y] - 1.0 / V)
        np.testing.assert_allclose(tensor, direct, atol=1e-14)
        a = float(T.second_order_potential(th, p))
        b = float(T.second_order_potential_from_joint(tensor, p, th.c1, th.c2, 2))
        assert a != 0 and abs(a - b) <= 1e-12 * abs(a)


def test_leading_field_is_the_gradient_of_the_signature_potential(simple_task):
    """The lambdified matrix-calculus field equals jax.grad of c1^k tr(M^T U W_k^T ... W_1^T E)."""
    with numerics("float64") as dt:
        for hidden in ((8,), (8, 6)):
            th = T.FFNTheory.from_dataset(simple_task, activation="gelu", depth=len(hidden))
            p = _params(simple_task, hidden, "gelu", 0.5, dt)
            grad = jax.grad(lambda q: jnp.sum(th.M * T.end_to_end_map(q, th.c1)))(p)
            field = T.leading_field(th, p)
            for a, b in zip(jax.tree.leaves(field), jax.tree.leaves(grad)):
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_predicted_escape_is_a_power_law_of_the_init_scale(simple_task):
    """The leading flow is homogeneous: kappa = t* c1 sigma_1 eps is the same for eps and eps / 10 when the
    threshold scales like the end-to-end map (eps^3), and an init already above the threshold gives t* = 0."""
    with numerics("float64") as dt:
        th = T.FFNTheory.from_dataset(simple_task, activation="gelu", depth=1)
        params = {e: _params(simple_task, (32,), "gelu", e, dt) for e in (1e-3, 1e-4)}
        kappas = [T.escape_law_constant(th, T.predicted_escape_time(th, params[e], 1e6 * e**3), e) for e in params]
        start = float(T.top_end_to_end_value(params[1e-3], th.c1))
        assert T.predicted_escape_time(th, params[1e-3], 0.5 * start) == 0.0
    assert kappas[0] > 0
    np.testing.assert_allclose(kappas[0], kappas[1], rtol=1e-4)


def test_integrate_compiles_once_per_shape(simple_task, monkeypatch):
    """The vector field is traced only on the first solve: a second initialisation and horizon of the same task
    shape (and a second escape-time solve) reuse the compiled solve. Python-level calls of ``leading_field``
    happen only while tracing, so counting them counts compilations."""
    traced = []
    original = T.leading_field
    monkeypatch.setattr(T, "leading_field", lambda th, p: traced.append(1) or original(th, p))
    with numerics("float64") as dt:
        th = T.FFNTheory.from_dataset(simple_task, activation="gelu", depth=1)
        first, second = (_params(simple_task, (8,), "gelu", 1e-2, dt, seed=s) for s in (11, 12))
        T.integrate(th, first, np.linspace(0.0, 50.0, 6), order="leading", stop_above=10.0)
        T.predicted_escape_time(th, first)
        after_first = len(traced)
        end = T.integrate(th, second, np.linspace(0.0, 80.0, 6), order="leading", stop_above=10.0)
        T.predicted_escape_time(th, second)
    assert after_first > 0
    assert len(traced) == after_first, "a second solve of the same shape traced the field again"
    assert np.isfinite(end["E"]).all() and not np.allclose(end["E"][-1], end["E"][0])


@pytest.fixture(scope="module")
def gd_run(tmp_path_factory):
    """The default comparison with a coarser sweep step (5 scales over 3.1 decades) and a larger GD step. The sweep
    ends at 7e-2: at 1e-1 the linear model's initial |U E| is already 1.03, past the escape threshold 1."""
    out = tmp_path_factory.mktemp("runs") / "ffn-gd"
    argv = ["ffn", "--optimizer", "gd", "--sweep-scales", "5e-5,3e-4,1e-3,1e-2,7e-2", "--learning-rate", "2",
            "--records", "200", "--permutations", "199", "--bootstrap", "200", "--out", str(out), "--quiet"]
    assert simulate.main(argv) == 0
    return out


@pytest.mark.slow
def test_gd_comparison_writes_everything(gd_run):
    names = {p.name for p in gd_run.iterdir()}
    assert {"trajectory_error.png", "escape_time_law.png", "gradient_cosine.png", "key_similarity_heatmaps.png",
            "metrics.json", "report.md", "config.json", "arrays.npz"} <= names
    assert json.loads((gd_run / "config.json").read_text())["command"] == "ffn-theory"


@pytest.mark.slow
def test_gd_comparison_meets_the_issue(gd_run):
    m = json.loads((gd_run / "metrics.json").read_text())
    tr = m["trajectory"]
    # Leading-order flow within 2 % of GD until the embedding has grown 3x (and it did grow that far).
    assert tr["growth_reached"] >= 3.0
    assert tr["leading vs GD"]["max_rel_err_to_growth_3x"] < 0.02
    # The curvature (joint-signature) term reduces the truncation error (against the integrated exact flow).
    # Against GD it does not show at eps = 1e-3: the Euler error O(lr) of GD (the 'exact vs GD' row, measured
    # 0.6 % at growth 3x with lr 1) is ~100x the truncation error, so the test asserts only that it is no worse
    # than the leading order by more than 1 % of that error.
    lead, second = (tr[f"{o} vs exact flow"]["max_rel_err_to_growth_3x"] for o in ("leading", "second_order"))
    assert second < 0.5 * lead, (lead, second)
    euler = tr["exact vs GD"]["max_rel_err_to_growth_3x"]
    assert tr["second_order vs GD"]["max_rel_err_to_growth_3x"] < tr["leading vs GD"]["max_rel_err_to_growth_3x"] \
        + 0.01 * euler
    sweep = m["escape_sweep"]
    assert len(sweep["rows"]) == 5 and sweep["rows_started_past_threshold"] == {"ffn": 0, "linear": 0}
    assert abs(sweep["ffn_exponent"]["deviation"]) < 0.15, sweep["ffn_exponent"]
    assert sweep["linear_max_relative_deviation"] < 0.10, sweep["rows"]
    # The closed form from the run's own initialisation (measured 3-6 % late over seeds 0-2: the linearised flow
    # ignores the softmax's saturation near the threshold).
    assert sweep["linear_max_relative_deviation_from_init"] < 0.10, sweep["rows"]
    cos = m["gradient_cosine"]
    assert cos["leading"]["initial"]["overall"] > 0.99 and cos["second_order"]["initial"]["overall"] > 0.99


def test_relu_with_gd_theory_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    code = simulate.main(["ffn", "--optimizer", "gd", "--activation", "relu", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "activation" in err and "smooth" in err, err
    assert not out.exists()


def test_power_law_fit_recovers_a_known_exponent_with_an_honest_interval():
    from probsig_jax.analysis.trajectories import fit_power_law
    eps = np.array([1e-4, 1e-3, 1e-2, 1e-1])
    exact = fit_power_law(eps, 3.0 * eps**-1.0)
    assert exact["exponent"] == pytest.approx(-1.0, abs=1e-12) and exact["points"] == 4
    noisy = fit_power_law(eps, 3.0 * eps**-1.0 * np.array([1.1, 0.9, 1.05, 0.95]))
    assert noisy["ci_low"] < noisy["exponent"] < noisy["ci_high"] and noisy["ci_high"] - noisy["ci_low"] > 0.01
    # An escape that could not be measured (time 0 or NaN) drops out of the fit instead of breaking it.
    assert fit_power_law(eps, [np.nan, 0.0, 1.0, 2.0])["points"] == 2
