"""Command-line options generated from typed dataclass configs (one mechanism for every field).

Each field of a (possibly nested) frozen dataclass becomes ``--field-name``; the
field's type annotation chooses the parser: int, float, str, bool
(``--flag/--no-flag``), ``Literal`` (choices), ``tuple[int, ...]`` and
``tuple[float, ...]`` (comma-separated), and ``tuple[X, ...]`` for classes with a
``parse(text, field)`` classmethod (comma-separated items), and ``X | None`` (``none``
for None). The field's
docstring (the string literal under it) becomes the help text.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

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
    if hasattr(annotation, "parse"):
        return annotation.parse(text, field)
    raise TypeError(f"no command-line parser for field {field} of type {annotation}")


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


def add_dataclass_options(parser: argparse.ArgumentParser, cls, *, group_title: str, skip: tuple[str, ...] = (),
                          defaults: Any | None = None, prefix: str = "") -> list[str]:
    """Add one option per field of ``cls``; returns the field names added. Defaults are not set
    (``argparse.SUPPRESS``) so that only options the user gave override the base config. ``prefix``
    (e.g. ``"corpus_"``) is put before every option and destination name (``--corpus-source``)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    group = parser.add_argument_group(group_title)
    added = []
    for f in dataclasses.fields(cls):
        if f.name in skip or dataclasses.is_dataclass(hints[f.name]):
            continue
        annotation = hints[f.name]
        default = getattr(defaults, f.name) if defaults is not None else f.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        help_text = f"{docs.get(f.name, '')} [{_describe(annotation)}; default: {shown}]".strip().replace('%', '%%')
        name = prefix + f.name
        if annotation is bool:
            group.add_argument(option_name(name), dest=name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        else:
            choices = get_args(annotation) if get_origin(annotation) is Literal else None
            group.add_argument(option_name(name), dest=name, default=argparse.SUPPRESS, metavar=f.name.upper(),
                               choices=choices, help=help_text)
        added.append(f.name)
    return added


def apply_options(config, namespace: argparse.Namespace, fields: list[str], prefix: str = ""):
    """A copy of ``config`` with the fields the user set on the command line (options added with ``prefix``)."""
    hints = typing.get_type_hints(type(config))
    changes = {}
    for name in fields:
        if hasattr(namespace, prefix + name):
            raw = getattr(namespace, prefix + name)
            changes[name] = raw if isinstance(raw, bool) else parse_value(raw, hints[name], prefix + name)
    return dataclasses.replace(config, **changes)


def parse_assignment(config, text: str, option: str = "edit"):
    """Apply one ``FIELD=VALUE`` assignment (e.g. ``anchor_weights=8,1,1,1``) to a dataclass config."""
    name, sep, value = text.partition("=")
    name = name.strip().replace("-", "_")
    hints = typing.get_type_hints(type(config))
    if not sep or name not in hints:
        raise ConfigError(option, f"{text!r} must be FIELD=VALUE with FIELD one of {', '.join(sorted(hints))}")
    annotation = hints[name]
    if annotation is bool:
        parsed = value.strip().lower() in ("1", "true", "yes")
    else:
        parsed = parse_value(value, annotation, name)
    return dataclasses.replace(config, **{name: parsed})
