# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · The linear model's gradient flow: derivation, closed form, plateau and escape
#
# This notebook is the analytic core of the probability-signature theory (PAPER sections 4 and 8, E1),
# read top to bottom:
#
# 1. **the derivation** – sympy builds the gradient of the softmax cross-entropy of the linear model
#    `logits = U E c(x)`, linearises the gradient flow around a small initialisation, solves it in closed
#    form through the SVD of the *signature matrix* `M`, and derives the expected embedding Gram and the
#    escape time (`probsig_jax.theory.derivation`);
# 2. **the closed form vs the exact flow vs gradient descent** on the `simple` composite addition task:
#    the plateau, the escape, and where the linearisation stops applying;
# 3. **key-embedding similarity vs signature similarity**: the prediction the theory makes from the
#    data alone, and why it is reported at embedding growth 2x.
#
# Everything is computed by the package; this notebook only calls it and plots. It runs on a CPU in well
# under a minute (float64 throughout). `python -m probsig_jax.simulate linear` produces the same E1 run
# as a run directory with figures and `report.md`.

# %%
import time
import warnings

import jax
import matplotlib.pyplot as plt
import numpy as np
import sympy as sp
from IPython.display import Markdown, Math, display

jax.config.update("jax_enable_x64", True)   # theory vs training is compared in float64
warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm without ipywidgets; progress is off anyway

from probsig_jax.analysis import plots
from probsig_jax.analysis.alignment import similarity_from_gram
from probsig_jax.analysis.metrics import offdiagonal, pearson
from probsig_jax.analysis.trajectories import product_singular_values
from probsig_jax.data import make_composite_addition
from probsig_jax.experiments.linear import LinearExperimentConfig, run_linear_theory
from probsig_jax.experiments.report import metrics_table
from probsig_jax.numerics import numerics
from probsig_jax.signatures import signature_matrix
from probsig_jax.theory import derivation as D
from probsig_jax.theory import linear as theory
from probsig_jax.theory.compiled import compiled_linear_theory
from probsig_jax.theory.writeup import latex

