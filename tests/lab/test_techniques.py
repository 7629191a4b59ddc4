"""Every technique in the README's table runs from TOML, changes the run, and re-runs from its config.toml.

The rows are read from the README itself, so a technique added there is
tested here, and a key that stops working fails its row.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lab.config import load_config
from lab.runner import run

README = Path(__file__).parents[2] / "README.md"
# A small run in virtual time: 2 workers, 2 epochs of the digits, an MLP of 32 units, an evaluation every 10 updates.
SMALL = ["backend=sim", "cluster.workers=2", "train.epochs=2", "train.eval_every=10", "model.options.hidden=[32]"]


def technique_rows() -> list[tuple[str, list[str]]]:
    """(technique, its TOML lines) for each row of the README's technique table."""
    text = README.read_text()
    section = text.split("### Every technique of the seeds, from a config", 1)[1].split("\n### ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and "`" in cells[1]:
            rows.append((cells[0], [span for span in re.findall(r"`([^`]+)`", cells[1]) if " = " in span]))
    return rows


ROWS = technique_rows()


def run_toml(directory: Path, name: str, lines: list[str]) -> dict:
    path = directory / f"{name}.toml"
    path.write_text("\n".join([f'name = "{name}"', f'out_dir = "{directory}"', *lines]) + "\n")
    summary = json.loads((run(load_config(path, SMALL), progress=False) / "summary.json").read_text())
    assert summary["failed"] is None
    return summary


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> dict:
    return run_toml(tmp_path_factory.mktemp("baseline"), "baseline", [])


def test_the_readme_lists_every_seed_technique():
    assert len(ROWS) >= 30 and all(lines for _, lines in ROWS)


@pytest.mark.parametrize("technique, lines", ROWS, ids=[t for t, _ in ROWS])
def test_technique_runs_from_toml_changes_the_run_and_reruns_from_its_config(tmp_path, baseline, technique, lines):
    summary = run_toml(tmp_path, "technique", lines)
    assert summary["final"] != baseline["final"]  # the key did something
    rerun_dir = run(load_config(tmp_path / "technique" / "config.toml"), progress=False)
    assert json.loads((rerun_dir / "summary.json").read_text())["final"] == summary["final"]
