"""Runs a user launches with `asyncps run`: every scenario finishes and leaves
a complete run directory, and the options do what they say."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from asyncps.lab.cli.main import main
from asyncps.lab.config import load_config
from asyncps.lab.runner import run


def records(run_dir, kind):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [m for m in map(json.loads, lines) if m["kind"] == kind]


def run_with(tmp_path, *overrides):
    return run(load_config(None, [f"out_dir={tmp_path}", "train.epochs=1", *overrides]), progress=False)


SCENARIOS = {
    "downpour accruing 4 pushes, local steps": ["protocol.options={n_fetch = 2, n_push = 4, local_lr = 0.01}"],
    "sync with a backup worker": ["protocol.name=sync", "protocol.options={backup_workers = 1}"],
    "batch gradient descent": ["data.batch_size=full", "train.epochs=5"],
    "stochastic, easy to hard": ["data.batch_size=1", "data.curriculum=easy_to_hard", "train.epochs=0.2"],
    "mixed curriculum": ["data.curriculum=mixed"],
    "cnn with batch norm": ["model.name=cnn", "model.options={batch_norm = true}", "server.optimizer=adam",
                            "server.options={lr = 0.01}"],
    "matrix factorization": ["data.dataset=matrix_completion", "model.name=matrix_factorization",
                             "server.options={lr = 0.2}"],
    "sparse logistic regression": ["data.dataset=sparse_synthetic", "model.name=sparse_logreg",
                                   "data.options={num_features = 5000, num_examples = 2000}"],
}


@pytest.mark.parametrize("overrides", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_scenario_runs_to_a_complete_run_directory(tmp_path, overrides):
    run_dir = run_with(tmp_path, *overrides)
    for name in ("config.toml", "metrics.jsonl", "summary.json", "model.pt", "loss.png", "staleness.png"):
        assert (run_dir / name).exists(), name
    final = json.loads((run_dir / "summary.json").read_text())["final"]
    assert math.isfinite(final["test_loss"])
    first_loss = records(run_dir, "eval")[0]["test_loss"]
    assert final["test_loss"] <= first_loss * 1.05  # training did not make it worse


def test_backup_workers_drop_the_stragglers_gradients(tmp_path):
    run_dir = run_with(tmp_path, "protocol.name=sync", "protocol.options={backup_workers = 1}",
                       "cluster.shards=1")
    pushes = records(run_dir, "push")
    updates = json.loads((run_dir / "summary.json").read_text())["updates"]
    assert len(pushes) == len(records(run_dir, "train"))  # one shard: one push a step
    # With 4 workers and 1 backup, the third fresh gradient of a round applies it;
    # a gradient arriving for a round already applied is stale, and dropped.
    assert sum(p["applied"] for p in pushes) == updates
    fresh = [p for p in pushes if p["staleness"] == 0]
    stale = [p for p in pushes if p["staleness"] > 0]
    assert len(fresh) >= 3 * updates
    assert stale and not any(p["applied"] for p in stale)


def test_warm_start_lets_one_worker_train_alone_first(tmp_path):
    run_dir = run_with(tmp_path, "protocol.options={warmstart_steps = 20}", "train.epochs=2")
    others = [p for p in records(run_dir, "push") if p["worker"] != 0]
    assert others and min(p["version"] for p in others) >= 20
    alone = [p for p in records(run_dir, "push") if p["version"] < 20]
    assert alone and {p["worker"] for p in alone} == {0}


def test_early_stopping_ends_the_run_and_says_so(tmp_path):
    run_dir = run_with(tmp_path, "train.epochs=200", "train.early_stopping=true", "train.patience=2",
                       "train.min_delta=0.05", "train.eval_every=20")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert any("early stopping" in event for event in summary["events"])
    assert summary["train_steps"] < 4 * 200 * 10  # far fewer steps than 200 epochs


def test_quickstart_from_the_command_line(tmp_path, capsys):
    code = main(["run", "--no-progress", "--set", f"out_dir={tmp_path}"])
    assert code == 0
    run_dir = tmp_path / "quickstart"
    summary = json.loads((run_dir / "summary.json").read_text())
    # On four real threads the result varies with their interleaving: in 30 runs
    # here, 21 of them beside other quickstarts on 2 busy cores, the best
    # evaluation was 95.8-97.8% and the final one 95.3-97.5%; runs elsewhere have
    # missed the 95% target (a CI failure) and ended at 94.99%. The bounds keep
    # ten test images (of 359) below the worst seen; the target itself is checked
    # in virtual time, below, where the run is the same every time.
    assert summary["best_test_accuracy"] >= 0.93
    assert summary["final"]["test_accuracy"] >= 0.92
    assert summary["updates"] == 1200 and summary["failed"] is None
    for plot in ("loss.png", "accuracy.png", "staleness.png"):
        with Image.open(run_dir / plot) as image:
            assert image.size[0] > 600
    out = capsys.readouterr().out
    assert "test_accuracy" in out and str(run_dir) in out


def test_quickstart_in_virtual_time_reaches_its_target_the_same_every_time(tmp_path):
    # The sim backend draws the interleaving from seeded delays: this run is the
    # same whatever the load (its metrics byte-identical, as test_sim checks).
    assert main(["run", "--no-progress", "--backend", "sim", "--set", f"out_dir={tmp_path}"]) == 0
    summary = json.loads((tmp_path / "quickstart" / "summary.json").read_text())
    assert summary["time_to_target"] == 156.0  # virtual seconds
    assert summary["best_test_accuracy"] == summary["final"]["test_accuracy"] == 346 / 359
    assert summary["updates"] == 1200 and summary["failed"] is None


def test_bad_config_is_a_usage_error_naming_the_key(tmp_path, capsys):
    assert main(["run", "--no-progress", "--set", f"out_dir={tmp_path}", "--set", "cluster.workers=0"]) == 2
    assert "cluster.workers = 0" in capsys.readouterr().err


def test_the_console_says_when_and_why_early_stopping_ended_the_run(tmp_path, capsys):
    # No improvement counts (min_delta): the run stops at the second evaluation.
    overrides = [f"out_dir={tmp_path}", "train.early_stopping=true", "train.patience=1", "train.min_delta=1e9",
                 "train.eval_every=10"]
    assert main(["run", *(a for o in overrides for a in ("--set", o))]) == 0
    stopped = [e["message"] for e in records(tmp_path / "quickstart", "event")]
    assert len(stopped) == 1 and stopped[0].startswith("early stopping after ")
    assert f"quickstart: {stopped[0]}\n" in capsys.readouterr().err


def test_a_rerun_under_the_same_name_replaces_the_earlier_run_whole(tmp_path):
    config = load_config(None, [f"out_dir={tmp_path}", "train.epochs=1", "name=again"])
    run_dir = config.run_dir
    (run_dir / "workers").mkdir(parents=True)  # an earlier gRPC run's records, and its files
    (run_dir / "workers" / "worker-9.jsonl").write_text('{"time": 1.0, "kind": "train", "worker": 9, "step": 1}\n')
    for name in ("trace.jsonl", "model.pt.partial", "notes.txt", "report.html", "progress.png"):
        (run_dir / name).write_text("earlier")
    run(config, progress=False)
    # what `asyncps report` made of the earlier run
    assert not (run_dir / "report.html").exists() and not (run_dir / "progress.png").exists()
    assert {m["worker"] for m in records(run_dir, "train")} == {0, 1, 2, 3}  # nothing of the earlier run mixed in
    assert not (run_dir / "workers").exists() and not (run_dir / "trace.jsonl").exists()
    assert not list(run_dir.glob("*.partial"))
    assert (run_dir / "notes.txt").read_text() == "earlier"  # not a run's file: left alone
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["failed"] is None and (run_dir / "model.pt").exists()
    pushes = records(run_dir, "push")
    assert summary["shards"] == {str(s): {"acknowledged": n, "applied": n, "lost": 0}
                                 for s in (0, 1) for n in [sum(1 for p in pushes if p["shard"] == s)]}
