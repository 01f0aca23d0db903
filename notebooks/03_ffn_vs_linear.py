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
# # 03 · Feed-forward network vs linear model, and the initialisation scale
#
# The linear model has a closed form; the feed-forward "Emb-MLP" (PAPER section 6) does not. What the
# theory still predicts for it: at small initialisation the embedding flow is, to leading order,
# `dw_s/dt ~ f_s (Q_s - u)^T W2^T W1^T` — the same label signatures as the linear model, seen through the
# hidden layers. So the FFN's key embeddings should also line up with signature similarity, and the
# agreement should fade as the initialisation grows (the random initial geometry then survives training).
#
# This notebook trains both models with the same optimiser on the `anchor4` task (keys 20..100, two
# anchors meaning +5, +1, -2, -8, filler tokens, the pair (4, 3) held out, keys = 0 mod 5 reserved for
# test) through `probsig_jax.experiments.ffn.run_ffn`, compares accuracy and alignment, and sweeps the
# initialisation scale. `python -m probsig_jax.simulate ffn --init-scale 1e-3,1e-1,1` is the same run as a
# run directory with figures and `report.md`.

# %%
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np

warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm without ipywidgets; progress is off anyway

from probsig_jax.analysis import plots
from probsig_jax.experiments.ffn import FFNExperimentConfig, run_ffn
from probsig_jax.training.supervised import TrainConfig

