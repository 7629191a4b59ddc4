"""``lab.reports.plots``: the pictures of a run directory, from synthetic metrics."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from asyncps.lab.metrics import read_metrics
from asyncps.lab.reports.plots import plot_run

WORKERS, SHARDS, SECONDS = 4, 2, 30.0


def synthetic_run(*, pushes: bool = True, regression: bool = False, died: int | None = 2) -> list[dict]:
    """A deterministic run: 4 workers (worker 3 slow), 2 shards, an eval every 2 s, worker ``died`` dies at 20 s."""
    rng = np.random.default_rng(0)
    records, updates, versions = [], 0, [0] * SHARDS
    steps = {w: 0 for w in range(WORKERS)}
    next_at = {w: rng.uniform(0.0, 0.3) for w in range(WORKERS)}
    next_eval = 2.0
    while True:
        worker = min(next_at, key=next_at.get)
        time = next_at[worker]
        if time >= next_eval:
            quality = 1.0 - math.exp(-next_eval / 6.0)
            record = {"kind": "eval", "time": round(next_eval, 3), "updates": updates,
                      "val_loss": 2.3 * math.exp(-next_eval / 6.0) + 0.08, "test_loss": 2.3 * math.exp(
                          -next_eval / 6.0) + 0.1,
                      "staleness": {"mean": 2.0 + next_eval / 15, "p95": 5.0 + next_eval / 10, "max": 9.0,
                                    "count": 40}}
            if regression:
                record |= {"val_rmse": 1.5 - 0.6 * quality, "test_rmse": 1.55 - 0.6 * quality}
            else:
                record |= {"val_accuracy": 0.1 + 0.88 * quality, "test_accuracy": 0.1 + 0.86 * quality}
            records.append(record)
            if next_eval >= SECONDS:
                records.append({"kind": "event", "time": round(next_eval, 3), "message": "early stopping"})
                return records
            next_eval += 2.0
            continue
        steps[worker] += 1
        loss = 2.3 * math.exp(-time / 6.0) + 0.1 + abs(rng.normal(0, 0.15)) * math.exp(-time / 12.0)
        records.append({"kind": "train", "time": round(time, 4), "worker": worker, "step": steps[worker],
                        "loss": loss})
        for shard in range(SHARDS):
            staleness = int(rng.poisson(2.0 + 4.0 * (worker == 3)))
            applied = staleness <= 8
            if pushes:
                records.append({"kind": "push", "time": round(time, 4), "worker": worker, "shard": shard,
                                "version": versions[shard], "staleness": staleness, "applied": applied})
            versions[shard] += applied
            updates += applied
        next_at[worker] = time + rng.uniform(0.15, 0.35) * (2.5 if worker == 3 else 1.0)
        if worker == died and next_at[worker] > 20.0:
            records.append({"kind": "event", "time": 20.0, "message": f"worker {worker} died"})
            del next_at[worker]


def write_run(run_dir, records, config: str | None = None, summary: dict | None = None):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if config is not None:
        (run_dir / "config.toml").write_text(config)
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


CONFIG = """name = "quickstart"\n[cluster]\nworkers = 4\nshards = 2\n[protocol]\nname = "downpour"\n
[server]\noptimizer = "adagrad"\n[train]\ntarget_accuracy = 0.9\n"""


def check_png(path, min_width=800, min_height=400):
    assert path.is_file()
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width >= min_width and height >= min_height
        assert np.asarray(image.convert("L")).std() > 5  # not a blank page


def test_the_synthetic_run_has_every_kind():
    records = synthetic_run()
    kinds = {kind: sum(r["kind"] == kind for r in records) for kind in ("train", "push", "eval", "event")}
    assert 300 < len(records) < 2000 and kinds["eval"] == 15 and kinds["event"] == 2
    assert kinds["push"] == 2 * kinds["train"]


def test_plot_run_writes_three_pngs(tmp_path):
    run_dir = write_run(tmp_path / "quickstart", synthetic_run(), CONFIG)
    paths = plot_run(run_dir)
    assert [p.name for p in paths] == ["loss.png", "accuracy.png", "staleness.png"]
    for path in paths:
        assert path.parent == run_dir
        check_png(path)


def test_without_push_records_loss_still_plots_and_a_regression_run_plots_rmse(tmp_path):
    run_dir = write_run(tmp_path / "mf", synthetic_run(pushes=False, regression=True),
                        summary={"train": {"target_accuracy": 0.9}})
    paths = plot_run(run_dir)
    assert [p.name for p in paths] == ["loss.png", "rmse.png", "staleness.png"]
    assert not (run_dir / "accuracy.png").exists()
    for path in paths:
        check_png(path)


@pytest.mark.parametrize("records", [[],
                                     [{"kind": "train", "time": 0.1, "worker": 0, "step": 1, "loss": 2.0},
                                      {"kind": "event", "time": 1.0, "message": "worker 0 died"}],
                                     [{"kind": "eval", "time": 1.0, "updates": 3, "val_loss": 1.0},
                                      {"kind": "push", "time": 0.5, "staleness": 3}, {"kind": "train"}]],
                         ids=["empty", "one-train-record-and-an-event", "odd-records"])
def test_sparse_runs_plot_with_notes_and_never_crash(tmp_path, records):
    run_dir = write_run(tmp_path / "sparse", records)
    for path in plot_run(run_dir):
        check_png(path, min_width=600, min_height=300)


def test_read_metrics_skips_a_cut_last_line_and_names_a_bad_one(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    good = [{"kind": "train", "time": 0.5, "worker": 0, "step": 1, "loss": 1.0}] * 2
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good) + '{"kind": "tr')
    assert read_metrics(run_dir) == good
    (run_dir / "metrics.jsonl").write_text("{oops\n" + json.dumps(good[0]) + "\n")
    with pytest.raises(ValueError, match=r"^Invalid metrics line .*metrics\.jsonl:1: "):
        read_metrics(run_dir)


def test_a_directory_without_metrics_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"^Invalid run directory: .* \(no metrics\.jsonl in it"):
        plot_run(tmp_path)


def overlapping_tick_labels(fig) -> list[str]:
    """The tick labels of ``fig`` that overlap a neighbour, drawn as saved."""
    fig.canvas.draw()
    renderer, clashes = fig.canvas.get_renderer(), []
    for ax in fig.axes:
        for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
            shown = [label for label in labels if label.get_visible() and label.get_text()]
            boxes = [label.get_window_extent(renderer) for label in shown]
            clashes += [f"{ax.get_title()!r}: {a.get_text()} and {b.get_text()}"
                        for (a, box_a), (b, box_b) in zip(zip(shown, boxes), zip(shown[1:], boxes[1:]))
                        if box_a.overlaps(box_b)]
    return clashes


def test_with_64_workers_no_tick_labels_overlap(tmp_path, monkeypatch):
    from asyncps.lab.reports import breakdown, figures, plots
    from asyncps.lab.reports.report import report
    from asyncps.lab.runner import run
    from asyncps.lab.config import load_config

    run_dir = run(load_config(None, [f"out_dir={tmp_path}", "backend=sim", "cluster.workers=64",
                                     "train.epochs=2"]), progress=False)
    clashes, real_save = [], figures.save

    def save(fig, path):  # each figure as it is saved
        clashes.extend(f"{path.name} {clash}" for clash in overlapping_tick_labels(fig))
        return real_save(fig, path)

    for module in (figures, plots, breakdown):
        monkeypatch.setattr(module, "save", save, raising=False)
    report([run_dir], tmp_path / "report")
    assert clashes == []
