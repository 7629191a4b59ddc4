"""Pictures of one run, from its run directory.

``plot_run(run_dir)`` reads ``metrics.jsonl`` (one JSON object a line, each
with a ``kind`` and a ``time`` in seconds since the start) and writes:

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

import json
import tomllib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from optim.validation import is_number  # noqa: E402

__all__ = ["plot_run", "read_metrics"]

DPI = 110
# Held-out curves in black and grey, so no worker's colour is mistaken for one.
VAL, TEST, TARGET, EVENT = "black", "#6e6e6e", "#2e8b57", "#7f7f7f"
MAX_WORKER_COLOURS = 10  # beyond this, per-worker curves share one grey: 64 colours read as noise


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``run_dir/metrics.jsonl``, in file order.

    A last line cut short (a run still writing, or killed) is skipped; a bad
    line anywhere else is an error naming it.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"Invalid run directory: '{run_dir}' (no metrics.jsonl in it; pass a directory that "
                         "asyncps run wrote)")
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise ValueError(f"Invalid metrics line {path}:{number}: {err.msg} (each line must be one JSON object)"
                             ) from None
    return records


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write ``loss.png``, ``accuracy.png`` (or ``rmse.png``) and ``staleness.png`` into ``run_dir``."""
    run = _Run(Path(run_dir))
    return [_plot_loss(run), _plot_quality(run), _plot_staleness(run)]


# -- what the figures read -------------------------------------------------------
class _Run:
    """A run directory's records sorted by kind, and what its config says."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir
        records = [r for r in read_metrics(run_dir) if isinstance(r, dict) and is_number(r.get("time"))]
        by_kind = {kind: [r for r in records if r.get("kind") == kind] for kind in ("train", "push", "eval", "event")}
        self.train, self.pushes, self.evals, self.events = by_kind.values()
        self.evals.sort(key=lambda r: r["time"])
        self.update_clock = self.series(self.evals, "time", "updates")
        config = read_toml(run_dir / "config.toml")
        summary = read_json(run_dir / "summary.json")
        self.name = config.get("name") or run_dir.name
        self.target = next((value for value in (_lookup(summary, "target_accuracy"),
                                                _lookup(summary, "train", "target_accuracy"),
                                                _lookup(summary, "config", "train", "target_accuracy"),
                                                _lookup(config, "train", "target_accuracy")) if is_number(value)),
                           None)
        backend = _lookup(config, "backend")
        clock = "virtual time" if backend == "sim" else (f"{backend} backend" if backend else None)
        setup = [_lookup(config, "protocol", "name"), _workers(_lookup(config, "cluster", "workers")),
                 _shards(_lookup(config, "cluster", "shards")), _lookup(config, "server", "optimizer"), clock]
        self.setup = ", ".join(str(part) for part in setup if part)

    def title(self, what: str) -> str:
        return f"{self.name}: {what}" + (f"\n{self.setup}" if self.setup else "")

    def series(self, records: list[dict], x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
        points = [(r[x], r[y]) for r in records if is_number(r.get(x)) and is_number(r.get(y))]
        return (np.array([p[0] for p in points], float), np.array([p[1] for p in points], float))

    def updates_at(self, times: np.ndarray) -> np.ndarray:
        """Updates applied by each time, interpolated between evaluations (which count them)."""
        t, updates = self.update_clock
        return np.interp(times, np.concatenate([[0.0], t]), np.concatenate([[0.0], updates]))


def _lookup(tree, *keys):
    for key in keys:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree


def _workers_in(records: list[dict]) -> list:
    """The worker ids in ``records``, numbers in numeric order (worker 10 after worker 9)."""
    ids = {r["worker"] for r in records if isinstance(r.get("worker"), (int, str))}
    return sorted(ids, key=lambda w: (isinstance(w, str), w if isinstance(w, int) else 0, str(w)))


def _workers(n) -> str | None:
    return f"{n} worker{'s' * (n != 1)}" if n else None


def _shards(n) -> str | None:
    return f"{n} shard{'s' * (n != 1)}" if n else None


def read_toml(path: Path) -> dict:
    """The run's config, or {} when absent or unreadable: a picture must not depend on it."""
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def read_json(path: Path) -> dict:
    """A run's JSON file, or {} when absent or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _smooth(y: np.ndarray) -> np.ndarray:
    """A trailing mean over about 1/25 of the curve: light enough to keep the shape, enough to see a trend."""
    window = int(np.clip(len(y) // 25, 1, 50))
    sums = np.cumsum(np.concatenate([[0.0], y]))
    ends = np.arange(1, len(y) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


# -- drawing helpers -------------------------------------------------------------
def _figure(run: _Run, what: str, panels: int, width: float = 6.0):
    fig, axes = plt.subplots(1, panels, figsize=(width * panels, 4.6), dpi=DPI, layout="constrained")
    fig.suptitle(run.title(what), fontsize=12)
    return fig, np.atleast_1d(axes)


def _note(ax, text: str) -> None:
    """An empty panel that says why it is empty."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666666", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def _mark_events(ax, run: _Run, at: str = "top") -> None:
    """A dotted vertical line per event, labelled along it at the ``top`` or ``bottom`` (where the curves are not)."""
    y, align = (0.98, "top") if at == "top" else (0.02, "bottom")
    for event in run.events:
        ax.axvline(event["time"], color=EVENT, linestyle=":", linewidth=1.2, zorder=1)
        ax.text(event["time"], y, str(event.get("message", "event")), rotation=90, ha="right", va=align,
                fontsize=8, color="#333333", transform=ax.get_xaxis_transform(),
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.75, "pad": 1})


