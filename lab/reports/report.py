"""``asyncps report``: the pictures and one HTML page for one or more run directories.

``report(run_dirs, out)`` (re)makes each run's plots with :func:`lab.plots.plot_run`
and adds two of its own, both into the run directory:

- ``progress.png``: the steps each worker has completed against time, and
  each worker's rate (steps per second); a straggler is the line that lags
  and the red bar;
- ``staleness_breakdown.png``: the staleness distribution of each worker's
  pushes and of the pushes each shard received.

For several runs it also draws overlays, one colour per run, into ``out``:
``compare_quality.png`` (test accuracy, or RMSE, against time and updates),
``compare_loss.png`` (test loss, and updates applied, against time) and
``compare_staleness.png``; when the runs sweep one number (a ``--sweep``),
``compare_sweep.png`` first: each run's final test loss and accuracy against
it, one line per compared config. Then it writes ``out/report.html``: a page with
every picture embedded (a base64 data URI, so the page is one file that can
be mailed), the settings the runs share and those that differ, and a table
with one row per run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: files only, never a window

import matplotlib.colors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from lab.metrics import summarize  # noqa: E402
from lab.reports.plots import plot_run, read_json, read_metrics, read_toml  # noqa: E402
from lab.reports.page import SKIPPED_KEYS, page  # noqa: E402
from optim.validation import is_number  # noqa: E402

__all__ = ["report", "load_run", "plot_progress", "plot_staleness_breakdown", "plot_overlays", "Run"]

DPI = 110
MAX_COLOURS = 10  # beyond this many workers, one grey for all but the slowest and fastest
DODGE = 6         # up to this many distributions side by side as bars; more as outlines
STRAGGLER = 0.8   # a worker slower than this fraction of the median rate is drawn as a straggler


# -- a run directory, read once ----------------------------------------------------
@dataclass
class Run:
    """What a report needs of one run directory."""

    dir: Path
    name: str
    settings: dict      # config.toml flattened to dotted keys: {"server.options.lr": 0.1, ...}
    summary: dict       # summary.json (computed from metrics.jsonl when absent)
    train: list[dict]
    pushes: list[dict]
    evals: list[dict]
    events: list[dict]

    @property
    def metric(self) -> str:
        """``accuracy`` for a classifier, ``rmse`` for a regression run."""
        has = {key for record in self.evals for key in record}
        return "rmse" if "test_rmse" in has and "test_accuracy" not in has else "accuracy"

    def series(self, records: list[dict], x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
        points = sorted((r[x], r[y]) for r in records if is_number(r.get(x)) and is_number(r.get(y)))
        return np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)

    def staleness(self, **match) -> np.ndarray:
        """The staleness of the pushes whose fields equal ``match`` (e.g. ``worker=3``)."""
        return np.array([r["staleness"] for r in self.pushes
                         if is_number(r.get("staleness")) and all(r.get(k) == v for k, v in match.items())], float)


def load_run(run_dir: str | Path) -> Run:
    """Read ``run_dir``; a ``ValueError`` naming it when it is not a run directory."""
    run_dir = Path(run_dir)
    records = [r for r in read_metrics(run_dir) if isinstance(r, dict) and is_number(r.get("time"))]
    config = read_toml(run_dir / "config.toml")
    by_kind = {kind: [r for r in records if r.get("kind") == kind] for kind in ("train", "push", "eval", "event")}
    summary = read_json(run_dir / "summary.json")
    if not summary:  # a run killed before it finished: summarize what it recorded
        try:
            summary = summarize(run_dir, _flatten(config).get("train.target_accuracy", 0.95))
        except (ValueError, KeyError, TypeError):  # records summarize cannot read: the table shows dashes
            summary = {}
    name = config.get("name") if isinstance(config.get("name"), str) else run_dir.name
    return Run(run_dir, name, _flatten(config), summary, by_kind["train"], by_kind["push"],
               sorted(by_kind["eval"], key=lambda r: r["time"]), by_kind["event"])


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _ids(values) -> list:
    """Worker or shard ids, numbers in numeric order (10 after 9)."""
    found = {v for v in values if isinstance(v, (int, str)) and not isinstance(v, bool)}
    return sorted(found, key=lambda v: (isinstance(v, str), v if isinstance(v, int) else 0, str(v)))


def _figure(title: str, panels: int):
    fig, axes = plt.subplots(1, panels, figsize=(6.0 * panels, 4.6), dpi=DPI, layout="constrained")
    fig.suptitle(title, fontsize=12)
    return fig, np.atleast_1d(axes)


def _note(ax, text: str) -> None:
    """An empty panel that says why it is empty."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666666", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig, path: Path) -> Path:
    fig.savefig(path)
    plt.close(fig)
    return path


