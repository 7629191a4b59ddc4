"""``lab.api``, asyncps from Python: ``run`` and ``compare`` on the ``sim`` backend, a fifth of an epoch on 2
workers (a second or two a run), and every refusal in the config's own words."""

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest
import torch

import asyncps.lab.api
from asyncps.lab.api import CompareResult, RunResult, compare, run
from asyncps.lab.config import load_config
from asyncps.lab.config_file import format_value, parse_value
from asyncps.lab.reports.compare import describe

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "experiments" / "quickstart.toml"
TINY = {"train.epochs": 0.2, "cluster.workers": 2, "train.eval_every": 2}


def test_run_returns_the_run_directory_and_reads_each_of_its_files(tmp_path, capsys):
    result = run(QUICKSTART, backend="sim", overrides={**TINY, "out_dir": str(tmp_path), "name": "a run",
                                                        "model.options": {"hidden": [16]}})
    assert capsys.readouterr().out == ""  # no progress bar unless asked

    assert isinstance(result, RunResult)
    assert result.dir == tmp_path / "a run" and result.failed is None
    assert result.config == load_config(result.dir / "config.toml")  # the resolved config that ran
    assert (result.config.backend, result.config.train.epochs, result.config.model.options) == \
        ("sim", 0.2, {"hidden": [16]})
    assert result.summary == json.loads((result.dir / "summary.json").read_text())
    assert result.summary["clock"] == "virtual" and result.summary["updates"] > 0

    lines = [json.loads(line) for line in (result.dir / "metrics.jsonl").read_text().splitlines()]
    assert result.records() == lines
    by_kind = {kind: result.records(kind) for kind in asyncps.lab.api.KINDS}
    assert sum(map(len, by_kind.values())) == len(lines) and by_kind["eval"] and by_kind["push"]  # every kind
    assert all(record["kind"] == kind for kind, records in by_kind.items() for record in records)
    with pytest.raises(ValueError, match=r"^Invalid record kind 'evals' \(choose one of: train, push, eval, "
                                         r"event, final\)$"):
        result.records("evals")

    assert result.plots == sorted(result.dir.glob("*.png"))
    assert {"loss.png", "accuracy.png", "staleness.png"} <= {path.name for path in result.plots}

    model = result.model()
    assert set(model) == {"dense", "tables"}
    assert {name: tuple(t.shape) for name, t in model["dense"].items()} == \
        {"fc1.weight": (16, 64), "fc1.bias": (16,), "out.weight": (10, 16), "out.bias": (10,)}
    assert all(torch.isfinite(t).all() for t in model["dense"].values())

    said = describe(result.dir).split(": ", 1)[1]  # what `asyncps run` prints of it, after the run's name
    assert repr(result) == f"<RunResult {str(result.dir)!r}: {said}>"
    assert RunResult.from_dir(result.dir) == result


def test_overrides_are_python_values_and_a_config_can_be_run_again(monkeypatch, tmp_path):
    ran = []
    monkeypatch.setattr(asyncps.lab.api.runner, "run", lambda config, progress, tensorboard: ran.append(config) or config.run_dir)
    first = run(overrides={"name": "2024", "server.options": {"lr": 0.05, "momentum": 0.9}, "server.optimizer": "sgd",
                           "model.options.hidden": [64, 32], "out_dir": tmp_path, "data.batch_size": "full"})
    assert (first.config.name, first.config.server.options, first.config.model.options, first.config.out_dir,
            first.config.data.batch_size) == ("2024", {"lr": 0.05, "momentum": 0.9}, {"hidden": [64, 32]},
                                              str(tmp_path), "full")
    again = run(first.config, backend="sim", overrides={"seed": 3})
    assert again.config == dataclasses.replace(first.config, seed=3, backend="sim")
    assert run(first.config).config is first.config  # nothing to apply: the very config
    assert ran == [first.config, again.config, first.config]


@pytest.mark.parametrize("overrides, dotted", [
    ({"train.epoch": 2}, "train.epoch=2"),
    ({"epochs": 2}, "epochs=2"),
    ({"cluster.workers": 0}, "cluster.workers=0"),
    ({"cluster.workers": "8"}, 'cluster.workers="8"'),  # a string is a string, as in TOML
    ({"server.optimizer": "adamm"}, "server.optimizer=adamm"),
])
def test_a_bad_key_or_value_is_the_configs_own_error_and_nothing_runs(overrides, dotted, tmp_path):
    with pytest.raises(ValueError) as expected:
        load_config(QUICKSTART, [dotted])
    assert str(expected.value).startswith("Invalid config ")
    with pytest.raises(ValueError) as err:
        run(QUICKSTART, overrides={**overrides, "out_dir": str(tmp_path / "runs")})
    assert str(err.value) == str(expected.value)
    with pytest.raises(ValueError) as err:
        run(load_config(QUICKSTART), overrides=overrides)
    assert str(err.value) == str(expected.value)
    with pytest.raises(ValueError) as err:
        compare(QUICKSTART, sweep={"seed": [0, 1]}, overrides=overrides, out=tmp_path / "cmp")
    assert str(err.value) == str(expected.value)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cmp").exists()


