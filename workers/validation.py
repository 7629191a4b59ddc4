"""Checks shared by the worker modules, in ``optim.validation``'s wording:
``Invalid <what>: <value> (<the rule that says the fix>)``."""

from __future__ import annotations

import inspect
from numbers import Integral

from optim.validation import check

__all__ = ["check", "check_int", "check_bool", "check_options", "choose"]


def check_int(value, name: str, low: int = 1) -> None:
    """An integer ``>= low`` (bools excluded)."""
    ok = isinstance(value, Integral) and not isinstance(value, bool) and value >= low
    check(ok, name, value, f"{name} must be an integer >= {low}")


def check_bool(value, name: str) -> None:
    check(isinstance(value, bool), name, value, f"{name} must be True or False")


def choose(registry: dict, name: str, what: str):
    """``registry[name]``, or a ValueError listing the names there are."""
    check(isinstance(name, str) and name in registry, what, name, f"choose one of {sorted(registry)}")
    return registry[name]


def check_options(function, options: dict, what: str, skip: tuple[str, ...] = ()) -> None:
    """Every key of ``options`` is a keyword-only parameter of ``function``."""
    allowed = sorted(name for name, p in inspect.signature(function).parameters.items()
                     if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in skip)
    for key in options:
        check(key in allowed, f"option for {what}", key, f"allowed options: {allowed}")
