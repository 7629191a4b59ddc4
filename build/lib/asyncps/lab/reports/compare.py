"""``asyncps compare``: several configurations, each on one seed or several, then one report.

``plan(configs, sweeps, overrides, backend, out, seeds)`` turns the command
line into the list of run configs, all loaded and checked before anything
runs (what only building a run's experiment finds, such as an optimizer's
negative learning rate, fails that run):

- each CONFIG file (none: the defaults) is a base;
- each ``--sweep key=v1,v2`` multiplies the runs: one per value, the value
  overriding ``key`` on every base (several sweeps make the cross product);
  ``--sweep a+b=v1,v2`` sets both keys to each value together (Downpour's
  ``n_fetch`` and ``n_push`` as one communication period);
- ``--set`` overrides and ``--backend`` apply to every run, before the sweep;
- ``--seeds N`` runs each configuration N times, on its config's seed ``s``
  and on ``s + 1`` ... ``s + N - 1`` (so ``--set seed=10 --seeds 3`` runs seeds
  10, 11 and 12), and adds ``-seed=<seed>`` to each run's name.

Each run is named ``<base name>-<key>=<value>...`` (or keeps its config's name
when nothing is swept) and lands in ``out/<name>``. The seed is otherwise
whatever the configs say: the defaults and a swept base give every run the
same one, and so the same data order, initial parameters and delay schedule.

``compare(configs, out)`` runs them one after another. A run that fails
(diverges, say) does not end the comparison: its error is said at once, and
the report marks the run with it. Then it writes ``out/report.html`` with
:func:`lab.reports.report.write_report`, which gives each configuration run
on several seeds its mean and standard deviation
(:mod:`lab.reports.configurations`).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import time
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from asyncps.lab.config import Config, load_config
from asyncps.lab.reports.rundir import Run, failed_run, load_run, read_summary
from asyncps.lab.runner import fresh_run_dir, run

__all__ = ["parse_sweep", "plan", "compare", "default_out", "SWEEP_FORM"]

SWEEP_FORM = "KEY=V1,V2,..., e.g. --sweep protocol.name=downpour,sync"
UNSWEEPABLE = ("name", "out_dir")  # compare sets both for every run


def parse_sweep(text: str) -> tuple[str, list[str]]:
    """``"key=v1,v2"`` -> ``("key", ["v1", "v2"])``. Commas inside ``[...]``,
    ``{...}`` or quotes stay in the value: ``model.options.hidden=[64],[64,64]``."""
    key, equals, values_text = text.partition("=")
    key = key.strip()
    values = _split_top_level(values_text)
    if not equals or not key or any(part == "" for part in re.split(r"[.+]", key)) or " " in key:
        raise ValueError(f"invalid sweep {text!r}: expected {SWEEP_FORM}")
    if not values or any(value == "" for value in values):
        raise ValueError(f"invalid sweep {text!r}: expected one or more comma-separated values after "
                         f"'{key}=', e.g. --sweep {key}=a,b")
    for joint in key.split("+"):
        if joint in UNSWEEPABLE:
            raise ValueError(f"invalid sweep {text!r}: compare sets {joint} for every run itself; sweep another key")
    return key, values


def _split_top_level(text: str) -> list[str]:
    parts, depth, quote, current = [], 0, None, []
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    return [] if parts == [""] else parts


def plan(configs: list[str | Path], sweeps: list[tuple[str, list[str]]], overrides: list[str] = (),
         backend: str | None = None, out: str | Path = "runs/compare", seeds: int = 1) -> list[Config]:
    """The configs of a comparison, each named and placed under ``out``, each
    configuration's ``seeds`` runs together; ``ValueError`` for a bad one."""
    keys = [key for key, _ in sweeps]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"--sweep {repeated[0]} is given twice; put all its values in one --sweep "
                         f"{repeated[0]}=v1,v2,...")
    if seeds > 1 and any("seed" in key.split("+") for key in keys):
        raise ValueError(f"--seeds {seeds} and --sweep seed both choose the seeds; give one of them")
    shared = list(overrides) + ([f"backend={backend}"] if backend else [])
    combinations = list(itertools.product(*([(key, value) for value in values] for key, values in sweeps)))
    planned = []  # (config, base path or None)
    for base in configs or [None]:
        base_name = load_config(base, shared).name
        for combination in combinations:
            config = load_config(base, shared + [f"{joint}={value}" for key, value in combination
                                                 for joint in key.split("+")])
            label = "-".join(f"{key}={value}" for key, value in combination)
            planned.append((dataclasses.replace(config, name=_directory_name(base_name, label)), base))
    if len(planned) * seeds < 2:
        raise ValueError("nothing to compare: give two or more CONFIG files, a --sweep with two or more values "
                         f"({SWEEP_FORM}), or --seeds 2 or more")
    names = _distinct([config.name for config, _ in planned], [base for _, base in planned])
    named = [dataclasses.replace(config, name=name, out_dir=str(out)) for (config, _), name in zip(planned, names)]
    if seeds == 1:
        return named
    return [dataclasses.replace(config, seed=seed, name=f"{config.name}-seed={seed}")
            for config in named for seed in range(config.seed, config.seed + seeds)]


