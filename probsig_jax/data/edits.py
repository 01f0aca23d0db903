"""Typed edits of a data config: ``DataEdit("anchor_weights", (4.0, 1.0, 1.0, 1.0))``.

An edit names one field of :class:`~probsig_jax.data.CompositeAdditionConfig` and its new value, coerced to
the field's type on construction, so an edit built in Python, parsed from the command line
(``--edit anchor_weights=4,1,1,1``) or loaded from a run's ``config.json`` is the same object. Its text form
(``str(edit)``) is the command-line form.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from probsig_jax.config_base import from_jsonable
from probsig_jax.data.composite_addition import CompositeAdditionConfig
from probsig_jax.validation import ConfigError

EDITABLE_FIELDS = tuple(f.name for f in dataclasses.fields(CompositeAdditionConfig) if f.name != "seed")


def _text(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass(frozen=True)
class DataEdit:
    """Set one field of the data config.

    Attributes:
      field: a field of CompositeAdditionConfig other than ``seed`` (the experiment's seed sets it).
      value: the new value, of the field's type (lists become tuples, numbers the field's number type).
    """

    field: str
    value: Any

    assignment_target: ClassVar[type] = CompositeAdditionConfig   # FIELD=VALUE on the command line

    def __post_init__(self) -> None:
        if self.field not in EDITABLE_FIELDS:
            raise ConfigError("edit", f"{self.field!r} is not a data field; FIELD is one of "
                                      f"{', '.join(sorted(EDITABLE_FIELDS))}")
        annotation = typing.get_type_hints(CompositeAdditionConfig)[self.field]
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        object.__setattr__(self, "value", from_jsonable(value, annotation, f"edit {self.field}"))

    def __str__(self) -> str:
        return f"{self.field}={_text(self.value)}"

    @classmethod
    def from_dict(cls, data: Any, field: str = "edit") -> "DataEdit":
        if not (isinstance(data, dict) and set(data) == {"field", "value"}):
            raise ConfigError(field, f"must be an object with keys field and value, got {data!r}")
        return cls(data["field"], data["value"])


def apply_edits(config: CompositeAdditionConfig, edits: Sequence[DataEdit]) -> CompositeAdditionConfig:
    """``config`` with every edit applied in order (later edits of one field win)."""
    return config.replace(**{e.field: e.value for e in edits})
