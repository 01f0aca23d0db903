"""What the composite-addition experiments (E1-E3) share: the data config taken from a preset, and the task
with its alignment token set (the keys seen in training) and signature similarity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from probsig_jax.analysis.alignment import AlignmentConfig, TokenSet, weight_similarities
from probsig_jax.analysis.metrics import cosine_similarity_matrix
from probsig_jax.data import PRESETS, CompositeAdditionConfig, TaskData, make_composite_addition
from probsig_jax.models.linear import token_rows
from probsig_jax.signatures import signature_matrix, similarity_by_name
from probsig_jax.validation import ConfigError, require

Preset = Literal["simple", "anchor4", "anchor4_trap", "reasoning"]
TOY_ALIGNMENT = AlignmentConfig(similarity="cosine_M", topk=5, strong_pair_percent=10.0, token_sets=("keys",))
"""The alignment settings of E1-E3: the key tokens, signature cosine_M, k = 5, q = 10 %."""
ALIGNMENT_OPTIONS_UNUSED = ("alignment.token_sets", "alignment.top_tokens", "alignment.token_list")
"""Alignment fields that mean nothing for a composite addition task (no command-line options)."""


def resolve_data(preset: str, data: CompositeAdditionConfig | None, seed: int) -> CompositeAdditionConfig:
    """The data config of an experiment: ``data``, or the ``preset`` when ``data`` is None, seeded with ``seed``."""
    if data is None:
        require(preset in PRESETS, "preset", f"must be one of {', '.join(sorted(PRESETS))}, got {preset!r}")
        data = PRESETS[preset]
    return data.replace(seed=seed)


def check_toy_alignment(alignment: AlignmentConfig) -> None:
    alignment.require_supported(("keys",), token_list=False)


def trained_keys(task: TaskData) -> np.ndarray:
    """The key tokens that occur in the training inputs (test-only keys have no input signature and an
    untrained embedding, so they are left out of the alignment token set)."""
    seen = np.zeros(task.train.vocab_size, bool)
    seen[np.unique(task.train.inputs)] = True
    keys = np.asarray(task.keys)
    return keys[seen[keys]]


@dataclass
class TaskSignatures:
    """A generated task with what the alignment pipeline needs.

    Attributes:
      task: the train / test splits.
      keys: the alignment token set (trained keys, in increasing order).
      M: (V, F) signature matrix of the training data.
      signature_sim: (n, n) signature similarity of the keys (``AlignmentConfig.similarity``; with positional
        features the cosine of a key's per-position columns of M stacked).
    """

    task: TaskData
    keys: TokenSet
    M: np.ndarray
    signature_sim: np.ndarray


def task_signatures(data_config: CompositeAdditionConfig, alignment: AlignmentConfig, positional: bool,
                    task: TaskData | None = None) -> TaskSignatures:
    """Generate the task (unless ``task`` is given) and its key signatures (``alignment.similarity``)."""
    task = make_composite_addition(data_config) if task is None else task
    data = task.train
    keys = trained_keys(task)
    if len(keys) < 3:
        raise ConfigError("key_min/key_max", f"need at least 3 key tokens for the alignment metrics, got {len(keys)}")
    M = signature_matrix(data, positional)
    if positional:
        S_sig = cosine_similarity_matrix(token_rows(M, data.vocab_size, True)[keys])
    else:
        S_sig = similarity_by_name(alignment.similarity, data, False)[np.ix_(keys, keys)]
    token_set = TokenSet("keys", keys, tuple(str(k) for k in keys))
    alignment.check_token_set(token_set)
    return TaskSignatures(task, token_set, M, S_sig)


class TaskResultView:
    """The task, keys and signatures of an experiment result that holds ``signatures`` (a
    :class:`TaskSignatures`) and ``config`` (with ``positional``, default False)."""

    signatures: TaskSignatures

    @property
    def task(self) -> TaskData:
        return self.signatures.task

    @property
    def keys(self) -> np.ndarray:
        return self.signatures.keys.ids

    @property
    def M(self) -> np.ndarray:
        return self.signatures.M

    @property
    def signature_sim(self) -> np.ndarray:
        return self.signatures.signature_sim

    def key_similarity(self, E_DxF: np.ndarray) -> np.ndarray:
        """(n, n) cosine similarity of the key embeddings of one (d, F) embedding."""
        rows = token_rows(np.asarray(E_DxF), self.task.train.vocab_size, getattr(self.config, "positional", False))
        return weight_similarities({"embedding": rows}, self.signatures.keys)["embedding"]
