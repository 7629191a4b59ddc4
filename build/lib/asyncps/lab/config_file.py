"""Reading an experiment's config: a TOML file and ``--set key=value`` overrides -> frozen dataclasses.

``load(root, path, overrides)`` builds ``root``, the kind of experiment
(``lab.config.Config``, or ``lab.config.HogwildExperiment``): a frozen
dataclass of top-level keys whose dataclass fields are its [sections], each
a frozen dataclass that checks its own values. Here every key is checked to
be one the dataclasses have; a refusal is a ``ValueError`` naming the dotted
key and the keys there are.

Layering: the file's keys replace the defaults key by key (a section the file
does not mention keeps its defaults; an open table (a ``dict`` field: ``options``,
a ``schedule``, one of ``delays``) replaces the default table whole), then each override sets one
dotted key, and may add keys inside an open table
(``server.options.momentum=0.9`` keeps the default lr;
``delays.push.kind=constant`` then ``delays.push.seconds=0.002`` builds a spec).
An override's value is read as TOML, except that a key declared a string takes
the text as written: ``--set name=2024`` names the run "2024".
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path

import tomli_w

__all__ = ["load", "load_tree", "read_toml", "parse_value", "format_value"]


def load(root: type, path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()):
    """``root`` (the kind of experiment) from its defaults, the file's keys, then the overrides.
    ``root.examples``: a ``key=value`` and a dotted key, for the errors of a bad override."""
    return load_tree(root, read_toml(Path(path)) if path is not None else {}, overrides)


def load_tree(root: type, keys: dict, overrides: list[str] | tuple[str, ...] = ()):
    """:func:`load` of a file's keys already read: ``keys`` as ``read_toml`` gives them (or as
    ``dataclasses.asdict`` gives a whole config)."""
    tree = asdict(root())
    for key, value in keys.items():
        if key in _sections(root) and isinstance(value, dict):
            tree[key].update(value)
        else:
            tree[key] = value
    _check_keys(root, tree)
    for override in overrides:
        _apply_override(root, tree, override)
    return _build(root, tree)


def _sections(root: type) -> dict[str, type]:
    """The [sections] of an experiment: its fields that are dataclasses themselves."""
    return {f.name: f.default_factory for f in fields(root) if is_dataclass(f.default_factory)}


def read_toml(path: Path) -> dict:
    """The TOML file ``path`` as a dict; a missing file or bad syntax is a ValueError saying which."""
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ValueError(f"Invalid config file: '{path}' (no such file)") from None
    except IsADirectoryError:
        inside = sorted(path.glob("*.toml"))
        hint = f"one of its files, e.g. {inside[0]}" if inside else "the path of a TOML file"
        raise ValueError(f"Invalid config file: '{path}' (a directory: give {hint})") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"Invalid config file {path}: {err} (fix the TOML syntax there)") from None


def _known_keys(root: type, section: str) -> list[str]:
    cls = root if section == "" else _sections(root)[section]
    return sorted(f.name for f in fields(cls))


def _unknown_key(root: type, section: str, key: str) -> ValueError:
    if section == "":
        hint = f"known top-level keys: {', '.join(_known_keys(root, ''))}"
    else:
        hint = f"known keys in [{section}]: {', '.join(_known_keys(root, section))}"
        if key in _known_keys(root, ""):
            hint += f"; top-level keys like {key!r} go before the first [section]"
    where = f"{section}.{key}" if section else key
    return ValueError(f"Invalid config key '{where}': unknown key ({hint})")


def _check_keys(root: type, tree: dict) -> None:
    sections = _sections(root)
    for key, value in tree.items():
        if key not in _known_keys(root, ""):
            raise _unknown_key(root, "", key)
        if key in sections and not isinstance(value, dict):
            raise ValueError(f"Invalid config value {key} = {value!r} (must be a table: [{key}])")
        for inner in value if key in sections else ():
            if inner not in _known_keys(root, key):
                raise _unknown_key(root, key, inner)


def _build(root: type, tree: dict):
    _check_keys(root, tree)
    sections = {name: cls(**tree[name]) for name, cls in _sections(root).items()}
    return root(**{key: value for key, value in tree.items() if key not in sections}, **sections)


def _apply_override(root: type, tree: dict, override: str) -> None:
    """Set one dotted key, e.g. ``server.options.lr=0.1``; keys may be created only inside an open table."""
    key_value, dotted_key = root.examples
    if not isinstance(override, str) or "=" not in override:
        raise ValueError(f"Invalid --set override: {override!r} (expected key=value, e.g. {key_value})")
    dotted, text = (part.strip() for part in override.split("=", 1))
    path = dotted.split(".")
    if "" in path:
        raise ValueError(f"Invalid --set override: {override!r} (expected a dotted key, e.g. {dotted_key})")
    node = tree
    for depth, key in enumerate(path):
        if key not in node and not (depth >= 2 and _is_open_table(root, path[0], path[1])):
            if depth >= 2:
                raise ValueError(f"Invalid --set override: {override!r} ({path[0]}.{path[1]} is a value, not a table)")
            raise _unknown_key(root, path[0] if depth else "", key)
        if depth == len(path) - 1:
            value = parse_value(text)
            node[key] = text if _holds_a_string(root, path) and not isinstance(value, str) else value
        else:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"Invalid --set override: {override!r} "
                                 f"({'.'.join(path[:depth + 1])} is a value, not a table)")


def _holds_a_string(root: type, path: list[str]) -> bool:
    """Whether the dotted key is a field declared ``str`` (a top-level key, or one of a section)."""
    if len(path) > 2 or (len(path) == 2 and path[0] not in _sections(root)):
        return False
    cls = root if len(path) == 1 else _sections(root)[path[0]]
    return any(f.name == path[-1] and f.type in ("str", str) for f in fields(cls))


def _is_open_table(root: type, section: str, key: str) -> bool:
    """Whose keys are the user's: a section's fields declared ``dict`` (the factories' ``options``,
    the schedules, the delay specs)."""
    cls = _sections(root).get(section)
    return cls is not None and any(f.name == key and f.type in ("dict", dict) for f in fields(cls))


def parse_value(text: str):
    """``text`` as a TOML value (``8``, ``0.1``, ``true``, ``[64, 32]``, ``"sync"``), else the plain string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def format_value(value) -> str:
    """``value`` as inline TOML text, which :func:`parse_value` reads back as ``value``: ``8``, ``"sync"``,
    ``[64, 32]``, ``{lr = 0.1}``. A ``ValueError`` for what TOML cannot hold (None, an object)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_format_key(key)} = {format_value(inner)}" for key, inner in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(inner) for inner in value) + "]"
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, (bool, int, float, str)):
        raise ValueError(f"Invalid config value {value!r}: TOML holds numbers, strings, booleans, lists and "
                         "tables (dicts) only")
    return tomli_w.dumps({"value": value}).removeprefix("value = ").rstrip("\n")


def _format_key(key) -> str:
    if not isinstance(key, str):
        raise ValueError(f"Invalid config key {key!r}: a table's keys are strings")
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else format_value(key)