# probsig_jax.analysis.plots (imported by the experiments) switches matplotlib to Agg; draw inline again:
# %matplotlib inline
plt.rcParams.update({"figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3})
NOTEBOOK_START = time.perf_counter()

# %% [markdown]
# ## 1. The derivation (sympy)
#
# `derive_linear_flow()` builds every expression of the theory as a sympy object and runs the cheap
# symbolic checks that tie them together (it raises if one fails). The JAX functions the simulator uses
# (`probsig_jax.theory.compiled`) are `sympy.lambdify` of these very objects, and so is the write-up
# `theory/linear_gradient_flow.md`; nothing below is retyped.
#
# **Model and gradient.** An input `x` with feature counts `c(x)` is embedded as `h = E c(x)` and read
# out as logits `z = U h`. With the gradient matrix `G = E[(e_Y - softmax(z)) c(X)^T]` the loss gradients
# and hence the (exact, nonlinear) gradient flow are:

# %%
der = D.derive_linear_flow()


def show(lhs, expr, suffix=""):
    """Display ``lhs = expr`` as LaTeX (``writeup.latex`` is ``sympy.latex`` with nicer auxiliary names)."""
    display(Math(f"{lhs} = {latex(expr)}{suffix}"))


show(r"\nabla_E L", der.loss_gradient_E)
show(r"\nabla_U L", der.loss_gradient_U)
show(r"G", der.gradient_matrix)
show(r"\frac{dE}{dt}", der.flow_E)
show(r"\frac{dU}{dt}", der.flow_U)

# %% [markdown]
# **Linearisation.** From an initialisation of scale `eps` the logits are `O(eps^2)`, so the softmax is
# close to uniform (`u = 1/V`). To first order in the centred logits `w_j = z_j - mean(z)`:

# %%
show(r"\mathrm{softmax}(z)_j", der.softmax_first_order)
show(r"G", der.next_order_gradient_matrix, r"\quad\text{(next order; } X = U E \Sigma_c\text{)}")

# %% [markdown]
# At leading order `G` is the **signature matrix** `M = E[(e_Y - u 1) c(X)^T]`: it depends on the data only,
# and the flow becomes linear, `dA/dt = M^T B`, `dB/dt = M A` with `A = E^T`, `B = U`. Column `s` of `M`
# is `f_s (Q_s - u 1)`, the frequency-weighted, centred label distribution (signature) of feature `s`.
#
# **Closed form.** In the SVD `M = P S Q^T` each singular value `sigma` couples one pair of mode coordinates
# `(a, b) = (q^T A, p^T B)` through a 2x2 generator whose exponential sympy computes:

# %%
show("K", der.mode_generator)
show(r"e^{K t}", der.mode_propagator)
show("a(t)", der.mode_update_a)
show("b(t)", der.mode_update_b)
show("A(t)", der.closed_form_A)
show("B(t)", der.closed_form_B)
display(Markdown(r"with $C_h = \mathrm{diag}_k \cosh(\sigma_k t)$, $S_h = \mathrm{diag}_k \sinh(\sigma_k t)$."))

# %% [markdown]
# **Expected Gram and escape time.** For i.i.d. `N(0, eps^2)` initial entries the cross terms average out.
# Per mode, the embedding's second moment and the growth amplitude of the logit map `U E` are:

# %%
sig, t_sym, a0_sym, b0_sym = der.mode_scalars
show(r"\mathbb{E}[a(t)^2]", der.expected_mode_gram)
show(r"\frac{\mathbb{E}[a(t)^2]}{\epsilon^2}", der.expected_mode_gram_series, r" + O(t^4)")
show(r"\mathbb{E}[a(t)\cdot b(t)]", der.expected_product_amplitude)
show("t^*", der.escape_time)
t2_coefficient = sp.Poly(der.expected_mode_gram_series, t_sym).coeff_monomial(t_sym**2)
display(Markdown(
    rf"So $\mathbb{{E}}[E^T E] = \epsilon^2 d\,[I + Q(\cosh 2St - I)Q^T] \approx \epsilon^2 d\,(I + "
    rf"{latex(sp.simplify(t2_coefficient / sig**2))}\,t^2 M^T M)$ early on: off-diagonal embedding similarity "
    r"follows $M^T M$, i.e. signature similarity. The escape time $t^*$ is when the leading mode's amplitude "
    r"reaches $\theta$ (the plateau lasts $\sim \log(1/\epsilon)/\sigma_1$)."))

# %% [markdown]
# **Checks.** `derive_linear_flow` ran the cheap checks above; `verify_linear_flow` adds the expensive ones
# (entry-by-entry `sympy.diff` of the loss of an explicit model, the softmax series for V = 2, 3, 4, and the
# assembled closed form substituted into the ODE). It takes about 10-15 s on a laptop CPU, once.

# %%
tic = time.perf_counter()
checks = D.verify_linear_flow()
cheap = set(der.checks)
rows = ["| # | check | run by | result |", "|---|---|---|---|"]
for i, (name, ok) in enumerate(checks.items(), start=1):
    by = "derive_linear_flow" if name in cheap else "verify_linear_flow"
    rows.append(f"| {i} | `{name.replace('|', '/')}` | {by} | {'passed' if ok else '**FAILED**'} |")
display(Markdown("\n".join(rows)))
print(f"{sum(checks.values())} of {len(checks)} checks passed in {time.perf_counter() - tic:.1f} s")
assert all(checks.values())

# %% [markdown]
# ## 2. The task and its signature matrix
#
# E1's default task is the `simple` composite addition task: an input is a key `z` in 20..59 followed by one
# anchor `a` in 1..4 meaning `+1..+4`; the label is `z + shift(a)`; vocabulary 64. Every distinct input is one
# weighted row (the exact distribution). The width is `d = 256`, the initial scale `eps = 1e-4`, gradient
# descent runs 6000 steps at learning rate 0.05 (flow time `t = steps x lr = 300`). These are the defaults
# of `LinearExperimentConfig`, i.e. exactly `python -m probsig_jax.simulate linear`.

# %%
config = LinearExperimentConfig().resolved()     # data from the "simple" preset, seeded with config.seed
task = make_composite_addition(config.data)
M = signature_matrix(task.train)
modes = theory.signature_modes(M)
t_escape = theory.escape_time(M, config.init_scale, config.dim, config.escape_threshold)
print(f"{task.train.num_samples} rows, V = {task.train.vocab_size}, keys {task.keys[0]}..{task.keys[-1]}, "
      f"anchors {task.anchors}")
print(f"rank of M: {len(modes.S)}; leading singular values: {np.round(np.asarray(modes.S[:6]), 4)}")
print(f"predicted escape time t* = {t_escape:.1f} (step {t_escape / config.train.learning_rate:.0f})")

# %% [markdown]
# ## 3. Closed form vs integrated flow vs gradient descent
#
# `run_linear_theory` trains the linear model by full-batch gradient descent, integrates the exact gradient
# flow with diffrax (Tsit5, rtol 1e-10) from the *same* initialisation, and evaluates the closed form of the
# linearised flow at every recorded time (about 10 s on a laptop CPU).

# %%
tic = time.perf_counter()
result = run_linear_theory(config, quiet=True)
print(f"E1 ran in {time.perf_counter() - tic:.1f} s")
m = result.metrics
times = result.times
display(Markdown("\n".join(
    line for line in metrics_table(m).splitlines()
    if not line.startswith(("| alignment_over_time", "| timings", "| singular_values"))
    and ".k |" not in line and ".q |" not in line and ".num_tokens |" not in line
    and ".chance_precision |" not in line)))

# %% [markdown]
# **The plateau and the escape.** The loss sits at `log V` while the weights grow exponentially but are still
# tiny; once the leading mode's amplitude reaches `theta = 1` (the predicted escape time, dotted) the loss
# drops. Right panel:
#
# * *closed form vs integrated flow* (green) is the error of the linearisation itself: `1e-9` at the start,
#   growing with the logits, 2 % only around the escape, after which the closed form keeps growing
#   exponentially while the softmax saturates it in the real dynamics (the closed-form loss turns back up);
# * *gradient descent vs integrated flow* (blue) is the `O(lr)` discretisation error of gradient descent; it
#   stays below 1 % over the whole run, through the escape;
# * *closed form vs gradient descent* (orange) is the sum of both: the discretisation error dominates until
#   growth 5x (red dashed), where E1 reports its maximum (`closed_form_rel_err`).

# %%
esc, early_t = m["escape_time_predicted"], times[result.early_index]
fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), constrained_layout=True)
plots.plot_curves({name: (times, loss) for name, loss in result.losses.items()}, ax=axes[0], logy=False,
                  styles={"closed form (linearised)": {"ls": "--"}}, vlines={f"predicted escape t*={esc:.0f}": esc},
                  title="loss", ylim=(min(v.min() for v in result.losses.values()) - 0.05,
                                      result.losses["gradient descent"][0] + 0.05))