# probsig_jax.analysis.plots (imported by the experiments) may switch matplotlib to Agg; draw inline:
# %matplotlib inline
plt.rcParams.update({"figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3})
NOTEBOOK_START = time.perf_counter()

# %% [markdown]
# ## 1. One sweep: FFN and linear model at three initialisation scales
#
# FFN: summed embeddings (d = 64), one GELU hidden layer of 256, unembedding; every weight matrix starts at
# `init_scale / sqrt(fan_in)` times a standard normal (1 = the usual LeCun scale). The linear model uses
# `init_scale` as the standard deviation of E and U. Both: Adam, lr 2e-3, batch 512, 1000 steps (the CLI
# default is 2000; 1000 keeps this notebook fast).

# %%
config = FFNExperimentConfig(
    init_scale=(1e-3, 1e-1, 1.0),
    train=TrainConfig(optimizer="adam", learning_rate=2e-3, steps=1000, batch_size=512, record_every=50),
)
tic = time.perf_counter()
result = run_ffn(config, quiet=True)
print(f"trained {len(result.runs)} models in {time.perf_counter() - tic:.1f} s; "
      f"{result.metrics['num_train_rows']} training rows, vocabulary {result.metrics['vocab_size']}, "
      f"{len(result.keys)} key tokens in the alignment set")

rows = result.metrics["sweep"]
header = f"{'model':7} {'init':>6} {'loss':>7} {'train':>6} {'held-out':>8} {'unseen':>7} {'Pearson':>8} {'strong':>7}"
print(header)
for r in rows:
    print(f"{r['model']:7} {r['init_scale']:6g} {r['final_loss']:7.3f} {r['train_accuracy']:6.3f} "
          f"{r['test_held_out_accuracy']:8.3f} {r['test_unseen_keys_accuracy']:7.3f} "
          f"{r['alignment']['pearson']:8.3f} {r['alignment']['strong_pair_precision']:7.3f}")

# %% [markdown]
# *Accuracy.* The FFN fits the training set; the linear model (logits linear in the summed embeddings)
# cannot represent `z + s1 + s2` for every key and stalls. The held-out pair (4, 3) has the same bag of
# tokens as the trained (3, 4) and the same label `z - 10`, so with summed embeddings it is answered
# correctly wherever the key was seen in training (80 % of keys). Keys that never appear as inputs keep
# their random embeddings, and their accuracy stays near chance — the composition the anchor-function
# papers study needs those keys in training in other contexts.

# %%
by = {(r.name, r.init_scale): r for r in result.runs}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
styles = {f"{name}, init {scale:g}": {"ls": "-" if name == "ffn" else "--"} for name, scale in by}
plots.plot_curves({f"{name}, init {scale:g}": (run.steps, run.loss) for (name, scale), run in by.items()}, ax=axes[0],
                  xlabel="step", ylabel="training loss", styles=styles)
plots.plot_curves({f"{name}, init {scale:g}": (run.steps, run.accuracy["train"]) for (name, scale), run in by.items()},
                  ax=axes[1], xlabel="step", ylabel="train accuracy", logy=False, styles=styles)
plt.show()

# %% [markdown]
# ## 2. Key-embedding similarity vs signature similarity
#
# The token set is the keys seen in training, in numerical order. Signature similarity is the cosine of the
# columns of `M`: for `z + s1 + s2` the label distribution of key `z` is the distribution of `s1 + s2`
# shifted by `z`, so similarity depends on `z - z'` through the overlaps of those shifted distributions.

# %%
panels = {"signature (cosine of M columns)": result.signature_sim}
for name in ("ffn", "linear"):
    for scale in (1e-3, 1.0):
        panels[f"{name}, init {scale:g}"] = result.key_similarity(by[(name, scale)].E[-1])
plots.plot_similarity_heatmaps(panels)
plt.show()

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
for ax, scale in zip(axes, (1e-3, 1.0)):
    for name in ("ffn", "linear"):
        plots.plot_similarity_scatter(result.signature_sim, panels[f"{name}, init {scale:g}"], ax=ax,
                                      label=f"{name}: Pearson {by[(name, scale)].alignment_final['pearson']:.2f}",
                                      title=f"init scale {scale:g}", xlabel="signature similarity",
                                      ylabel="key-embedding similarity")
plt.show()

# %% [markdown]
# ## 3. Alignment over training and against the initialisation scale

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
plots.plot_curves({f"{name}, init {scale:g}": (run.steps[np.asarray(run.alignment_over_time["record_index"])],
                                              np.asarray(run.alignment_over_time["pearson"]))
                   for (name, scale), run in by.items()}, ax=axes[0], xlabel="step", ylabel="Pearson(S_E, S_P)",
                  logy=False, styles=styles, title="alignment over training")
scales = np.asarray(config.init_scale)
sweep = {}
for name in ("ffn", "linear"):
    sweep[f"{name}: Pearson"] = (scales, [by[(name, s)].alignment_final["pearson"] for s in scales])
    sweep[f"{name}: held-out accuracy"] = (scales, [by[(name, s)].accuracy["test_held_out"][-1] for s in scales])
plots.plot_curves(sweep, ax=axes[1], xlabel="init scale", ylabel="", logy=False, logx=True, marker="o",
                  styles={k: {"ls": ":"} for k in sweep if "accuracy" in k}, title="the initialisation-scale sweep")
plt.show()

# %% [markdown]
# What this run shows (seed 0; the asserts below fail if a package change breaks it):
#
# * small initialisation (1e-3) aligns the FFN's key embeddings with the signatures clearly better than the
#   standard scale (1): the initial random geometry is erased only when it starts small;
# * the dependence is not monotone: with Adam every parameter moves by about the learning rate per step
#   whatever its size, so below ~1e-1 the final geometry is set by training, and 1e-1 can align as well as
#   or better than 1e-3 (the README's 4-point sweep at 2000 steps: 0.58, 0.63, 0.70, 0.32 for 1e-3, 1e-2,
#   1e-1, 1);
# * the linear model, whose geometry the closed form of notebook 01 predicts, aligns better than the FFN
#   at the same scale: the hidden layer adds its own (signature-driven but distorted) directions.

# %%
ffn_small, ffn_large = by[("ffn", 1e-3)], by[("ffn", 1.0)]
assert ffn_small.alignment_final["pearson"] > ffn_large.alignment_final["pearson"] + 0.1
assert ffn_small.accuracy["train"][-1] > 0.9 > by[("linear", 1e-3)].accuracy["train"][-1]
assert by[("linear", 1e-3)].alignment_final["pearson"] > ffn_small.alignment_final["pearson"]
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.1f} s")
