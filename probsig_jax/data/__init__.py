"""Data sets: the generic :class:`Dataset` and the composite addition task generator."""

from probsig_jax.data.composite_addition import (
    PRESETS,
    Combo,
    ComboWeight,
    CompositeAdditionConfig,
    Relabel,
    TaskData,
    composite_label,
    make_composite_addition,
)
from probsig_jax.data.dataset import Dataset
from probsig_jax.data.features import count_features, num_features

__all__ = [
    "PRESETS", "Combo", "ComboWeight", "CompositeAdditionConfig", "Dataset", "Relabel", "TaskData",
    "composite_label", "count_features", "make_composite_addition", "num_features",
]