def _bins(values: list[np.ndarray]) -> np.ndarray:
    """Integer bins (staleness counts updates) covering every value; at most about 60 of them."""
    top = int(max((v.max() for v in values if len(v)), default=0))
    return np.arange(-0.5, top + 1.5, max(1, int(np.ceil((top + 1) / 60))))


def _histograms(ax, groups: list[np.ndarray], labels: list[str], colours: list, styles: list[str] | None = None
                ) -> None:
    """Each group's distribution as fractions of its own count: side-by-side bars for a few groups (an
    outline would hide another with the same value), outlines for more."""
    bins = _bins(groups)
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


# -- progress.png ----------------------------------------------------------------
def plot_progress(run: Run) -> Path:
    """Steps completed by each worker against time, and each worker's rate."""
    fig, (lines, rates) = _figure(f"{run.name}: worker progress (a straggler lags)", 2)
    workers = _ids(r.get("worker") for r in run.train)
    curves = {w: np.sort(np.array([r["time"] for r in run.train if r.get("worker") == w], float)) for w in workers}
    if not workers:
        _note(lines, "no train records")
        _note(rates, "no train records")
        return _save(fig, run.dir / "progress.png")
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
    lines.set(title="steps completed", xlabel="time (s)", ylabel="steps")
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
    step = max(1, len(workers) // 24)
    rates.set_yticks(positions[::step], [str(w) for w in workers][::step])
    rates.invert_yaxis()
    rates.set(title="steps per second (steps / time of the last step)", xlabel="steps per second",
              ylabel="worker")
    rates.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    rates.grid(alpha=0.3, axis="x")
    return _save(fig, run.dir / "progress.png")


# -- staleness_breakdown.png -------------------------------------------------------
def plot_staleness_breakdown(run: Run) -> Path:
    """The staleness distribution per worker and per shard: histograms side by side, or a heat map for many."""
    fig, axes = _figure(f"{run.name}: staleness per worker and per shard (fraction of each one's pushes)", 2)
    for ax, field, who in ((axes[0], "worker", "worker"), (axes[1], "shard", "shard")):
        ids = _ids(r.get(field) for r in run.pushes)
        groups = [run.staleness(**{field: i}) for i in ids]
        ids, groups = [i for i, g in zip(ids, groups) if len(g)], [g for g in groups if len(g)]
        if not groups:
            _note(ax, f"no push records name a {who}" if len(run.pushes) else "no push records")
            continue
        ax.set(title=f"per {who}", xlabel="staleness (updates a push's parameters missed)")
        if len(groups) <= MAX_COLOURS:
            _histograms(ax, groups, [f"{who} {i}: mean {v.mean():.2f}, p95 {np.percentile(v, 95):.3g}"
                                     for i, v in zip(ids, groups)], [plt.cm.tab10(n % 10) for n in range(len(ids))])
            ax.set(ylabel="fraction of its pushes")
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14),
                      ncol=2 if len(ids) > 2 else len(ids), frameon=False)
            ax.grid(alpha=0.3)
        else:  # dozens of overlaid outlines are noise; one row per worker reads
            bins = _bins(groups)
            heat = np.array([np.histogram(values, bins=bins)[0] / len(values) for values in groups])
            image = ax.imshow(heat, aspect="auto", cmap="viridis", interpolation="nearest", vmin=0,
                              extent=(bins[0], bins[-1], len(ids) - 0.5, -0.5))
            step = max(1, len(ids) // 24)
            ax.set_yticks(np.arange(len(ids))[::step], [str(i) for i in ids][::step])
            ax.set(ylabel=who, title=f"per {who} (colour: fraction of its pushes)")
            fig.colorbar(image, ax=ax, format=matplotlib.ticker.PercentFormatter(1.0, decimals=0))
    return _save(fig, run.dir / "staleness_breakdown.png")


# -- overlays of several runs --------------------------------------------------------
def _colour(i: int):
    return plt.cm.tab10(i % 10) if i < 10 else plt.cm.tab20((i - 10) % 20)


def _style(i: int) -> str:
    return ("-", "--", ":", "-.")[(i // 10) % 4]


def _legend_below(fig, axes) -> None:
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=min(len(handles), 4),
                   frameon=False, fontsize=9)


def plot_overlays(runs: list[Run], out: Path) -> list[tuple[Path, str]]:
    """The comparison figures, each with its caption; a sweep's first."""
    swept = _sweep(runs)
    overlays = [_overlay_sweep(runs, *swept, out)] if swept else []
    return overlays + [_overlay_quality(runs, out), _overlay_loss(runs, out), _overlay_staleness(runs, out)]


def _sweep(runs: list[Run]) -> tuple[list[str], list[str]] | None:
    """``(swept, grouping)`` setting keys when the runs sweep one number over
    three or more values (keys that always change together count as one, as
    in a joint sweep), one line per value of the other differing settings
    (the compared configs)."""
    differing = {key: tuple(run.settings.get(key) for run in runs) for key in _differing(runs)}
    swept = [key for key, column in differing.items()
             if all(is_number(v) for v in column) and len(set(column)) >= 3]
    if not swept or any(differing[key] != differing[swept[0]] for key in swept):
        return None
    others = [key for key in differing if key not in swept]
    groups = {tuple(repr(run.settings.get(key)) for key in others) for run in runs}
    if len(groups) * 2 > len(runs):
        return None  # a line needs two points
    # Label the lines by the one setting that tells the groups apart, if there is one.
    telling = [key for key in others if len(set(map(repr, differing[key]))) == len(groups)]
    return swept, (telling[:1] if telling else others)


def _overlay_sweep(runs: list[Run], swept: list[str], grouping: list[str], out: Path) -> tuple[Path, str]:
    metric = "rmse" if all(run.metric == "rmse" for run in runs) else "accuracy"
    x_label = " = ".join(swept)
    fig, axes = _figure(f"final results against {x_label}", 2)
    lines: dict[str, list[tuple[float, dict]]] = {}
    for run in runs:
        label = ", ".join(f"{key}={run.settings.get(key)}" for key in grouping) or "runs"
        lines.setdefault(label, []).append((run.settings[swept[0]], run.summary.get("final", {})))
    xs_all = [x for points in lines.values() for x, _ in points]
    for ax, key, title in ((axes[0], "test_loss", "final test loss"), (axes[1], f"test_{metric}",
                                                                         f"final test {metric}")):
        for i, (label, points) in enumerate(lines.items()):
            points = sorted((x, final[key]) for x, final in points if is_number(final.get(key)))
            if points:
                ax.plot(*zip(*points), color=_colour(i), linestyle=_style(i), marker="o", linewidth=1.8, label=label)
        if not ax.lines:
            _note(ax, f"no final {key}")
            continue
        if min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 10:
            ax.set_xscale("log")
            ax.set_xticks(sorted(set(xs_all)), [f"{x:g}" for x in sorted(set(xs_all))])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        if key == "test_accuracy":
            ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.set(title=title, xlabel=x_label, ylabel=key.replace("_", " "))
        ax.grid(alpha=0.3)
    _legend_below(fig, axes)
    caption = f"Each run's final test loss and {metric}, against the swept {x_label}."
    return _save(fig, out / "compare_sweep.png"), caption


def _overlay_quality(runs: list[Run], out: Path) -> tuple[Path, str]:
    metric = "rmse" if all(run.metric == "rmse" for run in runs) else "accuracy"
    what = "test RMSE" if metric == "rmse" else "test accuracy"
    fig, axes = _figure(what, 2)
    targets = {run.summary.get("target_accuracy") for run in runs} - {None}
    for ax, x, xlabel in ((axes[0], "time", "time (s)"), (axes[1], "updates", "updates applied")):
        for i, run in enumerate(runs):
            xs, ys = run.series(run.evals, x, f"test_{metric}")
            if len(xs):
                ax.plot(xs, ys, color=_colour(i), linestyle=_style(i), marker="o", markersize=3, linewidth=1.8,
                        label=run.name)
        if not ax.lines:
            _note(ax, f"no eval records with {what}")
            continue
        if metric == "accuracy":
            for target in sorted(targets):
                ax.axhline(target, color="#2e8b57", linestyle="--", linewidth=1, label=f"target {target:g}")
            ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.set(title=f"against {xlabel.split(' (')[0]}", xlabel=xlabel,
               ylabel=what + (" (lower is better)" if metric == "rmse" else ""))
        ax.grid(alpha=0.3)
    _legend_below(fig, axes)
    caption = f"{what.capitalize()} at each evaluation, against time and against updates applied."
    return _save(fig, out / "compare_quality.png"), caption


def _overlay_loss(runs: list[Run], out: Path) -> tuple[Path, str]:
    fig, (loss, updates) = _figure("test loss and throughput", 2)
    for i, run in enumerate(runs):
        style = {"color": _colour(i), "linestyle": _style(i), "linewidth": 1.8, "label": run.name}
        xs, ys = run.series(run.evals, "time", "test_loss")
        if len(xs):
            loss.plot(xs, ys, marker="o", markersize=3, **style)
        xs, ys = run.series(run.evals, "time", "updates")
        if len(xs):
            updates.plot(np.concatenate([[0.0], xs]), np.concatenate([[0.0], ys]), **style)
    for ax, text in ((loss, "no eval records with a test loss"), (updates, "no eval records count updates")):
        if not ax.lines:
            _note(ax, text)
    if loss.lines:
        values = np.concatenate([line.get_ydata() for line in loss.lines])
        if values.min() > 0 and values.max() / values.min() > 5:
            loss.set_yscale("log")
        loss.set(title="test loss against time", xlabel="time (s)", ylabel="test loss")
    updates.set(title="updates applied against time (slope: updates per second)", xlabel="time (s)",
                ylabel="updates applied")
    for ax in (loss, updates):
        ax.grid(alpha=0.3)
    _legend_below(fig, (loss, updates))
    caption = "Test loss at each evaluation, and how fast each run applied updates."
    return _save(fig, out / "compare_loss.png"), caption


def _overlay_staleness(runs: list[Run], out: Path) -> tuple[Path, str]:
    fig, (histogram, boxes) = _figure("staleness of every push (updates its parameters missed)", 2)
    values = [run.staleness() for run in runs]
    shown = [(i, run, v) for i, (run, v) in enumerate(zip(runs, values)) if len(v)]
    if not shown:
        _note(histogram, "no push records")
        _note(boxes, "no push records")
    else:
        _histograms(histogram, [v for _, _, v in shown], [run.name for _, run, _ in shown],
                    [_colour(i) for i, _, _ in shown], [_style(i) for i, _, _ in shown])
        histogram.set(title="distribution", xlabel="staleness (updates)", ylabel="fraction of the run's pushes")
        for row, (i, _, v) in enumerate(shown, start=1):  # drawn by hand: boxplot's orientation API keeps moving
            p5, q1, median, q3, p95 = np.percentile(v, [5, 25, 50, 75, 95])
            boxes.hlines(row, p5, p95, color="black", linewidth=1)
            boxes.vlines([p5, p95], row - 0.15, row + 0.15, color="black", linewidth=1)
            boxes.barh(row, max(q3 - q1, 0.05), left=q1 if q3 > q1 else q1 - 0.025, height=0.6, color=_colour(i),
                       alpha=0.8, edgecolor="black", zorder=2)
            boxes.vlines(median, row - 0.3, row + 0.3, color="black", linewidth=2, zorder=3)
            boxes.plot(v.mean(), row, marker="D", markerfacecolor="white", markeredgecolor="black", zorder=4)
        boxes.set_yticks(np.arange(1, len(shown) + 1), [run.name for _, run, _ in shown], fontsize=8)
        boxes.invert_yaxis()
        boxes.set(title="per run", xlabel="staleness (updates): box quartiles, whiskers p5 to p95, \u25c7 mean")
    for ax in (histogram, boxes):
        ax.grid(alpha=0.3)
    _legend_below(fig, (histogram,))
    caption = "How stale each run's pushes were: the whole distribution, and its quartiles and tails side by side."
    return _save(fig, out / "compare_staleness.png"), caption


# -- the report -------------------------------------------------------------------
def report(run_dirs: list[str | Path], out: str | Path | None = None) -> Path:
    """Plot each run, overlay several, and write ``out/report.html``; return its path.

    ``out`` defaults to the run directory for one run and ``runs/report`` for several.
    """
    runs = [load_run(d) for d in dict.fromkeys(Path(d) for d in run_dirs)]
    if not runs:
        raise ValueError("Invalid report: no run directories given (pass one or more directories asyncps run wrote)")
    out = Path(out) if out is not None else runs[0].dir if len(runs) == 1 else Path("runs/report")
    out.mkdir(parents=True, exist_ok=True)
    pictures = {}
    for run in runs:
        loss, quality, staleness = plot_run(run.dir)
        pictures[run.dir] = [(p, _CAPTIONS[p.name]) for p in
                             (quality, loss, staleness, plot_progress(run), plot_staleness_breakdown(run))]
    overlays = plot_overlays(runs, out) if len(runs) > 1 else []
    html_file = out / "report.html"
    swatches = [matplotlib.colors.to_hex(_colour(i)) for i in range(len(runs))]
    html_file.write_text(page(runs, out, _differing(runs), swatches, overlays, pictures))
    return html_file


_CAPTIONS = {
    "accuracy.png": "Validation and test accuracy against time and updates applied.",
    "rmse.png": "Validation and test RMSE against time and updates applied.",
    "loss.png": "Each worker's training loss (smoothed) with the validation and test loss.",
    "staleness.png": "Staleness of every push, per worker, and between evaluations.",
    "progress.png": "Steps each worker completed over time, and its rate: a straggler lags and is red.",
    "staleness_breakdown.png": "Staleness distribution of each worker's pushes and of each shard's.",
}


def _differing(runs: list[Run]) -> list[str]:
    """The dotted settings whose values are not the same in every run, in config order."""
    keys = list(dict.fromkeys(key for run in runs for key in run.settings))
    return [key for key in keys if key not in SKIPPED_KEYS
            and len({json.dumps(run.settings.get(key), sort_keys=True, default=str) for run in runs}) > 1]
