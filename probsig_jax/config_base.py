"""The base class of every typed config: validated once, derived fields resolved in one place, and the
same object whether it is built in Python, by the command line or loaded from a run's ``config.json``.

A config is a frozen dataclass deriving from :class:`Config`. It states

* its own checks in ``_check()`` (raise :class:`~probsig_jax.validation.ConfigError` naming the field);
  :meth:`Config.validate` checks the nested configs first, then the config itself, and does so once per
  object (later calls return at once), so a run's configs are checked exactly once however many library
  functions receive them;
* its derived fields in ``resolved()`` (e.g. an experiment's ``seed`` copied into its data and training
  configs); a resolved config resolves to itself, so a saved (resolved) config reruns the same run;
* class-level metadata shared by the command line and the error messages: ``derived_fields`` (dotted paths
  that ``resolved()`` sets, hence no options), ``option_skip`` (dotted paths without options, e.g. settings
  an experiment does not use), ``option_prefixes`` (nested config -> option prefix, e.g.
  ``{"corpus": "corpus_"}`` gives ``--corpus-source``) and ``option_resets`` (setting a field resets others
  to their defaults, e.g. a new ``preset`` drops the data config taken from the old one).

:meth:`Config.from_dict` rebuilds a config from its JSON form (:func:`probsig_jax.runs.to_jsonable`) using
the field type annotations; unknown keys are an error naming them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import weakref
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

from probsig_jax.validation import ConfigError, renamed_field


class Config:
    """Mixin for frozen dataclass configs (see the module docstring)."""

    derived_fields: ClassVar[tuple[str, ...]] = ()
    option_skip: ClassVar[tuple[str, ...]] = ()
    option_prefixes: ClassVar[dict[str, str]] = {}
    option_resets: ClassVar[dict[str, tuple[str, ...]]] = {}

    def _check(self) -> None:
        """This config's own checks (nested configs are checked by :meth:`validate`)."""

    def validate(self):
        """Check the nested configs, then this one; raise ConfigError naming the first bad field.

        Returns ``self``. The checks run once per object: a config is immutable, so once valid it stays valid.
        """
        if _is_validated(self):
            return self
        for f in dataclasses.fields(self):
            child = getattr(self, f.name)
            if isinstance(child, Config):
                prefix = self.option_prefixes.get(f.name, "")
                with renamed_field(prefix):
                    child.validate()
        self._check()
        _mark_validated(self)
        return self

    def resolved(self):
        """This config with its derived fields filled in (``self`` when nothing changes)."""
        return self

    def replace(self, **changes):
        """``dataclasses.replace``, but ``self`` itself when every change keeps the current value (so a
        validated config stays validated)."""
        if all(getattr(self, k) == v for k, v in changes.items()):
            return self
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Any, field: str = "config"):
        """Rebuild a config from its JSON form; fields missing from ``data`` take their defaults."""
        return from_jsonable(data, cls, field)


# The configs validated so far, by identity (a mark inside the instance would show in its __dict__, and
# equality would treat a config as checked because an equal one was).
_VALIDATED: dict[int, weakref.ref] = {}


def _is_validated(config: Config) -> bool:
    ref = _VALIDATED.get(id(config))
    return ref is not None and ref() is config


def _mark_validated(config: Config) -> None:
    key = id(config)
    _VALIDATED[key] = weakref.ref(config, lambda _: _VALIDATED.pop(key, None))


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def from_jsonable(value: Any, annotation: Any, field: str) -> Any:
    """Convert a JSON value (dicts, lists, numbers, strings) to ``annotation``'s Python type.

    Handles nested dataclasses (through their ``from_dict`` when they define one, or their ``parse`` for a
    string in their text form), ``X | None``, ``tuple[X,
    ...]``, fixed tuples, ``Literal``, ``int``, ``float``, ``str``, ``bool`` and ``Any``. Raises ConfigError
    naming ``field`` (a dotted path) on a mismatch.
    """
    origin = get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        if value is None and len(options) < len(get_args(annotation)):
            return None
        errors = []
        for option in options:
            try:
                return from_jsonable(value, option, field)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(field, f"{value!r} matches none of {', '.join(map(_type_name, options))}")
    if dataclasses.is_dataclass(annotation):
        own = getattr(annotation, "from_dict", None)
        if own is not None and getattr(own, "__func__", None) is not Config.from_dict.__func__:
            return own(value, field)
        if isinstance(value, annotation):
            return value
        if isinstance(value, str) and hasattr(annotation, "parse"):     # a text form, e.g. Combo "4-3"
            return annotation.parse(value, field)
        if not isinstance(value, dict):
            raise ConfigError(field, f"must be an object with the fields of {annotation.__name__}, got {value!r}")
        hints = typing.get_type_hints(annotation)
        names = {f.name for f in dataclasses.fields(annotation) if f.init}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ConfigError(field, f"unknown field(s) {', '.join(unknown)} for {annotation.__name__} "
                                     f"(known: {', '.join(sorted(names))})")
        kwargs = {k: from_jsonable(v, hints[k], f"{field}.{k}") for k, v in value.items()}
        return annotation(**kwargs)
    if origin is tuple:
        args = get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(field, f"must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_jsonable(v, args[0], f"{field}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(field, f"must have {len(args)} entries, got {len(value)}")
        return tuple(from_jsonable(v, a, f"{field}[{i}]") for i, (v, a) in enumerate(zip(args, value)))
    if origin is Literal:
        if value not in get_args(annotation):
            raise ConfigError(field, f"must be one of {', '.join(map(str, get_args(annotation)))}, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(field, f"must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(field, f"must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(field, f"must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(field, f"must be a string, got {value!r}")
        return value
    raise TypeError(f"no JSON conversion for field {field} of type {annotation}")
