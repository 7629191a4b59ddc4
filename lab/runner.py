"""``asyncps run``: a config in, a run directory out.

``runs/<name>/`` receives ``config.toml`` (fully resolved), ``metrics.jsonl``,
``summary.json``, the plots, and ``model.pt``: the final parameters as
``{"dense": {name: tensor}, "tables": {name: tensor}}`` (``torch.load`` it). The backend decides only where shards and
workers run; the experiment, the metrics and the report are the same for all.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lab.backends.grpc import run_grpc
from lab.config import Config, to_toml
from lab.experiment import Experiment
from lab.backends.local import run_local
from lab.metrics import Metrics, finalize_metrics, summarize
from lab.reports.plots import plot_run
from lab.backends.sim import run_sim


def run_ray(experiment: Experiment, metrics: Metrics, progress: bool = True) -> tuple[dict, dict]:
    """The ``ray`` backend (``lab.backends.ray``), imported when a run asks for it: importing Ray takes half a second."""
    from lab.backends.ray import run_ray as run_on_ray

    return run_on_ray(experiment, metrics, progress)


BACKENDS = {"local": run_local, "sim": run_sim, "ray": run_ray, "grpc": run_grpc}


def run(config: Config, progress: bool = True) -> Path:
    """Run the experiment ``config`` describes; return its run directory."""
    if config.backend not in BACKENDS:
        raise ValueError(f"Invalid config value backend = {config.backend!r} (available here: {sorted(BACKENDS)})")
    experiment = Experiment.build(config)
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(to_toml(config))
    with Metrics(run_dir / "metrics.jsonl") as metrics:
        dense, tables = BACKENDS[config.backend](experiment, metrics, progress)
    finish(config, run_dir, metrics.start, dense, tables)
    return run_dir


def finish(config: Config, run_dir: Path, start: float, dense: dict, tables: dict) -> None:
    """The run directory's results: merged metrics, model.pt, summary.json, plots."""
    finalize_metrics(run_dir, start)
    torch.save({"dense": dense, "tables": tables}, run_dir / "model.pt")
    summary = summarize(run_dir, config.train.target_accuracy)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_run(run_dir)
