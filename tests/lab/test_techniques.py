"""Every technique in the README's table runs from TOML, changes the run, and re-runs from its config.toml.

The rows are read from the README itself, so a technique added there is
tested here, and a key that stops working fails its row.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from asyncps.lab.config import load_config
from asyncps.lab.runner import run

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


def test_a_plateau_cuts_the_shards_rate_when_the_validation_loss_stalls(tmp_path):
    config = load_config(None, SMALL + [f"out_dir={tmp_path}", "server.options.lr=0.5", "train.epochs=4",
                                        'server.schedule={kind = "plateau", factor = 0.5, patience = 0}'])
    run_dir = run(config, progress=False)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    cuts = [r["message"] for r in records if r["kind"] == "event" and r["message"].startswith("lr cut")]
    evaluations = [r for r in records if r["kind"] == "eval"]
    stalls = [b for a, b in zip(evaluations, evaluations[1:]) if b["val_loss"] >= a["val_loss"]]
    assert cuts and len(cuts) <= len(stalls)
    assert cuts[0].startswith("lr cut to 0.25 after ")


def test_a_local_schedule_changes_the_local_steps_and_a_constant_one_changes_nothing(tmp_path):
    def final(*schedule):
        config = load_config(None, SMALL + [f"out_dir={tmp_path}", "protocol.options.n_fetch=4",
                                            "protocol.options.local_lr=0.01", *schedule])
        return json.loads((run(config, progress=False) / "summary.json").read_text())["final"]

    plain = final()
    assert final('protocol.options.local_schedule={kind = "exponential", gamma = 1.0}') == plain
    assert final('protocol.options.local_schedule={kind = "exponential", gamma = 0.9}') != plain


@pytest.mark.parametrize("protocol, rate", [("easgd", "options={lr = 0.05}"), ("eamsgd", "lr=0.01")])
def test_an_elastic_workers_local_rate_follows_its_schedule(tmp_path, protocol, rate):
    def final(*schedule):
        config = load_config(None, SMALL + [f"out_dir={tmp_path}", f"protocol.name={protocol}",
                                            f"protocol.options.{rate}", *schedule])
        return json.loads((run(config, progress=False) / "summary.json").read_text())["final"]

    plain = final()
    assert final('protocol.options.schedule={kind = "exponential", gamma = 1.0}') == plain
    assert final('protocol.options.schedule={kind = "exponential", gamma = 0.9}') != plain
