"""``asyncps report``: the pictures and one HTML page for one or more run directories.

``report(run_dirs, out)`` reads each run once (:func:`lab.reports.rundir.load_run`)
and hands them to ``write_report(runs, out)`` (which ``asyncps compare`` calls
with the runs it ran, failed ones included). That (re)makes each run's plots
(:mod:`lab.reports.plots`) and adds who lagged (:mod:`lab.reports.breakdown`),
all into the run directory; a run that failed before it recorded anything has
none. For several runs it also draws the overlays (:mod:`lab.reports.overlays`)
into ``out``, one colour per configuration (:mod:`lab.reports.configurations`:
runs that differ only in their seed). Then it writes ``out/report.html``
(:mod:`lab.reports.page`): every picture embedded, the settings the runs share
and those that differ, a table with one row per configuration (mean and
standard deviation over its seeds) when one ran on several seeds, and a table
with one row per run, a failed one marked with its error.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.colors

from asyncps.lab.reports.breakdown import plot_progress, plot_staleness_breakdown
from asyncps.lab.reports.configurations import configurations
from asyncps.lab.reports.overlays import plot_overlays, run_colour
from asyncps.lab.reports.page import Entry, page
from asyncps.lab.reports.plots import draw_run
from asyncps.lab.reports.rundir import SKIPPED_KEYS, Run, differing, load_run

__all__ = ["report", "write_report"]

CAPTIONS = {
    "accuracy.png": "Validation and test accuracy against time and updates applied.",
    "rmse.png": "Validation and test RMSE against time and updates applied.",
    "loss.png": "Each worker's training loss (smoothed) with the validation and test loss.",
    "staleness.png": "Staleness of every push, per worker, and between evaluations.",
    "progress.png": "Steps each worker completed over time, and its rate: a straggler lags and is red.",
    "staleness_breakdown.png": "Staleness distribution of each worker's pushes and of each shard's.",
}


def report(run_dirs: list[str | Path], out: str | Path | None = None) -> Path:
    """Plot each run, overlay several, and write ``out/report.html``; return its path.

    ``out`` defaults to the run directory for one run and ``runs/report`` for several.
    """
    runs = [load_run(d) for d in dict.fromkeys(Path(d) for d in run_dirs)]
    if not runs:
        raise ValueError("Invalid report: no run directories given (pass one or more directories asyncps run wrote)")
    return write_report(runs, Path(out) if out is not None else runs[0].dir if len(runs) == 1 else Path("runs/report"))


def write_report(runs: list[Run], out: Path) -> Path:
    """:func:`report` for runs already read."""
    out.mkdir(parents=True, exist_ok=True)
    groups = configurations(runs)
    colour = {i: matplotlib.colors.to_hex(run_colour(c)) for c, group in enumerate(groups) for i in group.runs}
    entries = [_entry(run, colour[i]) for i, run in enumerate(runs)]
    overlays = plot_overlays(runs, groups, out) if len(runs) > 1 else []
    keys = differing(runs)
    shared = {key: value for key, value in runs[0].settings.items() if key not in keys and key not in SKIPPED_KEYS}
    html_file = out / "report.html"
    html_file.write_text(page(entries, out, shared, keys, overlays, groups))
    return html_file


def _entry(run: Run, swatch: str) -> Entry:
    """The run's pictures drawn, and what the page shows of it."""
    pictures = []
    if (run.dir / "metrics.jsonl").is_file():  # else it failed before it recorded anything: nothing to draw
        loss, quality, staleness = draw_run(run)
        pictures = [(p, CAPTIONS[p.name]) for p in
                    (quality, loss, staleness, plot_progress(run), plot_staleness_breakdown(run))]
    events = [(event["time"], str(event.get("message", "event"))) for event in run.events]
    return Entry(run.name, run.dir, run.settings, run.summary, events, swatch, pictures)
