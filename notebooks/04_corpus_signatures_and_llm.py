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
# # 04 · Corpus signatures and a Qwen2.5-architecture model: predicting embedding geometry from counts
#
# On a language corpus the label is the next token and the input is the context (PAPER section 3): the
# input signature of token `s` is its next-token distribution `phi_next(s) = P(t_{i+1} | t_i = s)`, the
# output signature of `y` its previous-token distribution `phi_pre(y)`. The signature matrix `M`
# (label x token) is a sparse count matrix minus a rank-one centring term, so the linear theory's closed
# form, through a truncated SVD of `M`, predicts the geometry of the embeddings *from the corpus alone*.
#
# This notebook takes 1.5 MB of the embedded corpus (the Python standard library sources), tokenizes it
# with the offline Qwen2.5 tokenizer, counts the pairs, looks at the signatures of the digits, computes the
# theory's prediction, then trains a small Qwen2 model and compares. `python -m probsig_jax.simulate llm`
# is the full run (the whole corpus, figures, checkpoints).

# %%
import tempfile
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np

warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm without ipywidgets; progress is off anyway

from probsig_jax.analysis import alignment_metrics, cosine_similarity_matrix, offdiagonal
from probsig_jax.corpus import CorpusConfig, tokenize_corpus
from probsig_jax.experiments.corpus_alignment import CorpusAnalysisConfig, analyse_corpus, cluster_order
from probsig_jax.lm_data import TokenWindows, split_stream
from probsig_jax.lm_training import LMRunConfig, train_language_model
from probsig_jax.models.qwen2 import PRESETS
from probsig_jax.tokenizer import qwen2_tokenizer
from probsig_jax.train_lm import LMTrainConfig
from probsig_jax.vocab import VocabularyMap

# %matplotlib inline
plt.rcParams.update({"figure.dpi": 90, "axes.grid": False})
NOTEBOOK_START = time.perf_counter()

# %% [markdown]
# ## 1. Corpus -> tokens -> compact vocabulary
#
# `tokenize_corpus` writes uint32 shards with a manifest into a cache directory (a temporary one here) and
# re-uses them when nothing changed. The ids the corpus uses are mapped to a dense range, so the model gets
# only those rows instead of 151,936.

# %%
tokenizer = qwen2_tokenizer()
cache = tempfile.TemporaryDirectory(prefix="probsig_nb04_")
shards = tokenize_corpus(CorpusConfig(max_bytes=1_500_000), tokenizer, cache.name, quiet=True)
stream = shards.tokens()
vocab = VocabularyMap.from_tokens([stream], tokenizer.vocab_size, always_keep=[tokenizer.eos_id])
ids = vocab.to_compact(stream)
train_ids, eval_ids = split_stream(ids, 0.05, 64)
print(f"{shards.num_documents} documents, {shards.num_bytes / 1e6:.2f} MB, {shards.num_tokens:,} tokens; "
      f"{vocab.size:,} distinct ids (of {tokenizer.vocab_size:,})")
print("known ids:", {t: tokenizer.encode(t) for t in ("0", "9", " ", "Hello", " world")})

# %% [markdown]
# ## 2. Signatures and the theory's prediction
#
# `analyse_corpus` counts the (context, next-token) pairs with window 1 (sparse, memory proportional to the
# distinct pairs), takes a rank-64 truncated SVD of `M`, picks the token sets (the 100 most frequent tokens,
# the digits) and computes, for each, the signature similarities and the theory's predicted similarity: the
# learned part `Q_T diag(cosh(2 S t) - 1) Q_T^T` of the closed form's Gram when the leading mode has grown 2x.

# %%
analysis = analyse_corpus(train_ids, vocab.size, tokenizer, vocab, CorpusAnalysisConfig(top_tokens=100))
print(f"{analysis.counts.num_pairs:,} distinct pairs; leading singular values of M: "
      f"{np.round(analysis.top_singular_values[:5], 5)}; prediction time t = {analysis.theory_time:.1f}")