plots.plot_curves({name: (times[1:], err[1:]) for name, err in result.rel_err.items()}, ax=axes[1],
                  ylabel="relative error of (E, U)", title="relative error", hlines={"2 %": 0.02},
                  vlines={"predicted escape": esc, f"growth {config.early_growth:g}x (t={early_t:.0f})": early_t})
plt.show()

# %% [markdown]
# **Singular values of the logit map `U E`.** During the plateau each singular value grows like
# `eps^2 d sinh(2 sigma_k t)` (the expected growth amplitude derived above, evaluated by the lambdified sympy
# expression); the leading one crosses 1 at the escape. Gradient descent (solid) and the closed form (dashed)
# agree until then; afterwards the closed form keeps growing exponentially while training saturates.

# %%
E_gd, U_gd = result.trajectories["gd"]
E_cf, U_cf = result.trajectories["closed_form"]
amplitude = compiled_linear_theory()["expected_product_amplitude"]
pred = np.asarray(amplitude(float(modes.S[0]), times, config.init_scale, config.dim))
ax = plots.plot_singular_values(
    times, {"gradient descent": product_singular_values(E_gd, U_gd, 5), "closed form": product_singular_values(E_cf, U_cf, 5)},
    reference={r"$\epsilon^2 d \sinh(2\sigma_1 t)$": (times, pred)}, ylim=(1e-7, 1e3),
    title="singular values of U E: gradient descent (solid) vs closed form (dashed)")
