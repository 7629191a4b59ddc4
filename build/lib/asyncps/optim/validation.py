"""Validation at the library's boundary: one wording for every refusal,
``Invalid <what>: <value> (<the rule that says the fix>)``."""

from __future__ import annotations

import inspect
import math
from numbers import Integral, Real

from asyncps.optim.plugins import PluginError, names_plugin, or_plugin


def check(ok: bool, what: str, value, rule: str) -> None:
    """Raise e.g. ``ValueError("Invalid learning rate: -1.0 (lr must be >= 0)")``."""
    if not ok:
        raise ValueError(f"Invalid {what}: {value!r} ({rule})")


def is_number(value) -> bool:
    """A finite real number (bools excluded: ``lr=True`` is a mistake, not 1.0)."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def check_in(value, low: float, high: float, what: str, name: str, *, high_open: bool = True) -> None:
    """``low <= value < high`` (or ``<= high`` when ``high_open`` is False)."""
    inside = is_number(value) and low <= value and (value < high if high_open else value <= high)
    bracket = ")" if high_open else "]"
    check(inside, what, value, f"{name} must be in [{low}, {high}{bracket}")


def check_nonnegative(value, what: str, name: str) -> None:
    check(is_number(value) and value >= 0, what, value, f"{name} must be >= 0")


def check_betas(betas) -> None:
    check(isinstance(betas, (tuple, list)) and len(betas) == 2, "betas", betas, "betas must be a pair (beta1, beta2)")
    for i, beta in enumerate(betas):
        check_in(beta, 0.0, 1.0, f"beta parameter at index {i}", f"betas[{i}]")


def is_int(value, low: int = 1) -> bool:
    """An integer >= ``low`` (bools excluded: ``steps=True`` is a mistake, not 1)."""
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= low


def check_int(value, name: str, low: int = 1) -> None:
    """``is_int``, or e.g. ``Invalid num_workers: 0 (num_workers must be an integer >= 1)``."""
    check(is_int(value, low), name, value, f"{name} must be an integer >= {low}")


def check_bool(value, name: str) -> None:
    check(isinstance(value, bool), name, value, f"{name} must be True or False")


def choose(registry: dict, name: str, what: str):
    """``registry[name]``, or a ValueError listing the names there are. A ``Registry``
    also takes a plugin by import path, ``"package.module:Name"`` (``optim.plugins``)."""
    if names_plugin(registry, name):
        try:
            return registry.interface.load(name)
        except PluginError as err:
            raise ValueError(f"Invalid {what}: {name!r} ({err})") from None
    check(isinstance(name, str) and name in registry, what, name,
          f"choose one of {sorted(registry)}{or_plugin(registry)}")
    return registry[name]


def check_options(function, options: dict, what: str, skip: tuple[str, ...] = ()) -> None:
    """Every key of ``options`` is a parameter ``function`` takes by keyword, other than
    the ones in ``skip`` (which the factory passes itself)."""
    by_keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    allowed = sorted(name for name, p in inspect.signature(function).parameters.items()
                     if p.kind in by_keyword and name not in skip)
    for key in options:
        check(key in allowed, f"option for {what}", key, f"allowed options: {allowed}")
