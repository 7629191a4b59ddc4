"""asyncps from Python (a notebook, a script): run an experiment or compare several, and get the results.

::

    from asyncps.lab.api import run, compare

    result = run("experiments/quickstart.toml", backend="sim", overrides={"train.epochs": 2})
    result.summary["final"]["test_accuracy"]   # summary.json
    result.records("eval")                     # metrics.jsonl's evaluations, as dicts
    result.model()["dense"]                    # the final parameters: {name: tensor}

    runs = compare(sweep={"protocol.name": ["downpour", "sync"]}, backend="sim", out="runs/cmp")
    runs.report                                # runs/cmp/report.html; runs.runs: a RunResult each

:func:`run` is ``asyncps run`` and :func:`compare` is ``asyncps compare``: the
same configs, the same run directories, the same errors. An override is a
dotted key, as ``--set`` takes it, with a Python value:
``overrides={"server.options.lr": 0.05, "model.options.hidden": [64, 64]}``.
A key the config does not have is refused with the config's own
``ValueError``, which names the keys there are (``asyncps config`` lists them
all, with their defaults). A run that fails raises, as ``asyncps run`` fails;
a comparison goes on past a failed run and marks it (:attr:`RunResult.failed`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path

from asyncps.lab import runner
from asyncps.lab.config import Config, load_config
from asyncps.lab.config_file import format_value, load_tree, parse_value
from asyncps.lab.metrics import read_metrics
from asyncps.lab.reports.compare import compare as run_all, default_out, parse_sweep, plan
from asyncps.lab.reports.rundir import read_summary
from asyncps.optim.validation import is_int, is_number

__all__ = ["run", "compare", "RunResult", "CompareResult"]

KINDS = ("train", "push", "eval", "event", "final")  # of metrics.jsonl's records: lab.metrics says the first
                                                   # four; "final" is the shards' versions at the end


@dataclasses.dataclass(frozen=True, repr=False)
class RunResult:
    """One run directory, read when asked: ``dir``, the ``config`` it ran, ``summary`` (summary.json),
    ``records(kind)`` (metrics.jsonl), ``plots`` (its PNGs) and ``model()`` (model.pt)."""

    dir: Path
    config: Config
    failed: str | None = None  # why the run failed (summary.json's "failed"); None when it did not

    @classmethod
    def from_dir(cls, run_dir: str | Path) -> RunResult:
        """A run directory that ``asyncps run`` (or :func:`run`) wrote earlier."""
        run_dir = Path(run_dir)
        return cls(run_dir, load_config(run_dir / "config.toml"), read_summary(run_dir).get("failed"))

    @cached_property
    def summary(self) -> dict:
        """summary.json: final scores, run time, staleness, ... (``{"failed": ...}`` alone for a run that
        failed before it recorded anything)."""
        summary = read_summary(self.dir)
        return {**summary, "failed": self.failed} if self.failed else summary

    @cached_property
    def _records(self) -> list[dict]:
        return read_metrics(self.dir)

    def records(self, kind: str | None = None) -> list[dict]:
        """metrics.jsonl's records in file order, each a dict with ``time`` and ``kind``; only those of
        ``kind`` when given: train, push, eval, event or final (``pandas.DataFrame(result.records("eval"))``)."""
        if kind is None:
            return list(self._records)
        if kind not in KINDS:
            raise ValueError(f"Invalid record kind {kind!r} (choose one of: {', '.join(KINDS)})")
        return [record for record in self._records if record.get("kind") == kind]

    @property
    def plots(self) -> list[Path]:
        """The run's pictures: loss.png, accuracy.png, staleness.png, ..."""
        return sorted(self.dir.glob("*.png"))

    def model(self) -> dict:
        """The final parameters, ``{"dense": {name: tensor}, "tables": {name: tensor}}`` (model.pt)."""
        import torch

        path = self.dir / "model.pt"
        if not path.is_file():
            why = f"the run failed: {self.failed}" if self.failed else "it holds no final parameters"
            raise ValueError(f"Invalid run for model(): {path} does not exist ({why})")
        return torch.load(path, weights_only=True)

    def __repr__(self) -> str:
        return f"<RunResult {str(self.dir)!r}: {self._outcome()}>"

    def _outcome(self) -> str:
        if self.failed:
            return f"failed: {self.failed}"
        summary = self.summary
        run_time, staleness = summary.get("run_time"), summary.get("staleness", {}).get("mean")
        clock = " of virtual time" if summary.get("clock") == "virtual" else ""
        parts = [f"{summary.get('updates', '?')} updates"
                 + (f" in {run_time:.1f} s{clock}" if is_number(run_time) else ""),
                 ", ".join(f"{key} {value:.4g}" for key, value in summary.get("final", {}).items()
                           if key.startswith("test_") and is_number(value)),
                 f"mean staleness {staleness:.2f}" if is_number(staleness) else ""]
        return "; ".join(part for part in parts if part)


@dataclasses.dataclass(frozen=True, repr=False)
class CompareResult:
    """A comparison: its directory ``dir``, its ``report`` (report.html), and a :class:`RunResult` per run
    in ``runs``, in the order they ran (a failed run's ``failed`` says why)."""

    dir: Path
    report: Path
    runs: list[RunResult]

    @property
    def failures(self) -> list[RunResult]:
        return [result for result in self.runs if result.failed]

    def __repr__(self) -> str:
        head = (f"<CompareResult {str(self.dir)!r}: {len(self.runs)} runs, {len(self.failures)} failed; "
                f"report {str(self.report)!r}>")
        return "\n  ".join([head, *map(repr, self.runs)])


