"""Lazy re-exports for package ``__init__`` modules (PEP 562).

A package lists ``name -> "module.path"`` (or ``"module.path:attribute"``) and gets a module
``__getattr__`` that imports the module on first use. Importing the package itself imports nothing
heavy, so ``import probsig_jax.theory.corpus`` never pays for sympy or diffrax, which only
``probsig_jax.theory.linear`` and the derivation need.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` resolving each exported name on first access.

    ``exports`` maps a public name to ``"module"`` (the name is that module's attribute of the same name,
    or the module itself when the name is the module's last component) or ``"module:attribute"``.
    """

    def __getattr__(name: str) -> Any:
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module_name, _, attribute = target.partition(":")
        module = importlib.import_module(module_name)
        if not attribute and module_name.rsplit(".", 1)[-1] == name:
            value = module
        else:
            value = getattr(module, attribute or name)
        globals_ = importlib.import_module(package).__dict__
        globals_[name] = value          # cache: the next access is a plain attribute lookup
        return value

    def __dir__() -> list[str]:
        return sorted(set(importlib.import_module(package).__dict__) | set(exports))

    return __getattr__, __dir__
