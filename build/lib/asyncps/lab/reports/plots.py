"""Pictures of one run, from its run directory.

``plot_run(run_dir)`` reads the run directory (:func:`lab.reports.rundir.load_run`;
``draw_run`` takes one already read) and writes, into it:

- ``loss.png``: each worker's training loss (smoothed, thin) with the
  validation and test loss, against time and against updates applied;
- ``accuracy.png``: validation and test accuracy, with the target accuracy
  (``train.target_accuracy`` in ``summary.json`` or ``config.toml``) dashed;
  for a regression model (no accuracy in the records) ``rmse.png`` instead;
- ``staleness.png``: the staleness of every push, per worker, and over time.

``event`` records ("early stopping", "worker 2 died") are marked on the time
axes. A kind with no records leaves its panel with a note saying so.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from asyncps.lab.reports.figures import figure, id_ticks, legend_below, log_if_positive, note, save, staleness_bins
from asyncps.lab.reports.rundir import Run, ids, load_run, seconds
from asyncps.optim.validation import is_number

__all__ = ["plot_run", "draw_run"]

# Held-out curves in black and grey, so no worker's colour is mistaken for one.
VAL, TEST, TARGET, EVENT = "black", "#6e6e6e", "#2e8b57", "#7f7f7f"
MAX_WORKER_COLOURS = 10  # beyond this, per-worker curves share one grey: 64 colours read as noise
EVENT_LABEL = 40  # characters of an event's label along its line: about the height of a panel


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write ``loss.png``, ``accuracy.png`` (or ``rmse.png``) and ``staleness.png`` into ``run_dir``."""
    return draw_run(load_run(run_dir))


def draw_run(run: Run) -> list[Path]:
    """:func:`plot_run` for a run directory already read."""
    return [_plot_loss(run), _plot_quality(run), _plot_staleness(run)]


# -- drawing helpers -------------------------------------------------------------
def _figure(run: Run, what: str, panels: int, width: float = 6.0):
    """A figure titled with the run's name, ``what`` it shows, and the run's setup."""
    backend = run.settings.get("backend")
    clock = "virtual time" if backend == "sim" else (f"{backend} backend" if backend else None)
    workers, shards = run.settings.get("cluster.workers"), run.settings.get("cluster.shards")
    parts = [run.settings.get("protocol.name"), workers and f"{workers} worker{'s' * (workers != 1)}",
             shards and f"{shards} shard{'s' * (shards != 1)}", run.settings.get("server.optimizer"), clock]
    setup = ", ".join(str(part) for part in parts if part)
    return figure(f"{run.name}: {what}" + (f"\n{setup}" if setup else ""), panels, width)


