"""The config's schema, read from the dataclasses themselves: what ``asyncps config`` prints.

Each key of an experiment (``lab.config.Config``, or ``HogwildExperiment``)
gets its default, what is allowed and its meaning, each from the one place
that already says it, so the schema cannot drift from the config:

- the default is the dataclass field's;
- what is allowed is the section's own refusal of a value no key takes
  (``""``, then ``None``), e.g. ``Invalid config value cluster.workers = ''
  (must be an integer >= 1)``, so it is exactly what ``__post_init__`` checks;
- the meaning is the ``#`` comment beside the field in its source, with the
  comment lines aligned under it (read with ``ast`` and ``tokenize``);
- an open table (a ``dict`` field, whose keys are the user's) adds where its
  keys are documented, from :data:`OPEN_TABLES`.

:func:`undocumented` lists the keys with no comment; the tests require none.
"""

from __future__ import annotations

import ast
import inspect
import io
import textwrap
import tokenize
from dataclasses import MISSING, Field, fields, is_dataclass
from functools import cache
from typing import NamedTuple

from asyncps.lab.config_file import format_value
from asyncps.ps.delays import KINDS as DELAY_KINDS

__all__ = ["Key", "schema", "render", "undocumented", "meanings", "OPEN_TABLES"]

_TECHNIQUES = 'the README\'s table "Every technique of the seeds, from a config"'
_DELAYS = (f"kind ({' | '.join(DELAY_KINDS)}) and that kind's parameters, and slowdown = {{\"3\" = 10.0}}: "
           'ps/delay_models.py (a class per kind); the README\'s "Delays, virtual time, and side-by-side comparisons"')
OPEN_TABLES = {  # dotted key -> where the keys of that open table are documented
    "data.options": "the keyword-only arguments of the data set's loader in workers/datasets.py (or the plugin's)",
    "data.batch_schedule": f"factor and epochs, both (as above); {_TECHNIQUES}",
    "model.options": "the keyword-only arguments of the model's __init__ in workers/dense_models.py "
                     "(softmax, mlp, cnn) or workers/sparse_models.py (sparse_logreg, matrix_factorization) "
                     "(or the plugin's)",
    "protocol.options": 'the README\'s table under "The protocols", and the protocol\'s own file protocols/<name>.py '
                        '(or the plugin\'s)',
    "server.options": f"the optimizer's hyperparameters, named as torch.optim names them (optim/); {_TECHNIQUES}",
    "server.schedule": f"kind and its parameters: optim/schedule_spec.py; {_TECHNIQUES}",
    "delays.compute": _DELAYS, "delays.pull": _DELAYS, "delays.push": _DELAYS,
}


class Key(NamedTuple):
    key: str          # dotted, as --set takes it: "cluster.workers"
    default: str      # as TOML writes it: 4, "digits", {lr = 0.1}
    allowed: str      # what the config accepts, in its own words
    meaning: str      # the comment beside the field; "" when it has none
    documented: str   # an open table's: where its keys are documented; "" for other keys


def schema(root: type) -> list[tuple[str, list[Key]]]:
    """``root``'s keys, a (heading, keys) pair per table: the top-level keys, then each [section]."""
    tables = [("top-level keys", [_key(root, f, "") for f in fields(root) if not is_dataclass(f.default_factory)])]
    for section in fields(root):
        cls = section.default_factory
        if is_dataclass(cls):
            heading = (inspect.getdoc(cls) or f"[{section.name}]").split("\n\n")[0]  # its first paragraph
            heading = " ".join(heading.replace("``", "").split())
            tables.append((heading, [_key(cls, f, section.name) for f in fields(cls)]))
    return tables


def render(root: type, command: str = "asyncps run", width: int = 100) -> str:
    """The schema as ``asyncps config`` prints it, wrapped at ``width`` columns."""
    def wrap(text: str, indent: int, hang: int = 4) -> list[str]:
        return textwrap.wrap(text, width, initial_indent=" " * indent, subsequent_indent=" " * (indent + hang),
                             break_on_hyphens=False)

    lines = wrap(f"The config of {command}: every key, its default, what is allowed and what it means. A TOML "
                 "file sets the top-level keys first, then each [section]'s; --set section.key=value sets one.", 0, 0)
    for heading, keys in schema(root):
        lines += ["", *wrap(heading, 0, 0)]
        for key in keys:
            lines += wrap(f"{key.key} = {key.default}", 2) + wrap(key.meaning, 6)
            if key.allowed not in key.meaning:  # most comments say it already, in the same words
                lines += wrap(f"allowed: {key.allowed}", 6)
            if key.documented:
                lines += wrap(f"its keys: {key.documented}", 6)
    return "\n".join(lines)


def undocumented(root: type) -> list[str]:
    """The dotted keys of ``root`` with no meaning comment."""
    return [key.key for _, keys in schema(root) for key in keys if not key.meaning]


def _key(cls: type, f: Field, section: str) -> Key:
    dotted = f"{section}.{f.name}" if section else f.name
    default = f.default_factory() if f.default is MISSING else f.default
    owner = next(c for c in cls.__mro__ if f.name in inspect.get_annotations(c))
    return Key(dotted, format_value(default), _allowed(cls, f, dotted), meanings(owner).get(f.name, ""),
               OPEN_TABLES.get(dotted, ""))


def _allowed(cls: type, f: Field, dotted: str) -> str:
    """What ``cls`` says when ``f`` is given a value no key takes: its rule, e.g. "an integer >= 1"."""
    for probe in ("", None):
        try:
            cls(**{f.name: probe})
        except ValueError as err:
            prefix = f"Invalid config value {dotted} = {probe!r} ("
            message = str(err)
            if message.startswith(prefix) and message.endswith(")"):
                rule = message[len(prefix):-1]
                return rule.removeprefix("must be ").replace("choose one of:", "one of:", 1)
    declared = f.type if isinstance(f.type, str) else f.type.__name__
    return f"a value of type {declared}"  # no check refuses either probe: say the declared type


@cache
def meanings(cls: type) -> dict[str, str]:
    """Field name -> the ``#`` comment beside it in ``cls``'s source, joined with the comment-only lines
    that follow it indented past the field (a comment running on); only the fields ``cls`` declares."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    comments = {token.start[0]: token for token in tokenize.generate_tokens(io.StringIO(source).readline)
                if token.type == tokenize.COMMENT}
    found = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        parts = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
        line = node.end_lineno + 1
        while parts and line in comments and lines[line - 1].lstrip().startswith("#") \
                and comments[line].start[1] > node.col_offset:
            parts.append(comments[line])
            line += 1
        found[node.target.id] = " ".join(token.string.lstrip("#").strip() for token in parts)
    return found