def run(config_or_path: str | Path | Config | None = None, *, backend: str | None = None, progress: bool = False,
        overrides: Mapping[str, object] | None = None, tensorboard: bool = False) -> RunResult:
    """Run one experiment, as ``asyncps run`` does, and return its :class:`RunResult`.

    ``config_or_path``: a TOML config file, a :class:`lab.config.Config` (e.g. an earlier result's
    ``config``), or None for the quickstart's defaults. ``backend``: local, sim, ray or grpc (default: the
    config's). ``overrides``: dotted keys and values, e.g. ``{"train.epochs": 2, "cluster.workers": 8}``,
    applied after the file as ``--set`` would. ``progress``: a progress bar on stderr. ``tensorboard``:
    TensorBoard scalars in ``<run>/tensorboard/`` (``lab.tensorboard``).
    """
    config = _load(config_or_path, _as_overrides(overrides, backend))
    return RunResult(runner.run(config, progress=progress, tensorboard=tensorboard), config)


def compare(configs: str | Path | list[str | Path] | None = None, *, sweep: Mapping[str, list] | None = None,
            seeds: int = 1, out: str | Path | None = None, overrides: Mapping[str, object] | None = None,
            backend: str | None = None, progress: bool = False) -> CompareResult:
    """Run several configurations and report them side by side, as ``asyncps compare`` does.

    ``configs``: TOML config files (one, a list, or None for the defaults), each a base. ``sweep``: dotted
    keys and their values, one run per value on every base, the cross product for several keys, e.g.
    ``{"server.options.lr": [0.03, 0.1]}`` (``"a+b"`` as a key sets both keys to each value). ``seeds``:
    each configuration on its config's seed and the next ``seeds - 1``. ``out``: the comparison's directory
    (default: runs/compare-<date>-<time>). ``overrides`` and ``backend``: as :func:`run`'s, for every run.
    ``progress``: progress bars, and a line per finished run.
    """
    if not is_int(seeds, 1):
        raise ValueError(f"Invalid seeds = {seeds!r} (must be an integer >= 1)")
    bases = [configs] if isinstance(configs, (str, Path)) else list(configs or [])
    out = Path(out) if out is not None else default_out()
    planned = plan(bases, _as_sweeps(sweep), _as_overrides(overrides, None), backend, out, seeds)
    report, failures = run_all(planned, out, progress=progress, echo=print if progress else _quiet)
    failed = dict(line.split(": ", 1) for line in failures)  # "<run name>: <error>"
    return CompareResult(out, report, [RunResult(config.run_dir, config, failed.get(config.name))
                                       for config in planned])


# -- from Python values to the command line's words ---------------------------------
def _load(config_or_path, overrides: list[str]) -> Config:
    if isinstance(config_or_path, Config):
        return load_tree(Config, dataclasses.asdict(config_or_path), overrides) if overrides else config_or_path
    if config_or_path is None or isinstance(config_or_path, (str, Path)):
        return load_config(config_or_path, overrides)
    raise ValueError(f"Invalid config: {config_or_path!r} (give a TOML file's path, a lab.config.Config, "
                     "or None for the defaults)")


def _as_overrides(overrides: Mapping[str, object] | None, backend: str | None) -> list[str]:
    """``{"train.epochs": 2}`` -> ``["train.epochs=2"]``, then ``backend=...`` as ``--backend`` adds it."""
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ValueError(f"Invalid overrides: {overrides!r} (give a dict of dotted keys to values, "
                         "e.g. {'train.epochs': 2})")
    return [f"{_key(key)}={_text(value)}" for key, value in (overrides or {}).items()] + \
        ([f"backend={backend}"] if backend is not None else [])


def _as_sweeps(sweep: Mapping[str, list] | None) -> list[tuple[str, list[str]]]:
    """``{"protocol.name": ["downpour", "sync"]}`` -> what ``--sweep protocol.name=downpour,sync`` gives."""
    if sweep is not None and not isinstance(sweep, Mapping):
        raise ValueError(f"Invalid sweep: {sweep!r} (give a dict of dotted keys to lists of values, "
                         "e.g. {'protocol.name': ['downpour', 'sync']})")
    sweeps = []
    for key, values in (sweep or {}).items():
        if not isinstance(values, (list, tuple)):
            raise ValueError(f"Invalid sweep of {key!r}: {values!r} (give a list of values, e.g. "
                             f"{{{key!r}: [{values!r}, ...]}})")
        sweeps.append(parse_sweep(f"{_key(key)}={','.join(_text(value) for value in values)}"))
    return sweeps


def _key(key) -> str:
    if not isinstance(key, str) or "=" in key:
        raise ValueError(f"Invalid config key {key!r} (a dotted key, e.g. 'server.options.lr')")
    return key


def _text(value) -> str:
    """A value as the command line writes it: a plain word bare (so run names read as the command line's:
    ``protocol.name=sync``), anything else as TOML (``"a,b"``, ``[64, 32]``, ``{lr = 0.1}``)."""
    if isinstance(value, str) and re.fullmatch(r"[\w.-]+", value, re.ASCII) and parse_value(value) == value:
        return value
    return format_value(value)


def _quiet(line: str) -> None:
    """A run's outcome line, unsaid: the CompareResult holds it."""
