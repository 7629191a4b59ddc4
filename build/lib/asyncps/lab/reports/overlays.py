"""``asyncps report``'s overlays of several runs, one colour per configuration
(:mod:`lab.reports.configurations`; without ``--seeds``, one per run):

- ``compare_sweep.png`` (only when the configurations sweep one number, a
  ``--sweep``): each configuration's final test loss and accuracy against it,
  one line per compared config; over several seeds, the mean with error bars
  of one standard deviation, and each seed's run as a dot;
- ``compare_quality.png``: test accuracy, or RMSE, against time and updates,
  a line per run;
- ``compare_loss.png``: test loss, and updates applied, against time;
- ``compare_staleness.png``: the staleness of every push, per configuration
  and per run.

A failed run's curves are drawn up to its failure; its final results are
left out of the sweep's means.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from asyncps.lab.reports.configurations import Configuration, failed, spread
from asyncps.lab.reports.figures import figure, histograms, legend_below, log_if_positive, note, save
from asyncps.lab.reports.rundir import Run, differing, seconds
from asyncps.optim.validation import is_number

__all__ = ["plot_overlays", "run_colour"]


def run_colour(i: int):
    """Run ``i``'s colour: ten distinct ones, then twenty more."""
    return plt.cm.tab10(i % 10) if i < 10 else plt.cm.tab20((i - 10) % 20)