ax.axhline(config.escape_threshold, color="gray", lw=0.8)
ax.axvline(esc, color="k", ls=":", lw=0.8)
plt.show()
print(f"escape time predicted {m['escape_time_predicted']:.1f}, measured {m['escape_time_measured']:.1f}")

# %%
# The claims above, as checks (loose tolerances; the measured values are printed in the table).
assert m["closed_form_rel_err"] < 0.02, "closed form within 2 % of gradient descent through growth 5x"
assert m["flow_rel_err"] < 0.02, "gradient descent within 2 % of the integrated flow over the whole run"
assert abs(m["escape_time_measured"] / m["escape_time_predicted"] - 1) < 0.05, "escape time within 5 %"
assert m["final_loss"] < m["initial_loss"] - 0.3, "the run escapes the plateau"

# %% [markdown]
# ## 4. Key-embedding similarity vs signature similarity
#
# The theory's prediction that needs no training: the cosine similarity of two key embeddings follows the
# cosine similarity of their columns of `M` (their signatures). Keys `z` and `z'` share labels iff
# `|z - z'| <= 3`, so the signature similarity is a band. The heatmaps show it beside the key-embedding
# similarity measured on gradient descent at three times, and the theory's own expected Gram
# (`predicted_embedding_gram`, the `d -> infinity` limit of the closed form) at growth 2x.

# %%
keys = result.keys
V = task.train.vocab_size
i2, i5 = result.alignment_index, result.early_index
growth = result.growth
S_sig = result.signature_sim


def expected_similarity(t):
    """Key similarity of the theory's expected embedding Gram at flow time t."""
    with numerics("float64"):
        gram = np.asarray(theory.predicted_embedding_gram(M, float(t), config.init_scale, config.dim, modes=modes))
    return similarity_from_gram(gram, keys)


panels = {
    f"signature ({config.alignment.similarity})": S_sig,
    f"theory: expected Gram, t={times[i2]:.0f}": expected_similarity(times[i2]),
    f"GD, t={times[i2]:.0f} (growth {growth[i2]:.1f}x)": result.key_similarity(E_gd[i2]),
    f"GD, t={times[i5]:.0f} (growth {growth[i5]:.1f}x)": result.key_similarity(E_gd[i5]),
    f"GD, t={times[-1]:.0f} (final)": result.key_similarity(E_gd[-1]),
}
plots.plot_similarity_heatmaps(panels, [str(k) for k in keys], cmap="RdBu_r", colorbar="cosine similarity")
plt.show()

# %%
S_emb2 = panels[f"GD, t={times[i2]:.0f} (growth {growth[i2]:.1f}x)"]
a = m["alignment"]
plots.plot_similarity_scatter(S_sig, S_emb2, xlabel="signature similarity (cosine of M columns)",
                              ylabel=f"key-embedding similarity, growth {growth[i2]:.1f}x",
                              title="all key pairs (off-diagonal)",
                              stats={k: a[k] for k in ("pearson", "spearman", "topk_overlap", "strong_pair_precision")})
plt.show()

