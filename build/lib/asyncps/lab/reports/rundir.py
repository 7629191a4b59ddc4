"""A run directory, read once for every reader: the plots, the report, compare.

``asyncps run`` writes ``config.toml`` (the resolved config), ``metrics.jsonl``
(read by :func:`lab.metrics.read_metrics`) and ``summary.json``.
:func:`load_run` reads all three into a :class:`Run`. Only ``metrics.jsonl``
is required: a picture or a table must not depend on the rest, so a missing
or unreadable config is empty, and a run killed before its summary was
written is summarized from what it recorded. :func:`failed_run` is a run
that ``asyncps compare`` saw fail: what it recorded, if anything, and why.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asyncps.lab.config import Config, TrainConfig, to_toml
from asyncps.lab.metrics import read_metrics, summarize
from asyncps.optim.validation import is_number

__all__ = ["Run", "load_run", "failed_run", "read_summary", "ids", "differing", "SKIPPED_KEYS"]

SKIPPED_KEYS = ("name", "out_dir")  # differ between runs by construction; a report names each run anyway


@dataclass(frozen=True)
class Run:
    """What the readers need of one run directory."""

    dir: Path
    name: str
    settings: dict      # config.toml flattened to dotted keys: {"server.options.lr": 0.1, ...}
    summary: dict       # summary.json (computed from metrics.jsonl when absent; {} when even that fails);
                        # its "failed" says why the run failed (None or absent: it did not)
    train: list[dict]   # the records of each kind, in file order, each with a number for its time
    pushes: list[dict]
    evals: list[dict]   # in time order
    events: list[dict]

    @property
    def metric(self) -> str:
        """``accuracy`` for a classifier, ``rmse`` for a regression run."""
        has = {key for record in self.evals for key in record}
        return "rmse" if "test_rmse" in has and "test_accuracy" not in has else "accuracy"

    @property
    def target(self) -> float | None:
        """The accuracy the run aims at (``train.target_accuracy``), if it says."""
        return next((value for value in (self.summary.get("target_accuracy"),
                                         self.settings.get("train.target_accuracy")) if is_number(value)), None)

    def series(self, records: list[dict], x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
        """The ``(x, y)`` of the records that have both as numbers, in order of ``x`` (ties in file order)."""
        points = sorted(((r[x], r[y]) for r in records if is_number(r.get(x)) and is_number(r.get(y))),
                        key=lambda point: point[0])
        return np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)

    def staleness(self, **match) -> np.ndarray:
        """The staleness of the pushes whose fields equal ``match`` (e.g. ``worker=3``)."""
        return np.array([r["staleness"] for r in self.pushes
                         if is_number(r.get("staleness")) and all(r.get(k) == v for k, v in match.items())], float)


def seconds(runs) -> str:
    """What the runs' times are: seconds of virtual time for simulated runs
    (backend sim), of wall time for the others."""
    virtual = {run.settings.get("backend") == "sim" for run in runs}
    return {frozenset({True}): "virtual time (s)", frozenset({False}): "time (s)"}.get(
        frozenset(virtual), "time (s; virtual for sim runs)")


def load_run(run_dir: str | Path) -> Run:
    """Read ``run_dir``; a ``ValueError`` naming it when it has no ``metrics.jsonl``."""
    run_dir = Path(run_dir)
    records = [r for r in read_metrics(run_dir) if isinstance(r, dict) and is_number(r.get("time"))]
    by_kind = {kind: [r for r in records if r.get("kind") == kind] for kind in ("train", "push", "eval", "event")}
    config = _read(tomllib.loads, run_dir / "config.toml")
    settings = _flatten(config)
    summary = read_summary(run_dir)
    if not summary:  # a run killed before it finished: summarize what it recorded
        try:
            summary = summarize(run_dir, settings.get("train.target_accuracy", TrainConfig.target_accuracy))
        except (ValueError, KeyError, TypeError):  # records summarize cannot read: a table shows dashes
            summary = {}
    name = config.get("name") if isinstance(config.get("name"), str) else run_dir.name
    return Run(run_dir, name, settings, summary, by_kind["train"], by_kind["push"],
               sorted(by_kind["eval"], key=lambda r: r["time"]), by_kind["event"])


def failed_run(config: Config, error: str) -> Run:
    """The run of ``config`` that failed with ``error``: what its directory
    holds, or, when it failed before it recorded anything, its settings alone."""
    if (config.run_dir / "metrics.jsonl").is_file():
        run = load_run(config.run_dir)
        return dataclasses.replace(run, summary={**run.summary, "failed": error})
    settings = _flatten(tomllib.loads(to_toml(config)))  # as its config.toml would read
    return Run(config.run_dir, config.name, settings, {"failed": error}, [], [], [], [])


def read_summary(run_dir: str | Path) -> dict:
    """``run_dir/summary.json``, or {} when absent or unreadable."""
    return _read(json.loads, Path(run_dir) / "summary.json")


def _read(parse, path: Path) -> dict:
    try:
        return parse(path.read_text())
    except (OSError, ValueError):  # absent, or not TOML / JSON (both decode errors are ValueErrors)
        return {}


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def ids(values) -> list:
    """Worker or shard ids, numbers in numeric order (10 after 9), then names."""
    found = {v for v in values if isinstance(v, (int, str)) and not isinstance(v, bool)}
    return sorted(found, key=lambda v: (isinstance(v, str), v if isinstance(v, int) else 0, str(v)))


def differing(runs: list[Run]) -> list[str]:
    """The dotted settings whose values are not the same in every run, in config order."""
    keys = list(dict.fromkeys(key for run in runs for key in run.settings))
    return [key for key in keys if key not in SKIPPED_KEYS
            and len({json.dumps(run.settings.get(key), sort_keys=True, default=str) for run in runs}) > 1]