@pytest.mark.parametrize("call, message", [
    (lambda: run(overrides=["train.epochs=2"]),
     "Invalid overrides: ['train.epochs=2'] (give a dict of dotted keys to values, e.g. {'train.epochs': 2})"),
    (lambda: run(overrides={"train.epochs": None}),
     "Invalid config value None: TOML holds numbers, strings, booleans, lists and tables (dicts) only"),
    (lambda: run(overrides={1: 2}), "Invalid config key 1 (a dotted key, e.g. 'server.options.lr')"),
    (lambda: run(42), "Invalid config: 42 (give a TOML file's path, a lab.config.Config, or None for the defaults)"),
    (lambda: run(backend="cloud"), "Invalid config value backend = 'cloud' (choose one of: grpc, local, ray, sim)"),
    (lambda: compare(seeds=0), "Invalid seeds = 0 (must be an integer >= 1)"),
    (lambda: compare(sweep="protocol.name=downpour,sync"), "Invalid sweep: 'protocol.name=downpour,sync' (give a "
     "dict of dotted keys to lists of values, e.g. {'protocol.name': ['downpour', 'sync']})"),
    (lambda: compare(sweep={"seed": 1}), "Invalid sweep of 'seed': 1 (give a list of values, e.g. {'seed': [1, ...]})"),
    (lambda: compare(sweep={"name": ["a", "b"]}),
     "invalid sweep 'name=a,b': compare sets name for every run itself; sweep another key"),
    (lambda: compare(QUICKSTART), "nothing to compare: give two or more CONFIG files, a --sweep with two or more "
     "values (KEY=V1,V2,..., e.g. --sweep protocol.name=downpour,sync), or --seeds 2 or more"),
])
def test_each_refusal_says_the_fix(call, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a default run directory would go, had anything run
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == message
    assert list(tmp_path.iterdir()) == []


def test_compare_of_two_configs_returns_both_runs_and_the_report(tmp_path, capsys):
    configs = []
    for name, protocol in (("a", "downpour"), ("b", "sync")):
        configs.append(tmp_path / f"{name}.toml")
        configs[-1].write_text(f'name = "{name}"\nbackend = "sim"\n[protocol]\nname = "{protocol}"\n')
    result = compare(configs, overrides=TINY, out=tmp_path / "cmp")
    assert capsys.readouterr().out == ""

    assert isinstance(result, CompareResult)
    assert (result.dir, result.report, result.failures) == (tmp_path / "cmp", tmp_path / "cmp" / "report.html", [])
    assert result.report.is_file()
    assert [(r.dir, r.config.protocol.name, r.failed) for r in result.runs] == \
        [(tmp_path / "cmp" / "a", "downpour", None), (tmp_path / "cmp" / "b", "sync", None)]
    assert all(r.summary["updates"] > 0 and r.records("eval") for r in result.runs)
    assert repr(result) == "\n  ".join([f"<CompareResult {str(result.dir)!r}: 2 runs, 0 failed; report "
                                        f"{str(result.report)!r}>", *map(repr, result.runs)])


def test_compare_sweeps_python_values_and_marks_a_failed_run(tmp_path):
    """lr = -1 fails before it starts; the other runs. The runs are named as the command line names them."""
    result = compare(sweep={"server.options.lr": [-1, 0.1]}, overrides=TINY, backend="sim", out=tmp_path)
    assert [r.dir.name for r in result.runs] == ["quickstart-server.options.lr=-1", "quickstart-server.options.lr=0.1"]
    failed, ran = result.runs
    assert result.failures == [failed] and ran.failed is None
    assert failed.failed.startswith("ValueError: Invalid config [server]: Invalid learning rate: -1 ")
    assert failed.summary == {"failed": failed.failed}
    assert repr(failed) == f"<RunResult {str(failed.dir)!r}: failed: {failed.failed}>"
    with pytest.raises(ValueError, match=r"model.pt does not exist \(the run failed: ValueError: Invalid config"):
        failed.model()
    assert ran.config.server.options == {"lr": 0.1} and ran.model()["dense"]


@pytest.mark.parametrize("value", [8, 0.1, 1e30, -0.0, True, "sync", 'say "hi",\nthen go', "", [64, 32], [],
                                   {"lr": 0.1, "betas": [0.9, 0.99]}, {"a key": {"x": [1, "y"]}, "3": 10.0}])
def test_format_value_writes_toml_that_reads_back_as_the_value(value):
    text = format_value(value)
    assert "\n" not in text and tomllib.loads(f"v = {text}")["v"] == value and parse_value(text) == value
