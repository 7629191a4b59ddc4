"""The shape of the tree: the dependency direction optim <- ps <- protocols <- workers <- lab
(protos is used by ps), and small modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["optim", "ps", "protocols", "workers", "lab"]  # each may import only those before it
ALLOWED = {package: set(ORDER[:i + 1]) | ({"protos"} if i >= ORDER.index("ps") else set())
           for i, package in enumerate(ORDER)}
MAX_LINES = 400


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & (set(ORDER) | {"protos"})


@pytest.mark.parametrize("package", ORDER)
def test_no_import_runs_against_the_dependency_direction(package):
    against = {str(path.relative_to(ROOT)): sorted(imported_packages(path) - ALLOWED[package])
               for path in modules(package)}
    assert {path: names for path, names in against.items() if names} == {}


def test_no_library_module_is_over_400_lines():
    long = {str(path.relative_to(ROOT)): n for package in [*ORDER, "protos"] for path in modules(package)
            if not path.name.endswith("_pb2.py") and (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
