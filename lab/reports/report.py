"""``asyncps report``: the pictures and one HTML page for one or more run directories.

``report(run_dirs, out)`` reads each run once (:func:`lab.reports.rundir.load_run`),
(re)makes its plots (:mod:`lab.reports.plots`) and adds who lagged
(:mod:`lab.reports.breakdown`), all into the run directory. For several runs
it also draws the overlays (:mod:`lab.reports.overlays`) into ``out``. Then
it writes ``out/report.html`` (:mod:`lab.reports.page`): every picture
embedded, the settings the runs share and those that differ, and a table
with one row per run.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.colors

from lab.reports.breakdown import plot_progress, plot_staleness_breakdown
from lab.reports.overlays import plot_overlays, run_colour
from lab.reports.page import Entry, page
from lab.reports.plots import draw_run
from lab.reports.rundir import SKIPPED_KEYS, Run, differing, load_run

__all__ = ["report"]

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
    out = Path(out) if out is not None else runs[0].dir if len(runs) == 1 else Path("runs/report")
    out.mkdir(parents=True, exist_ok=True)
    entries = [_entry(run, matplotlib.colors.to_hex(run_colour(i))) for i, run in enumerate(runs)]
    overlays = plot_overlays(runs, out) if len(runs) > 1 else []
    keys = differing(runs)
    shared = {key: value for key, value in runs[0].settings.items() if key not in keys and key not in SKIPPED_KEYS}
    html_file = out / "report.html"
    html_file.write_text(page(entries, out, shared, keys, overlays))
    return html_file


def _entry(run: Run, swatch: str) -> Entry:
    """The run's pictures drawn, and what the page shows of it."""
    loss, quality, staleness = draw_run(run)
    pictures = [(p, CAPTIONS[p.name]) for p in
                (quality, loss, staleness, plot_progress(run), plot_staleness_breakdown(run))]
    events = [(event["time"], str(event.get("message", "event"))) for event in run.events]
    return Entry(run.name, run.dir, run.settings, run.summary, events, swatch, pictures)
