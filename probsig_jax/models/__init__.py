"""Models: the linear embedding model (later issues add the FFN and the Qwen2.5 port)."""

from probsig_jax.models.linear import LinearEmbeddingModel

__all__ = ["LinearEmbeddingModel"]
