"""experiments/mnist.toml, fashion_mnist.toml and cifar10.toml run in virtual time, shrunk, on small
files written in the data sets' real formats; a missing data directory is one line naming the fix."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from asyncps.lab.config import load_config
from asyncps.lab.experiment import Experiment
from asyncps.lab.cli.main import main
from asyncps.lab.runner import run

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
# two workers, two epochs of 200 training images, an evaluation every 5 updates
SMALL = ["backend=sim", "cluster.workers=2", "train.epochs=2", "train.eval_every=5"]


def write_files(name: str, directory: Path, image_files) -> None:
    if name == "cifar10":
        image_files.cifar_dataset(directory, per_batch=40, n_test=50)
    else:
        image_files.idx_dataset(directory, n_train=200, n_test=50, gz=name == "mnist")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_the_experiment_config_runs_on_files_in_the_real_format(tmp_path, image_files, name):
    data = tmp_path / "data" / name
    write_files(name, data, image_files)
    shipped = (EXPERIMENTS / f"{name}.toml").read_text()
    assert f'options = {{ path = "data/{name}" }}' in shipped and f"asyncps data download {name} data/{name}" in shipped
    config_file = tmp_path / f"{name}.toml"
    config_file.write_text(shipped.replace(f'path = "data/{name}"', f'path = "{data.as_posix()}"'))
    config = load_config(config_file, SMALL + [f"out_dir={tmp_path / 'runs'}"])
    run_dir = run(config, progress=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["failed"] is None
    assert summary["final"]["test_accuracy"] > 0.5  # the images are easy: a bright block where the label says
    rerun = load_config(run_dir / "config.toml")
    assert rerun.data.options == {"path": data.as_posix()} and rerun.data.dataset == name


def test_a_limit_runs_on_the_first_images_only(tmp_path, image_files):
    image_files.idx_dataset(tmp_path / "mnist", n_train=200, n_test=50)
    config = load_config(EXPERIMENTS / "mnist.toml", SMALL + [f"data.options.path={tmp_path / 'mnist'}",
                                                              "data.options.limit=60", f"out_dir={tmp_path}"])
    experiment = Experiment.build(config)
    # 6 images of each class, round(0.6) = 1 of each to val; the test set whole
    assert [len(s) for s in (experiment.dataset.train, experiment.dataset.val, experiment.dataset.test)] == [50, 10, 50]
    assert experiment.steps == 2  # two epochs of one batch: 25 examples a worker, batches of 32


def test_a_run_without_the_files_says_how_to_get_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(EXPERIMENTS / "cifar10.toml"), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        "asyncps run: error: Invalid config [data]: Invalid path: 'data/cifar10' (no such directory: download the "
        "files there with: asyncps data download cifar10 data/cifar10)\n")
    assert not (tmp_path / "runs").exists()


def test_a_corrupt_file_names_the_file_under_its_config_section(tmp_path, image_files):
    image_files.idx_dataset(tmp_path, n_train=20, n_test=10)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:20])
    config = load_config(EXPERIMENTS / "fashion_mnist.toml", [f"data.options.path={tmp_path}"])
    with pytest.raises(ValueError) as caught:
        Experiment.build(config)
    assert re.fullmatch(rf"Invalid config \[data\]: Invalid gzip file: '{labels}' \(truncated or corrupt: .*; "
                        r"delete it and download it again\)", str(caught.value))
