"""What every picture of a run or a comparison shares: the headless backend,
the figure and its one legend, the note in an empty panel, and the staleness
histograms."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

matplotlib.use("Agg")  # headless: files only, never a window (pyplot switches to it even when imported first)

__all__ = ["figure", "note", "save", "id_ticks", "legend_below", "log_if_positive", "staleness_bins", "histograms"]

DPI = 110
DODGE = 6  # up to this many distributions side by side as bars; more as outlines


def figure(title: str, panels: int, width: float = 6.0):
    """A row of ``panels`` axes under ``title``."""
    fig, axes = plt.subplots(1, panels, figsize=(width * panels, 4.6), dpi=DPI, layout="constrained")
    fig.suptitle(title, fontsize=12)
    return fig, np.atleast_1d(axes)


def id_ticks(set_ticks, ids: list, most: int) -> None:
    """Label positions 0, 1, ... with ``ids`` through ``set_ticks`` (an axes'
    ``set_xticks`` or ``set_yticks``), every k-th one so that at most ``most``
    show: on a 4.6-inch figure, a dozen fit down a panel and 16 across one."""
    step = -(-len(ids) // most)
    set_ticks(np.arange(len(ids))[::step], [str(i) for i in ids][::step])


def note(ax, text: str) -> None:
    """An empty panel that says why it is empty."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666666", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def save(fig, path: Path) -> Path:
    fig.savefig(path)
    plt.close(fig)
    return path


def legend_below(fig, axes, columns: int = 6) -> None:
    """One legend for the figure, under the panels, so it never covers a curve; each label once."""
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=min(len(handles), columns),
                   frameon=False, fontsize=9)


def log_if_positive(ax, *arrays: np.ndarray) -> None:
    """A log scale when the values are positive and span enough to need it (losses falling by decades)."""
    values = np.concatenate(arrays)
    if len(values) and values.min() > 0 and values.max() / values.min() > 5:
        ax.set_yscale("log")


def staleness_bins(groups: list[np.ndarray]) -> np.ndarray:
    """Integer bins (staleness counts updates) covering every value; at most about 60 of them."""
    top = int(max((v.max() for v in groups if len(v)), default=0))
    return np.arange(-0.5, top + 1.5, max(1, int(np.ceil((top + 1) / 60))))


def histograms(ax, groups: list[np.ndarray], labels: list[str], colours: list, styles: list[str] | None = None
               ) -> None:
    """Each group's distribution as fractions of its own count: side-by-side bars for a few groups (an
    outline would hide another with the same value), outlines for more."""
    bins = staleness_bins(groups)
    centres, width = (bins[:-1] + bins[1:]) / 2, bins[1] - bins[0]
    for n, (values, label, colour) in enumerate(zip(groups, labels, colours)):
        fractions = np.histogram(values, bins=bins)[0] / len(values)
        if len(groups) <= DODGE:
            bar = 0.85 * width / len(groups)
            ax.bar(centres - 0.425 * width + (n + 0.5) * bar, fractions, width=bar, color=colour, label=label)
        else:
            ax.stairs(fractions, bins, color=colour, linewidth=1.8, linestyle=(styles or ["-"] * len(groups))[n],
                      label=label)
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    if bins[-1] - bins[0] <= 30:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
