"""The benchmarks' verdicts: a missed target is an exit code, not only a word
in the output (``make bench`` fails on it). No timing is measured here. The
reproductions' measures and rules, on small runs and made-up grids."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
from pathlib import Path

import pytest

from asyncps.lab.config import load_config
from asyncps.lab.reports.compare import parse_sweep
from asyncps.lab.reports.rundir import read_summary
from asyncps.lab.runner import run

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"


def timing():
    """benchmarks/timing.py, which the benchmarks import as a sibling script."""
    spec = importlib.util.spec_from_file_location("timing", BENCHMARKS / "timing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOAD = r"load average \d+\.\d\d, \d+\.\d\d, \d+\.\d\d \(1, 5, 15 min\) on \d+ CPUs"


def test_a_missed_target_makes_the_exit_code_1_and_the_load_average_is_printed(capsys):
    targets = timing().Targets()
    assert [targets.verdict(True), targets.verdict(False), targets.verdict(True)] == ["OK", "MISSED", "OK"]
    assert targets.report() == 1
    assert re.fullmatch(rf"2/3 targets met; {LOAD}\n", capsys.readouterr().out)


def test_targets_all_met_exit_0(capsys):
    targets = timing().Targets()
    targets.verdict(True)
    assert targets.report() == 0
    assert re.fullmatch(rf"1/1 targets met; {LOAD}\n", capsys.readouterr().out)


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*_bench.py")))
def test_every_benchmark_exits_with_its_verdicts(script):
    source = (BENCHMARKS / script).read_text()
    assert "targets.verdict(" in source and "return targets.report()" in source
    assert "'OK' if" not in source  # every verdict is counted
    assert re.search(r'if __name__ == "__main__":\n(.*\n)*    sys\.exit\((main\(\)|code)\)', source)


def reproductions():
    """benchmarks/reproductions.py, loaded as the script it is."""
    spec = importlib.util.spec_from_file_location("reproductions", BENCHMARKS / "reproductions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reproduction_1_sweeps_the_workers_for_delays_of_0_10_100_500_and_1000_pushes():
    _, sweep = reproductions().REPRODUCTIONS[1]
    key, values = parse_sweep(sweep)
    assert key == "cluster.workers"
    assert [int(k) - 1 for k in values] == [0, 10, 100, 500, 1000]  # K workers taking turns: K - 1 pushes missed


@pytest.mark.parametrize("workers", [1, 4])
def test_reproduction_1_reports_the_delay_in_pushes_not_in_shard_updates(tmp_path, workers):
    """A small run of reproduction 1's config: a push makes two updates (its
    rows, then its bias), and misses the other workers' pushes, K - 1."""
    config = load_config(REPO / "experiments/delay_adagrad.toml", [
        f"cluster.workers={workers}", "data.options.num_examples=400", "data.options.num_features=200",
        "train.epochs=1", "train.eval_every=100000", f"out_dir={tmp_path}"])
    run_dir = run(config, progress=False)
    delay = reproductions().delay_in_pushes(run_dir)
    assert delay["median"] == workers - 1
    assert delay["mean"] <= workers - 1  # less in the first round, when every worker read the initial parameters
    staleness = read_summary(run_dir)["staleness"]["mean"]
    assert staleness > 2 * delay["mean"]  # updates: the other workers' two a push, and its own rows


def grid_run(method: str, rate: float, seed: int, val_loss: float, test_loss: float, failed: str | None = None):
    config = load_config(REPO / f"experiments/workers_{method}.toml", [f"server.options.lr={rate}", f"seed={seed}"])
    config = dataclasses.replace(config, name=f"{method}-server.options.lr={rate}-seed={seed}")
    summary = {"failed": failed} if failed else {"final": {"val_loss": val_loss, "test_loss": test_loss}}
    return config, summary


def test_reproduction_4_tunes_both_methods_on_one_grid_of_rates_a_factor_of_2_apart():
    module = reproductions()
    configs, sweep = module.REPRODUCTIONS[4]
    assert [Path(c).stem.removeprefix("workers_") for c in configs] == list(module.METHODS)
    key, values = parse_sweep(sweep)
    assert key == "server.options.lr" and [float(v) for v in values] == list(module.RATES)
    assert all(b == 2 * a for a, b in zip(module.RATES, module.RATES[1:]))
    assert module.SEEDS >= 2


def test_reproduction_4_chooses_the_rate_on_the_mean_validation_loss_never_the_test_loss():
    module = reproductions()
    runs = [grid_run("sgd", 0.1, seed, val_loss=0.5, test_loss=0.1) for seed in (0, 1)]  # the best test loss
    runs += [grid_run("sgd", 0.05, 0, val_loss=0.1, test_loss=0.3), grid_run("sgd", 0.05, 1, 0.3, 0.3)]  # mean 0.2
    runs += [grid_run("sgd", 0.025, 0, 0.01, 0.01), grid_run("sgd", 0.025, 1, 0, 0, failed="diverged")]
    points = module.grid_points(runs)
    assert [(p.rate, p.val_loss) for p in points] == [(0.1, 0.5), (0.05, pytest.approx(0.2)), (0.025, math.inf)]
    assert module.select(points).rate == 0.05
    assert points[1].test_losses == (0.3, 0.3) and math.isnan(points[2].test_loss)


def grid(losses: dict[str, dict[int, dict[float, float]]]) -> list:
    """Grid points with the given test losses, each rate's validation loss the same as its test loss."""
    module = reproductions()
    return [module.GridPoint(method, workers, rate, loss, loss, (loss,))
            for method, counts in losses.items() for workers, rates in counts.items() for rate, loss in rates.items()]


def test_reproduction_4_holds_on_a_grid_like_the_papers_and_misses_when_the_fixed_rate_carries_over(capsys):
    module = reproductions()
    papers = grid({"adagrad": {8: {0.05: 0.17, 0.025: 0.2}, 32: {0.05: 0.4, 0.025: 0.23}, 64: {0.05: 0.8, 0.025: 0.3}},
                   "sgd": {8: {0.1: 0.12, 0.025: 0.25}, 32: {0.1: 2.2, 0.025: 0.26}, 64: {0.1: 2.3, 0.025: 0.44}}})
    assert module.judge_workers(papers)
    out = capsys.readouterr().out
    assert "  fixed-rate SGD, the 8-worker rate          0.1:  0.120     0.1:  2.200     0.1:  2.300\n" in out
    assert "  fixed-rate SGD, tuned at each count        0.1:  0.120   0.025:  0.260   0.025:  0.440\n" in out
    assert "    0.025        0.250 / 0.250     0.260 / 0.260*    0.440 / 0.440*\n" in out
    carries = grid({"adagrad": {8: {0.05: 0.17}, 32: {0.05: 0.4}, 64: {0.05: 0.8}},
                    "sgd": {8: {0.1: 0.12}, 32: {0.1: 0.3}, 64: {0.1: 0.5}}})
    assert not module.judge_workers(carries)
    assert "MISSED at the rate tuned for 8 workers, fixed-rate SGD does not" in capsys.readouterr().out