def run_style(i: int) -> str:
    """Run ``i``'s line style: a new one for each ten runs, so that a colour repeated is told apart."""
    return ("-", "--", ":", "-.")[(i // 10) % 4]


def plot_overlays(runs: list[Run], groups: list[Configuration], out: Path) -> list[tuple[Path, str]]:
    """The comparison figures of ``runs`` in their configurations ``groups``, each with its caption; a sweep's
    first."""
    looks = _looks(runs, groups)
    swept = _sweep([runs[group.runs[0]] for group in groups])
    overlays = [_overlay_sweep(runs, groups, *swept, out)] if swept else []
    return overlays + [_overlay_quality(runs, looks, out), _overlay_loss(runs, looks, out),
                       _overlay_staleness(runs, groups, out)]


def _looks(runs: list[Run], groups: list[Configuration]) -> list[dict]:
    """Each run's line: its configuration's colour, style and name."""
    looks = [{}] * len(runs)
    for c, group in enumerate(groups):
        for i in group.runs:
            looks[i] = {"color": run_colour(c), "linestyle": run_style(c), "label": group.name}
    return looks


def _sweep(runs: list[Run]) -> tuple[list[str], list[str]] | None:
    """``(swept, grouping)`` setting keys when the runs (one per configuration)
    sweep one number over three or more values (keys that always change
    together count as one, as in a joint sweep), one line per value of the
    other differing settings (the compared configs)."""
    columns = {key: tuple(run.settings.get(key) for run in runs) for key in differing(runs)}
    swept = [key for key, column in columns.items()
             if all(is_number(v) for v in column) and len(set(column)) >= 3]
    if not swept or any(columns[key] != columns[swept[0]] for key in swept):
        return None
    others = [key for key in columns if key not in swept]
    groups = {tuple(repr(run.settings.get(key)) for key in others) for run in runs}
    if len(groups) * 2 > len(runs):
        return None  # a line needs two points
    # Label the lines by the one setting that tells the groups apart, if there is one.
    telling = [key for key in others if len(set(map(repr, columns[key]))) == len(groups)]
    return swept, (telling[:1] if telling else others)


def _overlay_sweep(runs: list[Run], groups: list[Configuration], swept: list[str], grouping: list[str],
                   out: Path) -> tuple[Path, str]:
    metric = "rmse" if all(run.metric == "rmse" for run in runs) else "accuracy"
    x_label = " = ".join(swept)
    fig, axes = figure(f"final results against {x_label}", 2)
    lines: dict[str, list[tuple[float, list[dict]]]] = {}  # label -> (x, its finished runs' finals)
    for group in groups:
        first = runs[group.runs[0]]
        label = ", ".join(f"{key}={first.settings.get(key)}" for key in grouping) or "runs"
        finals = [runs[i].summary.get("final") or {} for i in group.runs if not failed(runs[i])]
        lines.setdefault(label, []).append((first.settings[swept[0]], finals))
    seeds = any(len(group.runs) > 1 for group in groups)
    xs_all = [x for points in lines.values() for x, finals in points if finals]  # where a run finished
    for ax, key, title in ((axes[0], "test_loss", "final test loss"), (axes[1], f"test_{metric}",
                                                                         f"final test {metric}")):
        for i, (label, points) in enumerate(lines.items()):
            means = sorted((x, stats) for x, finals in points if (stats := spread([f.get(key) for f in finals])))
            if not means:
                continue
            ax.errorbar([x for x, _ in means], [mean for _, (mean, _, _) in means], color=run_colour(i),
                        yerr=[std or 0 for _, (_, std, _) in means] if seeds else None, capsize=4,
                        linestyle=run_style(i), marker="o", linewidth=1.8, label=label)
            if seeds:  # each seed's run as a dot (there is one: a mean was drawn)
                dots = [(x, final[key]) for x, finals in points for final in finals if is_number(final.get(key))]
                ax.scatter(*zip(*dots), color=run_colour(i), s=14, alpha=0.5, zorder=3)
        if not ax.lines:
            note(ax, f"no final {key}")
            continue
        if min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 10:
            ax.set_xscale("log")
            ax.set_xticks(sorted(set(xs_all)), [f"{x:g}" for x in sorted(set(xs_all))])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        if key == "test_accuracy":
            ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.set(title=title, xlabel=x_label, ylabel=key.replace("_", " "))
        ax.grid(alpha=0.3)
    legend_below(fig, axes, columns=4)
    if seeds:
        caption = (f"Each configuration's final test loss and {metric}, against the swept {x_label}: the mean over "
                   "its seeds, error bars of one standard deviation, a dot per seed.")
    else:
        caption = f"Each run's final test loss and {metric}, against the swept {x_label}."
    if any(failed(run) for run in runs):
        caption += " Failed runs are left out."
    return save(fig, out / "compare_sweep.png"), caption


def _overlay_quality(runs: list[Run], looks: list[dict], out: Path) -> tuple[Path, str]:
    metric = "rmse" if all(run.metric == "rmse" for run in runs) else "accuracy"
    what = "test RMSE" if metric == "rmse" else "test accuracy"
    fig, axes = figure(what, 2)
    targets = {run.summary.get("target_accuracy") for run in runs} - {None}
    for ax, x, xlabel in ((axes[0], "time", seconds(runs)), (axes[1], "updates", "updates applied")):
        for i, run in enumerate(runs):
            xs, ys = run.series(run.evals, x, f"test_{metric}")
            if len(xs):
                ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.8, **looks[i])
        if not ax.lines:
            note(ax, f"no eval records with {what}")
            continue
        if metric == "accuracy":
            for target in sorted(targets):
                ax.axhline(target, color="#2e8b57", linestyle="--", linewidth=1, label=f"target {target:g}")
            ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.set(title=f"against {xlabel.split(' (')[0]}", xlabel=xlabel,
               ylabel=what + (" (lower is better)" if metric == "rmse" else ""))
        ax.grid(alpha=0.3)
    legend_below(fig, axes, columns=4)
    caption = f"{what.capitalize()} at each evaluation, against time and against updates applied."
    return save(fig, out / "compare_quality.png"), caption


def _overlay_loss(runs: list[Run], looks: list[dict], out: Path) -> tuple[Path, str]:
    fig, (loss, updates) = figure("test loss and throughput", 2)
    for i, run in enumerate(runs):
        style = {"linewidth": 1.8, **looks[i]}
        xs, ys = run.series(run.evals, "time", "test_loss")
        if len(xs):
            loss.plot(xs, ys, marker="o", markersize=3, **style)
        xs, ys = run.series(run.evals, "time", "updates")
        if len(xs):
            updates.plot(np.concatenate([[0.0], xs]), np.concatenate([[0.0], ys]), **style)
    for ax, text in ((loss, "no eval records with a test loss"), (updates, "no eval records count updates")):
        if not ax.lines:
            note(ax, text)
    if loss.lines:
        log_if_positive(loss, *(line.get_ydata() for line in loss.lines))
        loss.set(title="test loss against time", xlabel=seconds(runs), ylabel="test loss")
    updates.set(title="updates applied against time (slope: updates per second)", xlabel=seconds(runs),
                ylabel="updates applied")
    for ax in (loss, updates):
        ax.grid(alpha=0.3)
    legend_below(fig, (loss, updates), columns=4)
    caption = "Test loss at each evaluation, and how fast each run applied updates."
    return save(fig, out / "compare_loss.png"), caption


def _overlay_staleness(runs: list[Run], groups: list[Configuration], out: Path) -> tuple[Path, str]:
    fig, (histogram, boxes) = figure("staleness of every push (updates its parameters missed)", 2)
    values = [run.staleness() for run in runs]
    pooled = [(c, group, np.concatenate([values[i] for i in group.runs])) for c, group in enumerate(groups)]
    pooled = [(c, group, v) for c, group, v in pooled if len(v)]
    configuration = {i: c for c, group in enumerate(groups) for i in group.runs}
    shown = [(configuration[i], run, v) for i, (run, v) in enumerate(zip(runs, values)) if len(v)]
    if not shown:
        note(histogram, "no push records")
        note(boxes, "no push records")
    else:
        histograms(histogram, [v for _, _, v in pooled], [group.name for _, group, _ in pooled],
                   [run_colour(c) for c, _, _ in pooled], [run_style(c) for c, _, _ in pooled])
        histogram.set(title="distribution", xlabel="staleness (updates)",
                      ylabel="fraction of the pushes" if len(pooled) < len(shown) else "fraction of the run's pushes")
        for row, (c, _, v) in enumerate(shown, start=1):  # drawn by hand: boxplot's orientation API keeps moving
            p5, q1, median, q3, p95 = np.percentile(v, [5, 25, 50, 75, 95])
            boxes.hlines(row, p5, p95, color="black", linewidth=1)
            boxes.vlines([p5, p95], row - 0.15, row + 0.15, color="black", linewidth=1)
            boxes.barh(row, max(q3 - q1, 0.05), left=q1 if q3 > q1 else q1 - 0.025, height=0.6,
                       color=run_colour(c), alpha=0.8, edgecolor="black", zorder=2)
            boxes.vlines(median, row - 0.3, row + 0.3, color="black", linewidth=2, zorder=3)
            boxes.plot(v.mean(), row, marker="D", markerfacecolor="white", markeredgecolor="black", zorder=4)
        boxes.set_yticks(np.arange(1, len(shown) + 1), [run.name for _, run, _ in shown], fontsize=8)
        boxes.invert_yaxis()
        boxes.set(title="per run", xlabel="staleness (updates): box quartiles, whiskers p5 to p95, \u25c7 mean")
    for ax in (histogram, boxes):
        ax.grid(alpha=0.3)
    legend_below(fig, (histogram,), columns=4)
    caption = "How stale each run's pushes were: the whole distribution, and its quartiles and tails side by side."
    if len(groups) < len(runs):
        caption = ("How stale the pushes were: each configuration's distribution over all its seeds' pushes, and "
                   "each run's quartiles and tails side by side.")
    return save(fig, out / "compare_staleness.png"), caption