def _smooth(y: np.ndarray) -> np.ndarray:
    """A trailing mean over about 1/25 of the curve: light enough to keep the shape, enough to see a trend."""
    window = int(np.clip(len(y) // 25, 1, 50))
    sums = np.cumsum(np.concatenate([[0.0], y]))
    ends = np.arange(1, len(y) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def _mark_events(ax, run: Run, at: str = "top") -> None:
    """A dotted vertical line per event, labelled along it at the ``top`` or ``bottom`` (where the curves are not).
    A long label (a failure's whole error) is cut to fit the panel, not laid out around it: the report
    gives each event in full."""
    y, align = (0.98, "top") if at == "top" else (0.02, "bottom")
    for event in run.events:
        ax.axvline(event["time"], color=EVENT, linestyle=":", linewidth=1.2, zorder=1)
        label = str(event.get("message", "event"))
        ax.text(event["time"], y, label if len(label) <= EVENT_LABEL else label[:EVENT_LABEL - 1] + "\u2026",
                rotation=90, ha="right", va=align, fontsize=8, color="#333333", transform=ax.get_xaxis_transform(),
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.75, "pad": 1}, clip_on=True,
                in_layout=False)


def _legend_under(ax) -> None:
    """The panel's own legend, under its axis label, so it never covers a bar or a curve."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8, frameon=False)


def _draw_held_out(ax, val, test) -> None:
    """Validation and test curves, each only if it has points (an empty curve would still get a legend entry)."""
    if len(val[0]):
        ax.plot(*val, color=VAL, linewidth=2, marker="o", markersize=3, label="validation")
    if len(test[0]):
        ax.plot(*test, color=TEST, linewidth=1.6, linestyle="--", marker="s", markersize=3, label="test")


# -- loss.png --------------------------------------------------------------------
def _plot_loss(run: Run) -> Path:
    fig, axes = _figure(run, "loss", 2)
    curves = _train_curves(run)
    clock = run.series(run.evals, "time", "updates")  # evaluations count the updates applied by their time
    counted = len(clock[0]) > 0

    def updates_at(times: np.ndarray) -> np.ndarray:
        return np.interp(times, np.concatenate([[0.0], clock[0]]), np.concatenate([[0.0], clock[1]]))

    panels = ((axes[0], "time", seconds([run]), lambda t: t),
              (axes[1], "updates", "updates applied (train curves: interpolated from time)",
               updates_at if counted else None))
    for ax, x, xlabel, place in panels:
        ax.set_title("against time" if x == "time" else "against updates applied")
        val, test = run.series(run.evals, x, "val_loss"), run.series(run.evals, x, "test_loss")
        train = curves if place is not None else []
        if not train and not len(val[0]) and not len(test[0]):
            note(ax, "no eval records: nothing counts the updates applied" if x == "updates" and not counted
                  else "no train or eval records")
            continue
        for label, colour, t, loss in train:
            ax.plot(place(t), loss, color=colour, linewidth=0.8, alpha=0.7, label=label,
                    marker="." if len(t) == 1 else None)
        _draw_held_out(ax, val, test)
        if x == "time":
            _mark_events(ax, run)
        ax.set(xlabel=xlabel, ylabel="loss")
        ax.grid(alpha=0.3)
        log_if_positive(ax, val[1], test[1], *(curve[3] for curve in train))
    legend_below(fig, axes)
    return save(fig, run.dir / "loss.png")


def _train_curves(run: Run) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """Per worker: (label, colour, times, smoothed loss); all one grey when there are too many to tell apart."""
    workers = ids(r.get("worker") for r in run.train)
    many = len(workers) > MAX_WORKER_COLOURS
    curves = []
    for i, worker in enumerate(workers):
        t, loss = run.series([r for r in run.train if r.get("worker") == worker], "time", "loss")
        label = f"train, {len(workers)} workers (smoothed)" if many else f"train, worker {worker} (smoothed)"
        curves.append((label, "#9a9a9a" if many else plt.cm.tab10(i % 10), t, _smooth(loss)))
    return curves


# -- accuracy.png / rmse.png -----------------------------------------------------
def _plot_quality(run: Run) -> Path:
    regression = not any("val_accuracy" in r or "test_accuracy" in r for r in run.evals) and any(
        "val_rmse" in r or "test_rmse" in r for r in run.evals)
    metric, what = ("rmse", "RMSE") if regression else ("accuracy", "accuracy")
    fig, (by_time, by_updates) = _figure(run, f"{what} on held-out data", 2)
    for ax, x, xlabel in ((by_time, "time", seconds([run])), (by_updates, "updates", "updates applied")):
        ax.set_title(f"against {'time' if x == 'time' else 'updates applied'}")
        val = run.series(run.evals, x, f"val_{metric}")
        test = run.series(run.evals, x, f"test_{metric}")
        if not len(val[0]) and not len(test[0]):
            note(ax, f"no eval records with {what}")
            continue
        _draw_held_out(ax, val, test)
        if not regression and run.target is not None:
            ax.axhline(run.target, color=TARGET, linestyle="--", linewidth=1.2, label=f"target {run.target:g}")
            reached = np.flatnonzero(test[1] >= run.target)  # as summary.json's time_to_target
            if len(reached):
                first = test[0][reached[0]]
                ax.axvline(first, color=TARGET, linewidth=0.8, alpha=0.6)
                unit = " s" if x == "time" else " updates"
                ax.annotate(f"test reaches target at {first:.4g}{unit}", (first, run.target),
                            xytext=(6, -14), textcoords="offset points", fontsize=8, color=TARGET)
        if x == "time":
            _mark_events(ax, run, at="top" if regression else "bottom")
        if not regression:
            ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.set(xlabel=xlabel, ylabel=what + (" (lower is better)" if regression else ""))
        ax.grid(alpha=0.3)
    legend_below(fig, (by_time, by_updates))
    return save(fig, run.dir / f"{metric}.png")


# -- staleness.png ---------------------------------------------------------------
def _plot_staleness(run: Run) -> Path:
    fig, (histogram, per_worker, over_time) = _figure(run, "staleness (updates a push's parameters missed)", 3,
                                                      width=4.6)
    histogram.set_title("all pushes")
    per_worker.set_title("per worker")
    over_time.set_title("pushes between evaluations")
    pushes = [r for r in run.pushes if is_number(r.get("staleness"))]
    if pushes:
        staleness = np.array([r["staleness"] for r in pushes], float)
        applied = np.array([r.get("applied", True) is not False for r in pushes])
        bins = staleness_bins([staleness])
        parts = [staleness[applied], staleness[~applied]]
        # Not applied: buffered or dropped (sync), or applied within a clock not yet complete (ssp).
        labels = ["applied: a new version", "no new version"]
        colours = ["#4c72b0", "#dd8452"]
        if applied.all():
            parts, labels, colours = parts[:1], ["applied push"], colours[:1]
        histogram.hist(parts, bins=bins, stacked=True, color=colours, label=labels)
        mean, p95 = staleness.mean(), np.percentile(staleness, 95)
        histogram.axvline(mean, color="black", linewidth=1.2, label=f"mean {mean:.3g}")
        histogram.axvline(p95, color="black", linestyle="--", linewidth=1.2, label=f"p95 {p95:.3g}")
        histogram.set(xlabel="staleness (updates)", ylabel="pushes", title=f"all {len(pushes)} pushes")
        _legend_under(histogram)
    else:
        note(histogram, "no push records")

    workers = ids(r.get("worker") for r in pushes)
    if workers:
        per = [np.array([r["staleness"] for r in pushes if r.get("worker") == w], float) for w in workers]
        x = np.arange(len(workers))
        per_worker.bar(x, [p.mean() for p in per], color="#4c72b0", label="mean")
        per_worker.scatter(x, [np.percentile(p, 95) for p in per], color="black", marker="_",
                           s=min(200, (150 / len(workers)) ** 2), zorder=3, label="p95")  # narrower than a bar
        per_worker.scatter(x, [p.max() for p in per], color="#c0392b", marker="x", s=14, zorder=3, label="max")
        id_ticks(per_worker.set_xticks, workers, most=16)
        per_worker.set(xlabel="worker", ylabel="staleness (updates)")
        _legend_under(per_worker)
    else:
        note(per_worker, "no push records name a worker" if pushes else "no push records")

    stats = [r for r in run.evals if isinstance(r.get("staleness"), dict) and r["staleness"].get("count")]
    if stats:
        t = np.array([r["time"] for r in stats], float)
        for key, style in (("mean", "-"), ("p95", "--"), ("max", ":")):
            y = np.array([r["staleness"].get(key, np.nan) for r in stats], float)
            over_time.plot(t, y, linestyle=style, color="#4c72b0" if key != "max" else "#c0392b", marker=".",
                           label=key)
        _mark_events(over_time, run)
        over_time.set(xlabel=seconds([run]), ylabel="staleness (updates)")
        _legend_under(over_time)
    else:
        note(over_time, "no staleness statistics in the eval records")
    for ax in (histogram, per_worker, over_time):
        ax.grid(alpha=0.3)
    return save(fig, run.dir / "staleness.png")