def _directory_name(base: str, label: str) -> str:
    """``<base>-<label>`` with anything but letters, digits and ``. _ = + , -`` made ``_``."""
    name = f"{base}-{label}" if label else base
    name = re.sub(r"[^A-Za-z0-9._=+,-]+", "_", name)
    return name if name.strip(".") else f"run{name}"


def _distinct(names: list[str], bases: list) -> list[str]:
    """Names made unique: a repeated one gets its config file's stem, then a number."""
    if len(set(names)) == len(names):
        return names
    named = [f"{name}-{_directory_name(Path(base).stem, '')}" if base is not None and names.count(name) > 1
             else name for name, base in zip(names, bases)]
    seen: dict[str, int] = {}
    unique = []
    for name in named:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if named.count(name) == 1 else f"{name}-{seen[name]}")
    return unique


def default_out(now: float | None = None) -> Path:
    return Path("runs") / time.strftime("compare-%Y%m%d-%H%M%S", time.localtime(now))


def describe(run_dir: Path) -> str:
    """One line: what a finished run reached."""
    summary = read_summary(run_dir)
    scores = ", ".join(f"{k} {v:.4g}" for k, v in summary["final"].items() if k.startswith("test_"))
    clock = " of virtual time" if summary.get("clock") == "virtual" else ""
    return (f"{Path(run_dir).name}: {summary['updates']} updates in {summary['run_time']:.1f} s{clock}; {scores}; "
            f"mean staleness {summary['staleness']['mean'] or 0:.2f}")


def compare(configs: list[Config], out: str | Path, progress: bool = True,
            echo: Callable[[str], None] = tqdm.write) -> tuple[Path, list[str]]:
    """Run ``configs`` one after another, going on past a run that fails, then
    write ``out/report.html``. Return its path and, for each failed run, a line
    naming it and its error. ``echo`` says how each run ended."""
    from asyncps.lab.reports.report import write_report  # matplotlib: only when there is something to draw

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    failures = []
    with tqdm(total=len(configs), unit="run", desc="compare", disable=not progress) as bar:
        for i, config in enumerate(configs, start=1):
            try:
                fresh_run_dir(config.run_dir)  # a run that fails at its start leaves no earlier run's files to read
                run(config, progress=progress)
            except Exception as err:  # the others still run; the report and the exit code say this one failed
                error = f"{type(err).__name__}: {err}"
                failures.append(f"{config.name}: {error}")
                runs.append(failed_run(config, error))
                echo(f"[{i}/{len(configs)}] {config.name}: failed: {error}")
                bar.set_postfix(failed=len(failures), refresh=False)
            else:
                runs.append(load_run(config.run_dir))
                echo(f"[{i}/{len(configs)}] {describe(config.run_dir)}")
            bar.update()
    return write_report(runs, out), failures
