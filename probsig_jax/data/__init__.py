"""Data sets: the generic :class:`Dataset`, the composite addition task generator and typed data edits."""

from probsig_jax.data.composite_addition import (
    PRESETS,
    Combo,
    ComboWeight,
    CompositeAdditionConfig,
    Relabel,
    TaskData,
    composite_label,
    make_composite_addition,
    vocabulary_size,
)
from probsig_jax.data.dataset import Dataset
from probsig_jax.data.edits import DataEdit, apply_edits
from probsig_jax.data.features import count_features, num_features
from probsig_jax.data.modular import (
    ModularTask,
    ModularTaskConfig,
    bijective_noise_label,
    expected_label_collisions,
    label_collisions,
    legendre_symbol,
    make_modular_task,
)

__all__ = [
    "PRESETS", "Combo", "ComboWeight", "CompositeAdditionConfig", "DataEdit", "Dataset", "Relabel", "TaskData",
    "apply_edits", "composite_label", "count_features", "make_composite_addition", "num_features",
    "vocabulary_size",
    "ModularTask", "ModularTaskConfig", "bijective_noise_label", "expected_label_collisions", "label_collisions", "legendre_symbol",
    "make_modular_task",
]
