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

from probsig_jax.analysis import offdiagonal
from probsig_jax.experiments.common import embedding_similarity
from probsig_jax.experiments.ffn import FFNExperimentConfig, run_ffn
from probsig_jax.train import TrainConfig

# probsig_jax.plots (imported by the experiments) may switch matplotlib to Agg; draw inline:
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
for (name, scale), run in by.items():
    style = "-" if name == "ffn" else "--"
    axes[0].plot(run.steps, run.loss, style, label=f"{name}, init {scale:g}")
    axes[1].plot(run.steps, run.accuracy["train"], style, label=f"{name}, init {scale:g}")
axes[0].set(yscale="log", xlabel="step", ylabel="training loss")
axes[1].set(xlabel="step", ylabel="train accuracy")
axes[1].legend(fontsize="small")
plt.show()

# %% [markdown]
# ## 2. Key-embedding similarity vs signature similarity
#
# The token set is the keys seen in training, in numerical order. Signature similarity is the cosine of the
# columns of `M`: for `z + s1 + s2` the label distribution of key `z` is the distribution of `s1 + s2`
# shifted by `z`, so similarity depends on `z - z'` through the overlaps of those shifted distributions.

# %%
V = result.task.train.vocab_size
panels = {"signature (cosine of M columns)": result.signature_sim}
for name in ("ffn", "linear"):
    for scale in (1e-3, 1.0):
        panels[f"{name}, init {scale:g}"] = embedding_similarity(by[(name, scale)].E[-1], result.keys, V, False)
fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.8), constrained_layout=True)
for ax, (title, S) in zip(axes, panels.items()):
    image = ax.imshow(S, cmap="coolwarm", vmin=-1, vmax=1)
    ax.set_title(title, fontsize="small")
    ax.set_xticks([])
    ax.set_yticks([])
fig.colorbar(image, ax=axes, shrink=0.8)
plt.show()

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
for ax, scale in zip(axes, (1e-3, 1.0)):
    for name, colour in (("ffn", "C0"), ("linear", "C1")):
        S = embedding_similarity(by[(name, scale)].E[-1], result.keys, V, False)
        ax.scatter(offdiagonal(result.signature_sim), offdiagonal(S), s=3, alpha=0.4, color=colour,
                   label=f"{name}: Pearson {by[(name, scale)].alignment_final['pearson']:.2f}")
    ax.set(title=f"init scale {scale:g}", xlabel="signature similarity", ylabel="key-embedding similarity")
    ax.legend(fontsize="small", markerscale=4)
plt.show()

# %% [markdown]
# ## 3. Alignment over training and against the initialisation scale

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
for (name, scale), run in by.items():
    aot = run.alignment_over_time
    axes[0].plot(run.steps[np.asarray(aot["record_index"])], aot["pearson"], "-" if name == "ffn" else "--",
                 label=f"{name}, init {scale:g}")
axes[0].set(xlabel="step", ylabel="Pearson(S_E, S_P)", title="alignment over training")
axes[0].legend(fontsize="small")
scales = np.asarray(config.init_scale)
for name, marker in (("ffn", "o"), ("linear", "s")):
    axes[1].plot(scales, [by[(name, s)].alignment_final["pearson"] for s in scales], marker=marker,
                 label=f"{name}: Pearson")
    axes[1].plot(scales, [by[(name, s)].accuracy["test_held_out"][-1] for s in scales], marker=marker, ls=":",
                 label=f"{name}: held-out accuracy")
axes[1].set(xscale="log", xlabel="init scale", title="the initialisation-scale sweep")
axes[1].legend(fontsize="small")
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
