"""The pictures of who lagged in one run, which ``asyncps report`` adds to a run directory:

- ``progress.png``: the steps each worker has completed against time, and
  each worker's rate (steps per second); a straggler is the line that lags
  and the red bar;
- ``staleness_breakdown.png``: the staleness distribution of each worker's
  pushes and of the pushes each shard received.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from asyncps.lab.reports.figures import figure, histograms, id_ticks, note, save, staleness_bins
from asyncps.lab.reports.rundir import Run, ids, seconds

__all__ = ["plot_progress", "plot_staleness_breakdown"]

MAX_COLOURS = 10  # beyond this many workers, one grey for all but the slowest and fastest
STRAGGLER = 0.8   # a worker slower than this fraction of the median rate is drawn as a straggler


# -- progress.png ----------------------------------------------------------------
def plot_progress(run: Run) -> Path:
    """Steps completed by each worker against time, and each worker's rate."""
    fig, (lines, rates) = figure(f"{run.name}: worker progress (a straggler lags)", 2)
    workers = ids(r.get("worker") for r in run.train)
    curves = {w: np.sort(np.array([r["time"] for r in run.train if r.get("worker") == w], float)) for w in workers}
    if not workers:
        note(lines, "no train records")
        note(rates, "no train records")
        return save(fig, run.dir / "progress.png")
    rate = {w: len(t) / t[-1] if t[-1] > 0 else np.nan for w, t in curves.items()}
    finite = [r for r in rate.values() if np.isfinite(r)]
    median = float(np.median(finite)) if finite else 0.0
    slow = {w for w, r in rate.items() if r < STRAGGLER * median}
    many = len(workers) > MAX_COLOURS
    slowest = min(rate, key=lambda w: np.nan_to_num(rate[w], nan=np.inf))
    fastest = max(rate, key=lambda w: np.nan_to_num(rate[w], nan=-np.inf))
    for i, (worker, t) in enumerate(curves.items()):
        x, y = np.concatenate([[0.0], t]), np.arange(len(t) + 1)
        if not many:
            lines.step(x, y, where="post", color=plt.cm.tab10(i % 10), linewidth=1.6,
                       label=f"worker {worker}" + (" (straggler)" if worker in slow else ""))
        elif worker in (slowest, fastest):
            colour, what = ("#c0392b", "slowest") if worker == slowest else ("#1f77b4", "fastest")
            lines.step(x, y, where="post", color=colour, linewidth=2, zorder=3, label=f"worker {worker} ({what})")
        else:
            lines.step(x, y, where="post", color="#b0b0b0", linewidth=0.8,
                       label=f"the other {len(workers) - 2} workers")
    lines.set(title="steps completed", xlabel=seconds([run]), ylabel="steps")
    handles, labels = lines.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    lines.legend(unique.values(), unique.keys(), fontsize=8, loc="upper left", ncol=1 if len(unique) < 6 else 2)
    lines.grid(alpha=0.3)

    positions = np.arange(len(workers))
    values = [rate[w] for w in workers]
    rates.barh(positions, values, height=0.6, color=["#c0392b" if w in slow else "#4c72b0" for w in workers])
    rates.axvline(median, color="black", linestyle="--", linewidth=1.2, label=f"median {median:.3g}")
    rates.axvline(STRAGGLER * median, color="#c0392b", linestyle=":", linewidth=1.2,
                  label=f"{STRAGGLER:.0%} of median: slower is a straggler")
    id_ticks(rates.set_yticks, workers, most=12)
    rates.invert_yaxis()
    rates.set(title="steps per second (steps / time of the last step)", xlabel="steps per second", ylabel="worker")
    rates.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    rates.grid(alpha=0.3, axis="x")
    return save(fig, run.dir / "progress.png")


# -- staleness_breakdown.png -------------------------------------------------------
def plot_staleness_breakdown(run: Run) -> Path:
    """The staleness distribution per worker and per shard: histograms side by side, or a heat map for many."""
    fig, axes = figure(f"{run.name}: staleness per worker and per shard (fraction of each one's pushes)", 2)
    for ax, who in zip(axes, ("worker", "shard")):
        members = ids(r.get(who) for r in run.pushes)
        groups = [run.staleness(**{who: i}) for i in members]
        members, groups = [i for i, g in zip(members, groups) if len(g)], [g for g in groups if len(g)]
        if not groups:
            note(ax, f"no push records name a {who}" if len(run.pushes) else "no push records")
            continue
        ax.set(title=f"per {who}", xlabel="staleness (updates a push's parameters missed)")
        if len(groups) <= MAX_COLOURS:
            labels = [f"{who} {i}: mean {v.mean():.2f}, p95 {np.percentile(v, 95):.3g}"
                      for i, v in zip(members, groups)]
            histograms(ax, groups, labels, [plt.cm.tab10(n % 10) for n in range(len(members))])
            ax.set(ylabel="fraction of its pushes")
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14),
                      ncol=2 if len(members) > 2 else len(members), frameon=False)
            ax.grid(alpha=0.3)
        else:  # dozens of overlaid outlines are noise; one row per worker reads
            bins = staleness_bins(groups)
            heat = np.array([np.histogram(values, bins=bins)[0] / len(values) for values in groups])
            image = ax.imshow(heat, aspect="auto", cmap="viridis", interpolation="nearest", vmin=0,
                              extent=(bins[0], bins[-1], len(members) - 0.5, -0.5))
            id_ticks(ax.set_yticks, members, most=12)
            ax.set(ylabel=who, title=f"per {who} (colour: fraction of its pushes)")
            fig.colorbar(image, ax=ax, format=matplotlib.ticker.PercentFormatter(1.0, decimals=0))
    return save(fig, run.dir / "staleness_breakdown.png")
