"""The config's checks, one small function per kind of value: each refusal is a ``ValueError`` naming the
dotted key, the value, and what is allowed (``lab.config``'s sections call them from ``__post_init__``)."""

from __future__ import annotations

from asyncps.optim.plugins import PluginError, names_plugin, or_plugin
from asyncps.optim.validation import is_int, is_number

__all__ = ["require", "integer", "number", "boolean", "string", "one_of", "is_toml", "table"]


def require(section, name: str, ok: bool, rule: str) -> None:
    if not ok:
        where = f"{section.section}.{name}" if section.section else name
        raise ValueError(f"Invalid config value {where} = {getattr(section, name)!r} ({rule})")


def integer(section, name: str, low: int = 1) -> None:
    require(section, name, is_int(getattr(section, name), low), f"must be an integer >= {low}")


def number(section, name: str, positive: bool = False) -> None:
    value = getattr(section, name)
    ok = is_number(value) and (value > 0 if positive else value >= 0)
    require(section, name, ok, "must be a positive number" if positive else "must be a number >= 0")


def boolean(section, name: str) -> None:
    require(section, name, isinstance(getattr(section, name), bool), "must be true or false")


def string(section, name: str) -> None:
    value = getattr(section, name)
    require(section, name, isinstance(value, str), f'must be a string: quote it, {name} = "{value}"')


def one_of(section, name: str, choices) -> None:
    value = getattr(section, name)
    if names_plugin(choices, value):  # a registry's plugin, package.module:Name: loaded and checked here
        try:
            choices.interface.load(value)
        except PluginError as err:
            require(section, name, False, str(err))
        return
    require(section, name, isinstance(value, str) and value in choices,
             f"choose one of: {', '.join(sorted(choices))}{or_plugin(choices)}")


def is_toml(value) -> bool:
    """A value TOML can write and read back as itself: what a run's config.toml must hold to re-run it."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_toml(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(is_toml(v) for v in value)
    return isinstance(value, (bool, int, float, str))


def table(section, name: str, example: str) -> None:
    require(section, name, isinstance(getattr(section, name), dict), f"must be a table, e.g. {example}")
    require(section, name, is_toml(getattr(section, name)),
             "must hold only numbers, strings, booleans, lists and tables, so that the run's config.toml "
             "re-runs it: a learning-rate schedule is a table, e.g. server.schedule = {kind = \"step\", "
             "step_size = 100}")