def _log_if_positive(ax, *arrays: np.ndarray) -> None:
    """A log scale when the values are positive and span enough to need it (losses falling by decades)."""
    values = np.concatenate(arrays)
    if len(values) and values.min() > 0 and values.max() / values.min() > 5:
        ax.set_yscale("log")


def _legend_below(fig, axes) -> None:
    """One legend for the figure, under the panels, so it never covers a curve."""
    handles, labels = {}, []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    if labels:
        fig.legend([handles[label] for label in labels], labels, loc="outside lower center",
                   ncol=min(len(labels), 6), frameon=False, fontsize=9)


def _legend_under(ax) -> None:
    """The panel's own legend, under its axis label, so it never covers a bar or a curve."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8, frameon=False)


def _draw_held_out(ax, val, test) -> None:
    """Validation and test curves, each only if it has points (an empty curve would still get a legend entry)."""
    if len(val[0]):
        ax.plot(*val, color=VAL, linewidth=2, marker="o", markersize=3, label="validation")
    if len(test[0]):
        ax.plot(*test, color=TEST, linewidth=1.6, linestyle="--", marker="s", markersize=3, label="test")


def _save(fig, path: Path) -> Path:
    fig.savefig(path)
    plt.close(fig)
    return path


# -- loss.png --------------------------------------------------------------------
def _plot_loss(run: _Run) -> Path:
    fig, axes = _figure(run, "loss", 2)
    curves = _train_curves(run)
    counted = len(run.update_clock[0]) > 0
    panels = ((axes[0], "time", "time (s)", lambda t: t),
              (axes[1], "updates", "updates applied (train curves: interpolated from time)",
               run.updates_at if counted else None))
    for ax, x, xlabel, place in panels:
        ax.set_title("against time" if x == "time" else "against updates applied")
        val, test = run.series(run.evals, x, "val_loss"), run.series(run.evals, x, "test_loss")
        train = curves if place is not None else []
        if not train and not len(val[0]) and not len(test[0]):
            _note(ax, "no eval records: nothing counts the updates applied" if x == "updates" and not counted
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
        _log_if_positive(ax, val[1], test[1], *(curve[3] for curve in train))
    _legend_below(fig, axes)
    return _save(fig, run.dir / "loss.png")


def _train_curves(run: _Run) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """Per worker: (label, colour, times, smoothed loss); all one grey when there are too many to tell apart."""
    workers = _workers_in(run.train)
    many = len(workers) > MAX_WORKER_COLOURS
    curves = []
    for i, worker in enumerate(workers):
        t, loss = run.series([r for r in run.train if r.get("worker") == worker], "time", "loss")
        order = np.argsort(t, kind="stable")
        label = f"train, {len(workers)} workers (smoothed)" if many else f"train, worker {worker} (smoothed)"
        curves.append((label, "#9a9a9a" if many else plt.cm.tab10(i % 10), t[order], _smooth(loss[order])))
    return curves


# -- accuracy.png / rmse.png -----------------------------------------------------
def _plot_quality(run: _Run) -> Path:
    regression = not any("val_accuracy" in r or "test_accuracy" in r for r in run.evals) and any(
        "val_rmse" in r or "test_rmse" in r for r in run.evals)
    metric, what = ("rmse", "RMSE") if regression else ("accuracy", "accuracy")
    fig, (by_time, by_updates) = _figure(run, f"{what} on held-out data", 2)
    for ax, x, xlabel in ((by_time, "time", "time (s)"), (by_updates, "updates", "updates applied")):
        ax.set_title(f"against {'time' if x == 'time' else 'updates applied'}")
        val = run.series(run.evals, x, f"val_{metric}")
        test = run.series(run.evals, x, f"test_{metric}")
        if not len(val[0]) and not len(test[0]):
            _note(ax, f"no eval records with {what}")
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
    _legend_below(fig, (by_time, by_updates))
    return _save(fig, run.dir / f"{metric}.png")


# -- staleness.png ---------------------------------------------------------------
def _plot_staleness(run: _Run) -> Path:
    fig, (histogram, per_worker, over_time) = _figure(run, "staleness (updates a push's parameters missed)", 3,
                                                      width=4.6)
    histogram.set_title("all pushes")
    per_worker.set_title("per worker")
    over_time.set_title("pushes between evaluations")
    pushes = [r for r in run.pushes if is_number(r.get("staleness"))]
    if pushes:
        staleness = np.array([r["staleness"] for r in pushes], float)
        applied = np.array([r.get("applied", True) is not False for r in pushes])
        top = int(staleness.max())
        bins = np.arange(-0.5, top + 1.5, max(1, int(np.ceil((top + 1) / 60))))
        parts = [staleness[applied], staleness[~applied]]
        labels = ["applied", "not applied"]
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
        _note(histogram, "no push records")

    workers = _workers_in(pushes)
    if workers:
        per = [np.array([r["staleness"] for r in pushes if r.get("worker") == w], float) for w in workers]
        x = np.arange(len(workers))
        per_worker.bar(x, [p.mean() for p in per], color="#4c72b0", label="mean")
        per_worker.scatter(x, [np.percentile(p, 95) for p in per], color="black", marker="_",
                           s=min(200, (150 / len(workers)) ** 2), zorder=3, label="p95")  # narrower than a bar
        per_worker.scatter(x, [p.max() for p in per], color="#c0392b", marker="x", s=14, zorder=3, label="max")
        step = max(1, len(workers) // 16)
        per_worker.set_xticks(x[::step], [str(w) for w in workers][::step])
        per_worker.set(xlabel="worker", ylabel="staleness (updates)")
        _legend_under(per_worker)
    else:
        _note(per_worker, "no push records name a worker" if pushes else "no push records")

    stats = [r for r in run.evals if isinstance(r.get("staleness"), dict) and r["staleness"].get("count")]
    if stats:
        t = np.array([r["time"] for r in stats], float)
        for key, style in (("mean", "-"), ("p95", "--"), ("max", ":")):
            y = np.array([r["staleness"].get(key, np.nan) for r in stats], float)
            over_time.plot(t, y, linestyle=style, color="#4c72b0" if key != "max" else "#c0392b", marker=".",
                           label=key)
        _mark_events(over_time, run)
        over_time.set(xlabel="time (s)", ylabel="staleness (updates)")
        _legend_under(over_time)
    else:
        _note(over_time, "no staleness statistics in the eval records")
    for ax in (histogram, per_worker, over_time):
        ax.grid(alpha=0.3)
    return _save(fig, run.dir / "staleness.png")
