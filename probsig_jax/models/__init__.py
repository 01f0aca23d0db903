"""Models (Flax NNX): the linear embedding model, the feed-forward Emb-MLP and the Qwen2.5-architecture port; and
:func:`read_embeddings`, the input / output embeddings of any supported HF causal LM checkpoint (no model built).

Every model maps token ids to logits and exposes ``input_embeddings()`` / ``output_embeddings()`` as token
rows (V, H), the layout the alignment pipeline compares (:mod:`probsig_jax.analysis.alignment`).
"""

from probsig_jax.models.ffn import FeedForwardModel
from probsig_jax.models.hf_embeddings import CheckpointEmbeddings, read_embeddings
from probsig_jax.models.linear import LinearEmbeddingModel, token_gram, token_rows
from probsig_jax.models.two_input_mlp import TwoInputMLP
from probsig_jax.models.qwen2 import Qwen2Config, Qwen2LM, load_pretrained, save_pretrained

__all__ = ["CheckpointEmbeddings", "FeedForwardModel", "LinearEmbeddingModel", "Qwen2Config", "Qwen2LM",
           "load_pretrained", "read_embeddings", "save_pretrained", "token_gram", "token_rows", "TwoInputMLP"]
