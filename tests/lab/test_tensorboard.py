"""`asyncps run --tensorboard`: the run's scalars, as TensorBoard reads them back."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from asyncps.lab.config import load_config
from asyncps.lab.metrics import read_metrics
from asyncps.lab.runner import run
from asyncps.lab.tensorboard import STALENESS_WINDOW

SMALL = ["backend=sim", "cluster.workers=2", "train.epochs=2", "train.eval_every=10", "model.options.hidden=[16]"]


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_the_scalars_are_the_runs_records(tmp_path):
    run_dir = run(load_config(None, SMALL + [f"out_dir={tmp_path}"]), progress=False, tensorboard=True)
    records = read_metrics(run_dir)
    written = scalars(run_dir)
    evaluations = [r for r in records if r["kind"] == "eval"]
    for split in ("val", "test"):
        for metric in ("loss", "accuracy"):
            assert written[f"{split}/{metric}"] == [
                (r["updates"], pytest.approx(r[f"{split}_{metric}"], rel=1e-6)) for r in evaluations]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert [step for step, _ in written["train/loss"]] == list(range(1, len(losses) + 1))
    assert [value for _, value in written["train/loss"]] == pytest.approx(losses, rel=1e-6)
    pushes = [r["staleness"] for r in records if r["kind"] == "push"]
    windows = [pushes[i:i + STALENESS_WINDOW] for i in range(0, len(pushes) - STALENESS_WINDOW + 1, STALENESS_WINDOW)]
    assert written["staleness/mean"] == [(STALENESS_WINDOW * (i + 1), pytest.approx(sum(w) / len(w)))
                                         for i, w in enumerate(windows)]


def test_without_tensorboard_installed_the_flag_says_what_to_install_and_nothing_is_run(tmp_path):
    blocked = ("import sys; sys.modules['torch.utils.tensorboard'] = None; "
               "from asyncps.lab.cli.main import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", blocked, "run", "--tensorboard", "--set", "backend=sim",
                           "--set", f"out_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().endswith("Invalid --tensorboard here: the tensorboard package is not installed "
                                        "(pip install tensorboard)")
    assert not (tmp_path / "quickstart").exists()
