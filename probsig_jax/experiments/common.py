"""Pieces shared by the experiments: the model config, dtype policy and token-level views of weights."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from probsig_jax.analysis import alignment_metrics, cosine_similarity_matrix
from probsig_jax.data import PRESETS, CompositeAdditionConfig
from probsig_jax.train import TrainConfig
from probsig_jax.validation import ConfigError, require, require_float, require_int


@dataclass(frozen=True)
class LinearExperimentConfig:
    """E1: the linear model on a composite addition task, theory beside training."""

    preset: Literal["simple", "anchor4", "anchor4_trap", "reasoning"] = "simple"
    """Composite addition preset the data options are applied on top of."""
    dim: int = 256
    """Embedding width d."""
    init_scale: float = 1e-4
    """Standard deviation eps of the i.i.d. normal initialisation of E and U."""
    positional: bool = False
    """One feature per (position, token) instead of token counts."""
    dtype: Literal["float64", "float32"] = "float64"
    """Computation dtype; float64 is the default because theory and training are compared."""
    escape_threshold: float = 1.0
    """Leading singular value of U E that marks the escape from the plateau."""
    early_growth: float = 5.0
    """The early (near-linear) phase lasts until ||E_t|| / ||E_0|| reaches this factor;
    ``closed_form_rel_err`` is the maximum over it."""
    alignment_growth: float = 2.0
    """Growth factor ||E_t|| / ||E_0|| at which ``alignment`` is reported (<= early_growth): the regime where
    the embedding Gram is ~ eps^2 d (I + 2 t^2 M^T M), before the leading modes dominate (PAPER section 4)."""
    signature_similarity: Literal["cosine_M", "cosine_Q", "hellinger_Q", "js_Q"] = "cosine_M"
    """Signature similarity compared with embedding similarity."""
    topk: int = 5
    """k of the top-k neighbour overlap."""
    strong_pair_percent: float = 10.0
    """q: the strong pairs are the top q percent by signature similarity."""
    ode_rtol: float = 1e-10
    """Relative tolerance of the adaptive ODE solver."""
    seed: int = 0
    """Seed of the data sampler, the initialisation and the mini-batches."""
    data: CompositeAdditionConfig = field(default_factory=CompositeAdditionConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=6000, learning_rate=0.05, record_every=20))

    def validate(self) -> "LinearExperimentConfig":
        require(self.preset in PRESETS, "preset", f"must be one of {sorted(PRESETS)}, got {self.preset!r}")
        require_int(self.dim, "dim", minimum=1, maximum=65536)
        require_float(self.init_scale, "init_scale", minimum=0.0, strict_minimum=True)
        require(self.dtype in ("float32", "float64"), "dtype", f"must be float32 or float64, got {self.dtype!r}")
        require_float(self.escape_threshold, "escape_threshold", minimum=0.0, strict_minimum=True)
        require_float(self.early_growth, "early_growth", minimum=1.0, strict_minimum=True)
        require_float(self.alignment_growth, "alignment_growth", minimum=1.0, maximum=self.early_growth,
                      strict_minimum=True)
        require_int(self.topk, "topk", minimum=1)
        require_float(self.strong_pair_percent, "strong_pair_percent", minimum=0.0, maximum=100.0, strict_minimum=True)
        require_float(self.ode_rtol, "ode_rtol", minimum=0.0, maximum=1e-2, strict_minimum=True)
        require_int(self.seed, "seed", minimum=0)
        self.data.validate()
        self.train.validate()
        return self


@contextlib.contextmanager
def numerics(dtype: str):
    """float64 on demand and full-precision matmuls (no TF32) for every theory-vs-training comparison."""
    previous = bool(jax.config.read("jax_enable_x64"))
    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    try:
        with jax.default_matmul_precision("highest"):
            yield jnp.float64 if dtype == "float64" else jnp.float32
    finally:
        jax.config.update("jax_enable_x64", previous)


def token_vectors(weight_DxF: np.ndarray, tokens, vocab_size: int, positional: bool) -> np.ndarray:
    """Per-token embedding vectors (n, d) — or (n, L*d), the token's per-position columns stacked."""
    W = np.asarray(weight_DxF)
    tokens = np.asarray(tokens)
    if not positional:
        return W[:, tokens].T
    L = W.shape[1] // vocab_size
    return np.concatenate([W[:, l * vocab_size + tokens].T for l in range(L)], axis=1)


def signature_vectors(M_VxF: np.ndarray, tokens, vocab_size: int, positional: bool) -> np.ndarray:
    """Per-token signature vectors: the token's M columns (stacked over positions if positional)."""
    return token_vectors(M_VxF, tokens, vocab_size, positional)


