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

from probsig_jax.analysis import plots
from probsig_jax.analysis.alignment import alignment_series, compare_one, weight_similarities
from probsig_jax.analysis.geometry import cluster_order
from probsig_jax.corpus import CorpusConfig, VocabularyMap, qwen2_tokenizer, tokenize_corpus
from probsig_jax.experiments.corpus_alignment import (CORPUS_ALIGNMENT, CorpusAnalysisConfig, analyse_corpus,
                                                      model_weights)
from probsig_jax.models.qwen2 import PRESETS, Qwen2LM
from probsig_jax.training.lm_loop import LMRunConfig, train_language_model
from probsig_jax.training.lm_optimizer import LMTrainConfig
from probsig_jax.training.token_windows import TokenWindows, split_stream

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
analysis = analyse_corpus(train_ids, vocab.size, tokenizer, vocab, CorpusAnalysisConfig(), CORPUS_ALIGNMENT)
print(f"{analysis.counts.num_pairs:,} distinct pairs; leading singular values of M: "
      f"{np.round(analysis.top_singular_values[:5], 5)}; prediction time t = {analysis.theory_time:.1f}")
digits = next(s for s in analysis.token_sets if s.name == "digits")
targets = analysis.targets["digits"]
plots.plot_similarity_heatmaps({"phi_next (input signature)": targets["input_signature"],
                                "phi_pre (output signature)": targets["output_signature"],
                                "theory: predicted W_E similarity": targets["theory_embedding"]}, list(digits.labels))
plt.show()
m = compare_one(targets["theory_embedding"], targets["input_signature"], CORPUS_ALIGNMENT.replace(topk=3))
print(f"digits, theory prediction vs phi_next: Pearson {m['pearson']:.3f}, Spearman {m['spearman']:.3f}")
assert m["pearson"] > 0.7   # at this early time the prediction is the (projected) signature geometry

# %% [markdown]
# ## 3. Train a small Qwen2.5-architecture model and compare
#
# The `tiny` preset (untied embeddings, 2 layers, hidden 64) with the corpus's vocabulary, 250 AdamW steps
# of 16 x 64 tokens. The hook is the analysis's `AlignmentTracker` (the one E4 uses): at every evaluation it
# measures how the cosine similarities of the input embeddings and unembeddings of the token sets align with
# the signatures and with the prediction.

# %%
top = next(s for s in analysis.token_sets if s.name == "top")
tracker = analysis.tracker()

tic = time.perf_counter()
config = PRESETS["tiny"].replace(vocab_size=vocab.size)
result = train_language_model(lambda rngs: Qwen2LM(config, rngs=rngs),
                              LMTrainConfig(learning_rate=3e-3, warmup_steps=25, total_steps=250, weight_decay=0.0),
                              LMRunConfig(batch_size=16, seq_len=64, eval_every=25, checkpoint_every=0),
                              TokenWindows(train_ids, 64), TokenWindows(eval_ids, 64),
                              evaluate=lambda step, model: {"alignment": tracker(step, model_weights(model))}, quiet=True)
print(f"trained in {time.perf_counter() - tic:.1f} s; held-out loss {result.evals[0]['eval_loss']:.2f} -> "
      f"{result.evals[-1]['eval_loss']:.2f}")
curve = {key: alignment_series(tracker.history, "top", comparison)
         for key, comparison in (("signature", "embedding_vs_signature"), ("theory", "embedding_vs_theory"))}
ax = plots.plot_curves({f"W_E vs {key}": (series["step"], series["pearson"]) for key, series in curve.items()},
                       xlabel="step", ylabel="Pearson r, top-100 tokens", logy=False, marker="o")
ax.figure.set_size_inches(6, 3.5)
plt.show()

# %% [markdown]
# The alignment grows from zero (random initialisation) as training proceeds. The theory's curve lies on
# top of the signature's **by construction**: at small growth the predicted Gram is ~ 2 t^2 M^T M cut to the
# SVD rank, whose cosine is the phi_next cosine up to the truncation (they correlate ~0.99 before any
# training). The sharper test is side specificity: W_E should follow phi_next, not phi_pre (next cell).

# %%
from probsig_jax.analysis.alignment import side_specificity

final = weight_similarities(model_weights(result.model), top)
side = side_specificity({"W_E": final["embedding"], "W_U": final["unembedding"]},
                        {"phi_next": analysis.targets["top"]["input_signature"],
                         "phi_pre": analysis.targets["top"]["output_signature"]},
                        {"W_E": "phi_next", "W_U": "phi_pre"}, analysis.config.replace(permutations=199, bootstrap=200))
for w, row in side["pearson"].items():
    print(w, {s: f"{e['r']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}] p={e['p']:.3f}" for s, e in row.items()},
          "own side confirmed" if side["holds_for"][w] else "own side NOT confirmed")

# %%
order = cluster_order(analysis.targets["top"]["input_signature"])
ordered = top.reordered(order)
S_E = weight_similarities(model_weights(result.model), ordered)["embedding"]
plots.plot_similarity_heatmaps({"trained W_E": S_E,
                                "phi_next": analysis.targets["top"]["input_signature"][np.ix_(order, order)],
                                "theory prediction": analysis.targets["top"]["theory_embedding"][np.ix_(order, order)]})
plt.show()
final = {key: series["pearson"][-1] for key, series in curve.items()}
print(f"final: W_E vs phi_next {final['signature']:.3f}, W_E vs theory {final['theory']:.3f}")
assert final["signature"] > 0.3 and final["theory"] > 0.3
assert curve["signature"]["pearson"][0] < 0.2     # no alignment at initialisation
cache.cleanup()
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.0f} s")
