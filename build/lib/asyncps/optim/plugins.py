"""A user's own model, data set, protocol, optimizer or delay model, named by import path.

Wherever a registered name is taken (``model.name = "mlp"``,
``optim.create("adam")``), an import path ``"package.module:Name"`` names
the user's own: the attribute ``Name`` (``Outer.Inner`` for a nested one) of
the module ``package.module``, imported with importlib. Every registry lookup
goes through :func:`optim.validation.choose`, and every config check of such
a key through ``lab.config``; both load a plugin with :meth:`Interface.load`,
here, and nowhere else.

The current working directory is importable, first on ``sys.path``, as it is
for ``python -m`` (and uvicorn's ``"app:app"``): ``asyncps run`` in a project
directory finds its ``mypkg/``. The processes a run starts see it too: the
grpc backend's are forks handed this process's ``sys.path``; Ray adds the
driver's working directory to its workers' ``sys.path``; ``asyncps serve``,
``work`` and ``evaluate`` load the config, and so the plugin, themselves.

A :class:`Registry` is a dict of one kind's built-in entries by name, with
the :class:`Interface` a plugin of that kind must meet. A plugin is checked
against it when it is loaded, and refused with one line that says what was
expected (:class:`PluginError`).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from dataclasses import dataclass

__all__ = ["Interface", "Registry", "PluginError", "names_plugin", "or_plugin", "FORM", "IMPORT_PATH"]

FORM = "'package.module:Name'"
IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class PluginError(ValueError):
    """Why a plugin was refused, in one line: ``mypkg.nets has no Foo``."""


@dataclass(frozen=True)
class Interface:
    """What a plugin of one kind must be.

    ``what`` names it in messages (``"a workers.Model subclass"``). A class
    plugin subclasses ``base`` (None: any callable, e.g. a function) and
    defines each attribute of ``defines`` itself, rather than inheriting the
    base's placeholder (a tuple there: one of them will do). ``takes``: the
    parameters the factory passes it by name, each of which it must have;
    ``call`` says the whole call, for the message when one is missing.
    """

    what: str
    base: type | None = None
    defines: tuple[str | tuple[str, ...], ...] = ()
    takes: tuple[str, ...] = ()
    call: str = ""

    def load(self, path: str):
        """The object ``path`` names, checked against this interface; a :class:`PluginError` if it is not one."""
        if not (isinstance(path, str) and IMPORT_PATH.fullmatch(path)):
            raise PluginError(f"an import path is {FORM}")
        module_name, attribute = path.split(":")
        found = _attribute(_module(module_name), attribute)
        if self.base is not None:
            if not (isinstance(found, type) and issubclass(found, self.base)):
                raise PluginError(f"{path} is not {self.what}")
            for names in self.defines:
                names = (names,) if isinstance(names, str) else names
                if not any(_defines(found, self.base, name) for name in names):
                    listed = ", ".join(n if isinstance(n, str) else " or ".join(n) for n in self.defines)
                    raise PluginError(f"{path} does not define {' or '.join(names)} ({self.what} must define {listed})")
        elif not callable(found):
            raise PluginError(f"{path} is not {self.what}")
        parameters = inspect.signature(found).parameters
        for name in self.takes:
            if name not in parameters:
                raise PluginError(f"{path} does not take {name}: it is called as {self.call}")
        return found


class Registry(dict):
    """The built-in entries of one kind by name, and the :class:`Interface` of its plugins. Entries
    registered here from Python (``MODELS["mine"] = Mine``) are looked up like the built-in ones."""

    def __init__(self, interface: Interface, entries: dict):
        super().__init__(entries)
        self.interface = interface


def names_plugin(registry, name) -> bool:
    """Whether ``name`` is meant as a plugin of ``registry``'s kind: an import path, not a name."""
    return isinstance(registry, Registry) and isinstance(name, str) and ":" in name


def or_plugin(registry) -> str:
    """What a refusal that lists ``registry``'s names adds: that a plugin is taken too."""
    return f", or a plugin {FORM}" if isinstance(registry, Registry) else ""


def _module(name: str):
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        # Only the module asked for, or a package on its way: a module missing inside the user's
        # own code is that code's error, and is raised with its traceback.
        if err.name is None or not (name == err.name or name.startswith(err.name + ".")):
            raise
        raise PluginError(f"no module named {err.name!r}") from None


def _attribute(module, attribute: str):
    found = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise PluginError(f"{module.__name__} has no {attribute}")
        found = getattr(found, part)
    return found


def _defines(cls: type, base: type, name: str) -> bool:
    """Whether ``name`` is set by ``cls`` or a class between it and ``base``, not by ``base`` or above."""
    mro = cls.__mro__
    return any(name in vars(klass) for klass in mro[:mro.index(base)])
