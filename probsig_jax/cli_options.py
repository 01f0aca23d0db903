"""Command-line options generated from typed config dataclasses (one mechanism for every field).

Every leaf field of a config tree (:class:`~probsig_jax.config_base.Config` subclasses nested in one
another) becomes ``--field-name`` (with the nested config's ``option_prefixes`` prefix, e.g.
``--corpus-source``); fields in ``derived_fields`` (set by ``resolved()``) and ``option_skip`` get none. The
field's type annotation chooses the parser: int, float, str, bool (``--flag/--no-flag``), ``Literal``
(choices), ``tuple[int, ...]`` / ``tuple[float, ...]`` / ``tuple[str, ...]`` (comma-separated), ``tuple[X,
...]`` for classes with a ``parse(text, field)`` classmethod (comma-separated items), ``X | None`` (``none``
for None), and classes with an ``assignment_target`` (``FIELD=VALUE``, the value parsed by the target
config's field type, e.g. data edits). Field metadata ``{"option": name, "repeat": True}`` renames an option
and makes it repeatable (one item per use); ``{"many": True}`` on a tuple field takes one or more values after
the option (``--checkpoint A B``, each value may itself be a comma list). The field's docstring (the string literal under it) becomes
the help text.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from probsig_jax.config_base import Config
from probsig_jax.validation import ConfigError


def _attribute_docs(cls) -> dict[str, str]:
    """Field descriptions from a Google-style ``Attributes:`` section of the class docstring."""
    docs: dict[str, str] = {}
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    if "Attributes:" not in [line.strip() for line in lines]:
        return docs
    start = [line.strip() for line in lines].index("Attributes:") + 1
    current, indent = None, 0
    for line in lines[start:]:
        if not line.strip():
            break
        name, sep, text = line.strip().partition(":")
        if sep and name.isidentifier() and (current is None or len(line) - len(line.lstrip()) <= indent):
            current, indent = name, len(line) - len(line.lstrip())
            docs[current] = text.strip()
        elif current is not None:
            docs[current] += " " + line.strip()
    return docs


def field_docs(cls) -> dict[str, str]:
    """Docstrings written under dataclass fields (``x: int = 0`` followed by ``\"\"\"doc\"\"\"``),
    falling back to the class docstring's ``Attributes:`` section."""
    docs = _attribute_docs(cls)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return docs
    body = tree.body[0].body
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def parse_value(text: str, annotation: Any, field: str) -> Any:
    """Parse one option value according to a field's type annotation."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType) and type(None) in get_args(annotation):  # Optional[X]
        if text.strip().lower() in ("", "none"):
            return None
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return parse_value(text, inner[0], field)
    if annotation is bool:
        return text
    if origin is Literal:
        choices = get_args(annotation)
        if text not in choices:
            raise ConfigError(field, f"must be one of {', '.join(map(str, choices))}, got {text!r}")
        return text
    if origin is tuple:
        item_type = get_args(annotation)[0]
        items = [p.strip() for p in text.split(",") if p.strip()] if text.strip() else []
        return tuple(parse_value(p, item_type, field) for p in items)
    if annotation in (int, float):
        try:
            return annotation(text)
        except ValueError:
            kind = "an integer" if annotation is int else "a number"
            raise ConfigError(field, f"must be {kind}, got {text!r}") from None
    if annotation is str:
        return text
    if hasattr(annotation, "assignment_target"):
        return _parse_assignment(text, annotation, field)
    if hasattr(annotation, "parse"):
        return annotation.parse(text, field)
    raise TypeError(f"no command-line parser for field {field} of type {annotation}")


def _parse_assignment(text: str, cls, option: str):
    """``FIELD=VALUE`` -> ``cls(field, value)`` with VALUE parsed by the type of ``cls.assignment_target.FIELD``."""
    name, sep, value = text.partition("=")
    name = name.strip().replace("-", "_")
    hints = typing.get_type_hints(cls.assignment_target)
    if not sep or name not in hints:
        raise ConfigError(option, f"{text!r} must be FIELD=VALUE with FIELD one of {', '.join(sorted(hints))}")
    annotation = hints[name]
    parsed = value.strip().lower() in ("1", "true", "yes") if annotation is bool else parse_value(value, annotation, name)
    return cls(name, parsed)


def _describe(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType) and type(None) in get_args(annotation):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return f"{_describe(inner[0])} or none"
    if origin is Literal:
        return "one of " + "|".join(map(str, get_args(annotation)))
    if origin is tuple:
        return "comma-separated " + getattr(get_args(annotation)[0], "__name__", "items")
    return getattr(annotation, "__name__", str(annotation))


def _config_class(annotation: Any):
    """The Config subclass of a field annotation (``X`` or ``X | None``), else None."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        annotation = inner[0] if len(inner) == 1 else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, Config) else None


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


@dataclass(frozen=True)
class Option:
    """One generated option: its argparse ``dest``, the field's dotted ``path`` in the config, the field's
    type ``annotation``, whether it repeats (``append``: one item per use) and whether it takes several values
    after one use (``many``: ``nargs="+"``)."""

    dest: str
    path: str
    annotation: Any
    repeat: bool = False
    many: bool = False


def _skipped(cls) -> set[str]:
    return set(cls.derived_fields) | set(cls.option_skip)


def add_config_options(parser: argparse.ArgumentParser, cls, base: Any | None = None, *,
                       title: str | None = None) -> list[Option]:
    """Add an option for every leaf field of the config ``cls`` and its nested configs; returns them.

    ``base`` (default ``cls().resolved()``) supplies the defaults shown in the help. Defaults are not set
    (``argparse.SUPPRESS``) so that only the options the user gave override a base config."""
    base = cls().resolved() if base is None else base
    options: list[Option] = []
    owners: dict[str, str] = {}

    def walk(klass, obj, path: str, prefix: str, skip: set[str], group_title: str) -> None:
        hints, docs = typing.get_type_hints(klass), field_docs(klass)
        group = parser.add_argument_group(group_title)
        nested = []
        for f in dataclasses.fields(klass):
            if f.name in skip:
                continue
            annotation = hints[f.name]
            child = _config_class(annotation)
            if child is not None:
                nested.append((f, child))
                continue
            dest = f.metadata.get("option", prefix + f.name)
            if dest in owners:
                raise RuntimeError(f"option --{dest} of {path}{f.name} clashes with {owners[dest]}")
            owners[dest] = path + f.name
            repeat, many = bool(f.metadata.get("repeat")), bool(f.metadata.get("many"))
            default = getattr(obj, f.name) if obj is not None else f.default
            shown = "; ".join(map(str, default)) if repeat else _shown(default)
            kind = _describe(get_args(annotation)[0]) + ", repeatable" if repeat else _describe(annotation)
            help_text = f"{docs.get(f.name, '')} [{kind}; default: {shown}]".strip().replace('%', '%%')
            if annotation is bool:
                group.add_argument(option_name(dest), dest=dest, action=argparse.BooleanOptionalAction,
                                   default=argparse.SUPPRESS, help=help_text)
            else:
                choices = get_args(annotation) if get_origin(annotation) is Literal else None
                group.add_argument(option_name(dest), dest=dest, default=argparse.SUPPRESS, metavar=f.name.upper(),
                                   choices=choices, help=help_text, action="append" if repeat else "store",
                                   nargs="+" if many else None)
            options.append(Option(dest, path + f.name, annotation, repeat, many))
        for f, child in nested:
            inner = {p.split(".", 1)[1] for p in skip if p.startswith(f.name + ".")} | _skipped(child)
            doc = (inspect.getdoc(child) or child.__name__).splitlines()[0]
            walk(child, getattr(obj, f.name, None) if obj is not None else None, f"{path}{f.name}.",
                 prefix + klass.option_prefixes.get(f.name, ""), inner, f"{path}{f.name}: {doc}")

    walk(cls, base, "", "", _skipped(cls), title or (inspect.getdoc(cls) or cls.__name__).splitlines()[0])
    return options


def _field_default(cls, name: str) -> Any:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _set(config, path: str, value: Any):
    """``config`` with ``path`` set; a nested config that is None (e.g. data taken from a preset) is first
    materialised from its owner's ``resolved()``; the owner's ``option_resets`` for the field apply."""
    head, _, rest = path.partition(".")
    if not rest:
        changes = {head: value}
        for reset in type(config).option_resets.get(head, ()):
            changes[reset] = _field_default(type(config), reset)
        return config.replace(**changes)
    child = getattr(config, head)
    if child is None:
        child = getattr(config.resolved(), head)
    return config.replace(**{head: _set(child, rest, value)})


def _reset(config, path: str):
    """``config`` with the field at dotted ``path`` back at its dataclass default (a None parent: unchanged)."""
    head, _, rest = path.partition(".")
    if not rest:
        return config.replace(**{head: _field_default(type(config), head)})
    child = getattr(config, head)
    return config if child is None else config.replace(**{head: _reset(child, rest)})


def reset_derived(config):
    """``config`` with every ``derived_fields`` entry, at every level, back at its default (``resolved()``
    then recomputes them from the fields they derive from)."""
    for path in config.derived_fields:
        config = _reset(config, path)
    return config.replace(**{f.name: reset_derived(getattr(config, f.name)) for f in dataclasses.fields(config)
                             if isinstance(getattr(config, f.name), Config)})


def apply_config_options(config, namespace: argparse.Namespace, options: list[Option]):
    """``config`` with every option the user gave applied (shallow fields first, so a new ``preset`` is in
    place before the data options), derived fields recomputed (``resolved()``). Unchanged when no option
    was given (a config loaded from a run reruns as recorded)."""
    given = [o for o in options if hasattr(namespace, o.dest)]
    if not given:
        return config.resolved()
    for option in sorted(given, key=lambda o: o.path.count(".")):
        raw = getattr(namespace, option.dest)
        if option.repeat:
            item = get_args(option.annotation)[0]
            value = tuple(parse_value(text, item, option.dest) for text in raw)
        elif option.many:
            value = tuple(v for text in raw for v in parse_value(text, option.annotation, option.dest))
        else:
            value = raw if isinstance(raw, bool) else parse_value(raw, option.annotation, option.dest)
        config = _set(config, option.path, value)
    return reset_derived(config).resolved()