digits = next(s for s in analysis.token_sets if s.name == "digits")
targets = analysis.targets["digits"]
fig, axes = plt.subplots(1, 3, figsize=(13, 4))
for ax, (name, key) in zip(axes, [("phi_next (input signature)", "input_cosine"),
                                  ("phi_pre (output signature)", "output_cosine"),
                                  ("theory: predicted W_E similarity", "theory_embedding")]):
    im = ax.imshow(targets[key], cmap="coolwarm", vmin=-1, vmax=1)
    ax.set_xticks(range(10), digits.labels)
    ax.set_yticks(range(10), digits.labels)
    ax.set_title(name)
fig.colorbar(im, ax=axes, shrink=0.8)
plt.show()
m = alignment_metrics(targets["theory_embedding"], targets["input_cosine"], k=3, q=10)
print(f"digits, theory prediction vs phi_next: Pearson {m['pearson']:.3f}, Spearman {m['spearman']:.3f}")
assert m["pearson"] > 0.7   # at this early time the prediction is the (projected) signature geometry

# %% [markdown]
# ## 3. Train a small Qwen2.5-architecture model and compare
#
# The `tiny` preset (untied embeddings, 2 layers, hidden 64) with the corpus's vocabulary, 250 AdamW steps
# of 16 x 64 tokens. The hook measures, at every evaluation, how the cosine similarities of the input
# embeddings of the top-100 tokens align with the signatures and with the prediction.

# %%
top = next(s for s in analysis.token_sets if s.name == "top")
curve = []


def evaluate(step, model):
    S_E = cosine_similarity_matrix(np.asarray(model.input_embeddings())[top.model_ids])
    t = analysis.targets["top"]
    row = {"signature": alignment_metrics(S_E, t["input_cosine"])["pearson"],
           "theory": alignment_metrics(S_E, t["theory_embedding"])["pearson"]}
    curve.append((step, row))
    return row


tic = time.perf_counter()
config = PRESETS["tiny"].replace(vocab_size=vocab.size)
result = train_language_model(config, LMTrainConfig(learning_rate=3e-3, warmup_steps=25, total_steps=250,
                                                    weight_decay=0.0),
                              LMRunConfig(batch_size=16, seq_len=64, eval_every=25, checkpoint_every=0),
                              TokenWindows(train_ids, 64), TokenWindows(eval_ids, 64), evaluate=evaluate, quiet=True)
print(f"trained in {time.perf_counter() - tic:.1f} s; held-out loss {result.evals[0]['eval_loss']:.2f} -> "
      f"{result.evals[-1]['eval_loss']:.2f}")
steps = [s for s, _ in curve]
plt.figure(figsize=(6, 3.5))
for key in ("signature", "theory"):
    plt.plot(steps, [r[key] for _, r in curve], "o-", label=f"W_E vs {key}")
plt.xlabel("step")
plt.ylabel("Pearson r, top-100 tokens")
plt.legend()
plt.grid(alpha=0.3)
plt.show()

# %% [markdown]
# The alignment grows from zero (random initialisation) as training proceeds, and the theory's prediction,
# computed from counts before any training, tracks it about as well as the signatures do.

# %%
S_E = cosine_similarity_matrix(np.asarray(result.model.input_embeddings())[top.model_ids])
order = cluster_order(analysis.targets["top"]["input_cosine"])
fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
for ax, (name, mat) in zip(axes, [("trained W_E", S_E), ("phi_next", analysis.targets["top"]["input_cosine"]),
                                  ("theory prediction", analysis.targets["top"]["theory_embedding"])]):
    ax.imshow(mat[np.ix_(order, order)], cmap="coolwarm", vmin=-1, vmax=1)
    ax.set_title(name)
    ax.set_xticks([])
    ax.set_yticks([])
plt.show()
final = curve[-1][1]
print(f"final: W_E vs phi_next {final['signature']:.3f}, W_E vs theory {final['theory']:.3f}")
assert final["signature"] > 0.3 and final["theory"] > 0.3
assert curve[0][1]["signature"] < 0.2     # no alignment at initialisation
cache.cleanup()
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.0f} s")
