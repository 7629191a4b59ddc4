"""``asyncps hogwild``: both configs in experiments/ run (shrunk), write their run
directory, and refuse bad values with a message naming the key."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from asyncps.lab.cli.main import main
from asyncps.lab.cli.hogwild import problem_from_dataset
from asyncps.lab.config import load_hogwild_config
from asyncps.protocols import hogwild
from asyncps.workers import load_dataset

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


@pytest.mark.parametrize("config, shrink, score", [
    ("hogwild_sparse.toml", ["data.options.num_examples=4000", "data.options.num_features=2000"], "test_error"),
    ("hogwild_mf.toml", ["data.options.num_users=200", "data.options.num_items=100", "data.options.observed=0.3"],
     "test_rmse"),
])
def test_each_experiment_runs_and_writes_its_run_directory(config, shrink, score, tmp_path, capsys):
    overrides = [f'out_dir="{tmp_path}"', "hogwild.epochs=3", *shrink]
    assert main(["hogwild", str(EXPERIMENTS / config), *[a for o in overrides for a in ("--set", o)]]) == 0

    name = config.removesuffix(".toml")
    record = json.loads((tmp_path / name / "hogwild.json").read_text())
    assert [r["epoch"] for r in record["history"]] == [1, 2, 3]
    assert record["threads"] == 2 and record["mode"] == "lockfree" and record["updates"] > 0
    assert score in record["history"][-1]
    resolved = tomllib.loads((tmp_path / name / "config.toml").read_text())
    assert resolved["hogwild"]["epochs"] == 3 and resolved["name"] == name
    printed = capsys.readouterr().out
    assert "examples/s" in printed and f"run directory: {tmp_path / name}/" in printed


@pytest.mark.parametrize("override, message", [
    ("hogwild.threads=0", "Invalid config value hogwild.threads = 0 (must be an integer >= 1)"),
    ("hogwild.mode=wild", "Invalid config value hogwild.mode = 'wild' (choose one of: lockfree, locked)"),
    ("hogwild.beta=2", "Invalid config value hogwild.beta = 2 (must be a number in (0, 1])"),
    ("hogwild.model=mlp", "Invalid config value hogwild.model = 'mlp' (choose one of: logistic, svm,"),
    ("hogwild.thread=1", "Invalid config key 'hogwild.thread': unknown key (known keys in [hogwild]: beta,"),
    ("data.dataset=imagenet", "Invalid config value data.dataset = 'imagenet' (choose one of:"),
    ("hogwild.model=matrix_factorization", "Invalid data set for model 'matrix_factorization': "
                                           "'sparse_synthetic' is sparse (use a ratings data set"),
    ("hogwild", "Invalid --set override: 'hogwild' (expected key=value, e.g. hogwild.threads=1)"),
])
def test_bad_values_are_one_line_errors(override, message, tmp_path, capsys):
    argv = ["hogwild", str(EXPERIMENTS / "hogwild_sparse.toml"), "--set", "data.options.num_examples=500",
            "--set", f'out_dir="{tmp_path}"', "--set", override]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_missing_config_file_is_an_error(capsys):
    assert main(["hogwild", "no/such.toml"]) == 2
    assert "Invalid config file: 'no/such.toml' (no such file)" in capsys.readouterr().err


def test_the_svm_model_is_the_hinge_loss_and_rank_0_is_the_data_sets():
    sparse = load_dataset("sparse_synthetic", num_examples=300, num_features=50, nnz=3)
    problem = problem_from_dataset(sparse, "svm")
    assert isinstance(problem, hogwild.SparseClassification) and problem.loss == "hinge"
    assert len(problem.train) == len(sparse.train) and len(problem.test) == len(sparse.test)
    ratings = load_dataset("matrix_completion", num_users=20, num_items=10, rank=4)
    assert problem_from_dataset(ratings, "matrix_factorization").rank == 4
    assert problem_from_dataset(ratings, "matrix_factorization", rank=2).rank == 2
    with pytest.raises(ValueError, match=r"Invalid model name: 'mlp' \(choose one of \['logistic', "):
        problem_from_dataset(sparse, "mlp")


def test_the_experiment_configs_load():
    for path in EXPERIMENTS.glob("hogwild*.toml"):
        config = load_hogwild_config(path)
        assert config.name == path.stem and config.hogwild.threads == 2
