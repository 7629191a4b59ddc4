"""Validation at the library's boundary: one wording for every refusal,
``Invalid <what>: <value> (<the rule that says the fix>)``."""

from __future__ import annotations

import math
from numbers import Real


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
