"""Runs that differ only in their seed are one configuration.

``asyncps compare --seeds N`` runs each configuration once per seed, and the
report shows each configuration's figures over its runs: the mean, and the
spread as the sample standard deviation (``n - 1`` in the denominator).
A run that failed is left out of both; a run with no settings (no
``config.toml``) is a configuration of its own.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass

from asyncps.lab.reports.rundir import SKIPPED_KEYS
from asyncps.optim.validation import is_number

__all__ = ["Configuration", "configurations", "spread", "failed"]


@dataclass(frozen=True)
class Configuration:
    """One configuration: its name, and where its runs are in the report's list."""

    name: str
    runs: tuple[int, ...]


def configurations(runs: list) -> list[Configuration]:
    """The configurations of ``runs`` (each with a ``name`` and ``settings``), in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, run in enumerate(runs):
        shared = {key: value for key, value in run.settings.items() if key not in (*SKIPPED_KEYS, "seed")}
        key = json.dumps(shared, sort_keys=True, default=str) if run.settings else f"run {i}"
        groups.setdefault(key, []).append(i)
    return [Configuration(_name([runs[i] for i in members]), tuple(members)) for members in groups.values()]


def _name(runs: list) -> str:
    """A lone run's name; for several, their names without the ``-seed=N`` that ``compare --seeds`` adds."""
    if len(runs) == 1:
        return runs[0].name
    names = {re.sub(rf"-seed={re.escape(str(run.settings.get('seed')))}$", "", run.name) for run in runs}
    return names.pop() if len(names) == 1 else " / ".join(run.name for run in runs)


def failed(run) -> str | None:
    """Why the run failed (its summary's ``failed``), or None."""
    return run.summary.get("failed") or None


def spread(values: list) -> tuple[float, float | None, int] | None:
    """``(mean, sample standard deviation, count)`` of the numbers among ``values``
    (the deviation is None for one number); None when there is none."""
    numbers = [value for value in values if is_number(value)]
    if not numbers:
        return None
    return statistics.fmean(numbers), statistics.stdev(numbers) if len(numbers) > 1 else None, len(numbers)