def embedding_similarity(weight_DxF: np.ndarray, tokens, vocab_size: int, positional: bool) -> np.ndarray:
    """(n, n) cosine similarity of the tokens' embedding vectors."""
    return cosine_similarity_matrix(token_vectors(weight_DxF, tokens, vocab_size, positional))


def relative_error(x_T: np.ndarray, ref_T: np.ndarray) -> np.ndarray:
    """(T,) ||x(t) - ref(t)||_F / ||ref(t)||_F for stacked (T, ...) arrays."""
    x, ref = np.asarray(x_T), np.asarray(ref_T)
    diff = np.linalg.norm((x - ref).reshape(len(x), -1), axis=1)
    return diff / np.linalg.norm(ref.reshape(len(ref), -1), axis=1)


def joint_relative_error(E_T, U_T, E_ref, U_ref) -> np.ndarray:
    """(T,) relative error of the concatenated parameters (E, U)."""
    num = (np.linalg.norm((np.asarray(E_T) - np.asarray(E_ref)).reshape(len(E_T), -1), axis=1) ** 2
           + np.linalg.norm((np.asarray(U_T) - np.asarray(U_ref)).reshape(len(U_T), -1), axis=1) ** 2)
    den = (np.linalg.norm(np.asarray(E_ref).reshape(len(E_ref), -1), axis=1) ** 2
           + np.linalg.norm(np.asarray(U_ref).reshape(len(U_ref), -1), axis=1) ** 2)
    return np.sqrt(num / den)


def alignment_over_time(E_T: np.ndarray, S_sig: np.ndarray, tokens, vocab_size: int, positional: bool,
                        *, k: int, q: float, max_points: int = 60) -> dict[str, list[float]]:
    """Alignment metrics at up to ``max_points`` evenly spaced records; includes the record indices."""
    idx = np.unique(np.linspace(0, len(E_T) - 1, min(max_points, len(E_T))).round().astype(int))
    rows = [alignment_metrics(embedding_similarity(E_T[i], tokens, vocab_size, positional), S_sig, k=k, q=q)
            for i in idx]
    out = {name: [r[name] for r in rows] for name in rows[0]}
    out["record_index"] = idx.tolist()
    return out


def trained_keys(task) -> np.ndarray:
    """The key tokens that occur in the training inputs (test-only keys have no input signature and an
    untrained embedding, so they are left out of the alignment token set)."""
    seen = np.zeros(task.train.vocab_size, bool)
    seen[np.unique(task.train.inputs)] = True
    keys = np.asarray(task.keys)
    return keys[seen[keys]]


def task_and_key_signatures(data_config: CompositeAdditionConfig, similarity: str, positional: bool):
    """Generate the task and its signatures: ``(task, keys, M (V, F), S_sig (n, n))``.

    ``keys`` are the trained key tokens (the alignment token set). With positional features a
    token's signature stacks its per-position columns of M and ``S_sig`` is their cosine.
    """
    from probsig_jax.data import make_composite_addition
    from probsig_jax.signatures import signature_matrix, similarity_by_name

    task = make_composite_addition(data_config)
    data = task.train
    keys = check_token_set(trained_keys(task), data.vocab_size)
    M = signature_matrix(data, positional)
    if positional:
        S_sig = cosine_similarity_matrix(signature_vectors(M, keys, data.vocab_size, True))
    else:
        S_sig = similarity_by_name(similarity, data, False)[np.ix_(keys, keys)]
    return task, keys, M, S_sig


def check_token_set(tokens, vocab_size: int) -> np.ndarray:
    tokens = np.asarray(tokens)
    if len(tokens) < 3:
        raise ConfigError("key_min/key_max", f"need at least 3 key tokens for the alignment metrics, got {len(tokens)}")
    return tokens


def similarity_from_gram(gram_FxF: np.ndarray, tokens, vocab_size: int, positional: bool) -> np.ndarray:
    """(n, n) cosine similarity of token vectors whose feature Gram matrix is ``gram_FxF``.

    For positional features a token's vector stacks its per-position columns, so its
    inner products sum the Gram entries of matching positions.
    """
    G = np.asarray(gram_FxF)
    tokens = np.asarray(tokens)
    L = G.shape[0] // vocab_size if positional else 1
    ids = [l * vocab_size + tokens for l in range(L)] if positional else [tokens]
    inner = sum(G[np.ix_(i, i)] for i in ids)
    norms = np.sqrt(np.clip(np.diag(inner), 0, None))
    return np.divide(inner, np.outer(norms, norms), out=np.zeros_like(inner), where=np.outer(norms, norms) > 0)