# %% [markdown]
# **Why alignment is reported at growth 2x.** The expected Gram is `eps^2 d (I + 2 t^2 M^T M + O(t^4))`, and
# two things compete with the signal term `2 t^2 M^T M`:
#
# * **early**, the initialisation: a single draw of `E(0)` has off-diagonal inner products of relative size
#   `~1/sqrt(d)`, so until the signal term is comparable with the identity (growth well above 1x) the
#   similarity is mostly initialisation noise and the alignment is low (left part of the curves below);
# * **later**, the higher-order terms: each mode grows like `cosh(2 sigma_k t)`, the leading (smooth,
#   low-frequency) modes take over and the similarity becomes a *smoothed* version of the signature band (the
#   band widens, visible above at growth 5x). The theory predicts this decay itself: the dashed curve, the
#   expected Gram vs the signatures, is computed from the data alone and falls just like the measured Pearson.
#
# Growth 2x (`||E_t|| = 2 ||E_0||`) is where the signal term already dominates the initialisation but the
# leading modes have not yet taken over, so `metrics["alignment"]` is taken there (`alignment_growth = 2`), the
# closed-form accuracy window ends at `early_growth = 5`, and the whole curve is reported as well. After the
# escape the linearisation no longer applies (the dashed curve is then meaningless) and the nonlinear dynamics
# rebuild a band of their own (the final Pearson rises again).
#
# Spearman is low because most key pairs have zero signature overlap and their ranks are set by the finite-`d`
# initialisation noise (the vertical spread of the scatter above); Pearson, top-k neighbour overlap and
# strong-pair precision are the informative metrics. The gap between the measured Pearson and the theory's
# ceiling is that same finite-`d` noise (it grows as `d` shrinks).

# %%
aot = m["alignment_over_time"]
t_aot = np.asarray(aot["time"])
theory_curve = [pearson(offdiagonal(expected_similarity(t)), offdiagonal(S_sig)) if t > 0 else np.nan for t in t_aot]
curves = {f"GD: {name}": (t_aot, np.asarray(aot[name], float))
          for name in ("pearson", "spearman", "topk_overlap", "strong_pair_precision")}
curves["theory: expected Gram vs signature (Pearson)"] = (t_aot, np.asarray(theory_curve))
ax = plots.plot_curves(curves, logy=False, ylim=(-0.1, 1.02), ylabel="alignment with signature similarity",
                       styles={"theory: expected Gram vs signature (Pearson)": {"color": "k", "ls": "--"}},
                       vlines={f"growth 2x (t={times[i2]:.0f})": times[i2], f"growth 5x (t={times[i5]:.0f})": times[i5],
                               f"predicted escape (t={esc:.0f})": esc},
                       title="alignment of key-embedding similarity with signature similarity over training")
ax.figure.set_size_inches(9, 4.5)
plt.show()
print(f"Pearson at growth {growth[i2]:.1f}x: measured {m['alignment']['pearson']:.3f}, "
      f"theory ceiling {m['alignment_theory_vs_signature']['pearson']:.3f}; "
      f"at growth {growth[i5]:.1f}x: measured {m['alignment_early_phase_end']['pearson']:.3f}; "
      f"final: {m['alignment_final']['pearson']:.3f}")
assert m["alignment"]["pearson"] > m["alignment_final"]["pearson"]
assert m["alignment_theory_vs_signature"]["pearson"] > 0.9

# %% [markdown]
# ## Summary
#
# * The sympy derivation gives the closed form of the linearised flow in the SVD basis of the signature matrix,
#   and every derived identity is checked symbolically.
# * Through the plateau the closed form tracks gradient descent (relative error well under 2 %), the exact flow
#   tracks it through the escape, and the escape time `asinh(theta / (eps^2 d)) / (2 sigma_1)` is accurate to a
#   few percent.
# * Early on, key-embedding similarity follows signature similarity (the data's conditional label
#   distributions); the agreement is best at small growth and degrades, as the theory itself predicts, once
#   the leading modes dominate.
#
# Next: `02_signatures_and_interventions` edits the data distribution and predicts the change of the
# embedding geometry before training.

# %%
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.1f} s")
