"""The papers' claims, checked on the reproductions in experiments/.

Each reproduction is an ``asyncps compare`` of configs in virtual time (the
sim backend, deterministic: the same numbers every run). This script makes
the same comparison as the command printed beside it, writes its report under
``--out``, and checks the paper's claim on the runs' summaries (and, for
the delays, their records). A claim that fails is printed as MISSED with the
numbers, and the script exits 1.

    python benchmarks/reproductions.py [--only 1,2,4,5] [--out runs/reproductions]

1. McMahan & Streeter 2014: as the delay grows (0, 10, 100, 500, 1000
   pushes, the paper's gradients: 1, 11, 101, 501 and 1001 workers taking
   turns), asynchronous AdaGrad degrades; AdaptiveRevision stays near its
   no-delay loss at one fixed alpha. The delay is measured on the runs
   (``delay_in_pushes``). What holds: AdaptiveRevision within 10% up to 500
   pushes and below AdaGrad from 100 on; at 1000 it rises about 24%.
2. Zhang, Choromanska & LeCun 2015: as the communication period tau grows
   (1, 4, 16, 64) with 4 workers, Downpour degrades or diverges while EASGD
   and EAMSGD stay stable.
4. Dean et al. 2012: as the workers grow (8, 32, 64), Downpour with
   server-side Adagrad stays stable; with a fixed learning rate it does not.
   Both methods are tuned alike at every count (``RATES``, ``SEEDS``: 126
   runs, about 11 of this script's 15 minutes on 2 shared cores; 1 takes 3,
   2 about 1), the rate chosen on the validation loss. What holds: at the
   rates tuned for 8 workers, the fixed rate fails with more workers and
   Adagrad's does not. Each tuned at its own count, both are stable, and
   neither is better at every count.
5. Smith, Kindermans, Ying & Le 2018: halving the learning rate at epochs 10
   and 20, or doubling the batch at those epochs instead, gives the same test
   loss epoch by epoch; the growing batch takes fewer updates (half a minute).
(Reproduction 3, Hogwild!, runs on real threads: benchmarks/hogwild_bench.py.)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from asyncps.lab.config import Config, load_config
from asyncps.lab.experiment import Experiment
from asyncps.lab.metrics import push_delays, read_metrics
from asyncps.lab.reports.compare import compare, parse_sweep, plan

NEAR = 1.10  # "stays near": a final test loss within 10% of the reference's
CHANCE_LOSS = math.log(10)  # cross-entropy of a uniform guess over the 10 digits

# Reproduction 4 tunes each method's rate the same way at every worker count: every rate of one grid, a factor
# of 2 apart, on SEEDS seeds (each its own data split, initial parameters and delays), and at each count the rate
# with the lowest final validation loss, the mean over the seeds. The validation split (10% of the digits) is never
# trained on; the test split only reports. The grid is wide enough that no count's choice is at an end of it.
RATES = (0.00625, 0.0125, 0.025, 0.05, 0.1, 0.2, 0.4)
WORKER_COUNTS = (8, 32, 64)
SEEDS = 3
METHODS = {"adagrad": "Adagrad", "sgd": "fixed-rate SGD"}

REPRODUCTIONS = {
    1: (["experiments/delay_adagrad.toml", "experiments/delay_dtadagrad.toml"], "cluster.workers=1,11,101,501,1001"),
    2: (["experiments/tau_downpour.toml"], "protocol.options.n_fetch+protocol.options.n_push=1,4,16,64",
        ["experiments/tau_easgd.toml", "experiments/tau_eamsgd.toml"], "protocol.options.tau=1,4,16,64"),
    4: (["experiments/workers_adagrad.toml", "experiments/workers_sgd.toml"],
        "server.options.lr=" + ",".join(f"{rate:g}" for rate in RATES)),
    5: (["experiments/lr_decay.toml", "experiments/batch_growth.toml", "experiments/lr_constant.toml"], None),
}
SAME = 0.05  # "the same test loss": within 5% of each other


def run_comparison(configs: list[str], sweep: str | None, out: Path, overrides: list[str] = (), seeds: int = 1,
                   failures_allowed: bool = False) -> list[tuple[Config, dict]]:
    """Each run's config and summary, in the comparison's order; a failed run's
    summary is ``{"failed": error}`` where ``failures_allowed``, and otherwise
    fails the reproduction (its every run is part of its claim)."""
    flags = "".join(f" --set {o}" for o in overrides) + (f" --seeds {seeds}" if seeds > 1 else "")
    flags = (f" --sweep {sweep}" if sweep else "") + flags
    print(f"  asyncps compare {' '.join(configs)}{flags} --out {out}")
    planned = plan(configs, [parse_sweep(sweep)] if sweep else [], list(overrides), out=out, seeds=seeds)
    _, failures = compare(planned, out, progress=False, echo=lambda line: print(f"    {line}"))
    if failures and not failures_allowed:
        raise RuntimeError("runs of the reproduction failed:\n" + "\n".join(failures))
    failed = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in failures}
    return [(config, {"failed": failed[config.name]} if config.name in failed
             else json.loads((config.run_dir / "summary.json").read_text())) for config in planned]


def by_base(runs: list[tuple[Config, dict]]) -> dict[str, list[tuple[Config, dict]]]:
    """The runs grouped by their base config's name, each group in sweep order."""
    groups: dict[str, list[tuple[Config, dict]]] = {}
    for config, summary in runs:
        groups.setdefault(config.name.split("-")[0], []).append((config, summary))
    return groups


def summaries(runs: list[tuple[Config, dict]]) -> dict[str, list[dict]]:
    """The summaries of the runs, grouped by their base config's name, each group in sweep order."""
    return {name: [summary for _, summary in group] for name, group in by_base(runs).items()}


def loss(summary: dict) -> float:
    return summary["final"]["test_loss"]


def verdict(ok: bool, claim: str) -> bool:
    print(f"  {'OK    ' if ok else 'MISSED'} {claim}")
    return ok


def delay_in_pushes(run_dir: Path) -> dict:
    """A run's delay as McMahan & Streeter count it, in pushes (gradients): the
    median and mean over its push records of the other pushes each one missed
    (``lab.metrics.push_delays``). Its ``staleness`` counts shard updates
    instead, and a sparse model's push makes two (its rows, then its bias)."""
    delays = np.asarray(push_delays(read_metrics(run_dir)))
    return {"median": float(np.median(delays)), "mean": float(delays.mean())}


def delays(out: Path) -> bool:
    configs, sweep = REPRODUCTIONS[1]
    runs = by_base(run_comparison(configs, sweep, out / "1-delay"))
    adagrad, revision = ([summary for _, summary in runs[name]] for name in ("adagrad", "dtadagrad"))
    workers = [config.cluster.workers for config, _ in runs["adagrad"]]
    measured = [delay_in_pushes(config.run_dir) for config, _ in runs["adagrad"]]
    print("  workers:                  " + "  ".join(f"{k:7d}" for k in workers))
    print("  delay (pushes), median:   " + "  ".join(f"{d['median']:7.0f}" for d in measured))
    print("  delay (pushes), mean:     " + "  ".join(f"{d['mean']:7.1f}" for d in measured))
    print("  staleness (updates), mean:" + "  ".join(f"{s['staleness']['mean']:7.1f}" for s in adagrad))
    print("  AdaGrad test loss:        " + "  ".join(f"{loss(s):7.4f}" for s in adagrad))
    print("  AdaptiveRevision loss:    " + "  ".join(f"{loss(s):7.4f}" for s in revision))
    for name, runs in (("AdaGrad", adagrad), ("AdaptiveRevision", revision)):
        print(f"  {name + ', rise:':26s}" + "  ".join(f"{loss(s) / loss(runs[0]) - 1:+7.1%}" for s in runs))
    return all([
        verdict([d["median"] for d in measured] == [k - 1 for k in workers],
                f"with K workers taking turns a push misses the other K - 1 workers' pushes: median delays "
                f"{', '.join(str(k - 1) for k in workers)} pushes"),
        verdict(loss(adagrad[-1]) > NEAR * loss(adagrad[0]),
                "asynchronous AdaGrad degrades: at the largest delay its loss is more than 10% above no delay"),
        verdict(all(loss(s) <= NEAR * loss(revision[0]) for s in revision[:-1]),
                f"AdaptiveRevision stays within 10% of its no-delay loss up to {workers[-2] - 1} pushes (at the "
                f"largest delay, {workers[-1] - 1}, the paper's claim is not checked: its rise is printed above)"),
        verdict(all(loss(r) < loss(a) for r, a, k in zip(revision, adagrad, workers) if k - 1 >= 100),
                "at every delay of 100 pushes or more, AdaptiveRevision's loss is below AdaGrad's"),
    ])


def periods(out: Path) -> bool:
    downpour = summaries(run_comparison(*REPRODUCTIONS[2][:2], out / "2-tau-downpour"))["downpour"]
    elastic = summaries(run_comparison(*REPRODUCTIONS[2][2:], out / "2-tau-easgd"))
    print("  tau:                  " + "  ".join(f"{tau:7d}" for tau in (1, 4, 16, 64)))
    for name, runs in (("downpour", downpour), ("easgd", elastic["easgd"]), ("eamsgd", elastic["eamsgd"])):
        print(f"  {name:9s} accuracy:   " + "  ".join(f"{s['final']['test_accuracy']:7.4f}" for s in runs))
    accuracy = lambda s: s["final"]["test_accuracy"]  # noqa: E731
    return all([
        verdict(accuracy(downpour[-1]) < accuracy(downpour[0]) - 0.05,
                "Downpour degrades: at tau = 64 its accuracy is more than 5 points below tau = 1"),
        *(verdict(min(map(accuracy, elastic[name])) >= accuracy(elastic[name][0]) - 0.02,
                  f"{name.upper()} stays stable: at every tau within 2 points of tau = 1")
          for name in ("easgd", "eamsgd")),
    ])


class GridPoint(NamedTuple):
    """One method at one rate and worker count, over the seeds."""

    method: str
    workers: int
    rate: float
    val_loss: float  # the mean final validation loss: what the rate is chosen on (inf if a run failed)
    test_loss: float  # the mean final test loss: what is reported (nan if a run failed)
    test_losses: tuple[float, ...]  # each seed's


def grid_points(runs: list[tuple[Config, dict]]) -> list[GridPoint]:
    """The runs of a comparison, one point per method and rate, in the comparison's order."""
    seeds: dict[tuple[str, int, float], list[dict]] = {}
    for config, summary in runs:
        key = (config.name.split("-")[0], config.cluster.workers, float(config.server.options["lr"]))
        seeds.setdefault(key, []).append(summary)
    points = []
    for (method, workers, rate), group in seeds.items():
        finals = [summary.get("final") or {} for summary in group]
        val = [final.get("val_loss", math.nan) for final in finals]
        test = tuple(final.get("test_loss", math.nan) for final in finals)
        finished = not any(summary.get("failed") for summary in group) and all(map(math.isfinite, val + list(test)))
        points.append(GridPoint(method, workers, rate, statistics.fmean(val) if finished else math.inf,
                                statistics.fmean(test) if finished else math.nan, test))
    return points


def select(points: list[GridPoint]) -> GridPoint:
    """The selection rule: the lowest mean validation loss (of equal ones, the smaller rate)."""
    return min(points, key=lambda point: (point.val_loss, point.rate))


def print_grid(points: list[GridPoint]) -> None:
    """Per method, each rate's mean validation / test loss at each worker count; * marks the rate chosen there."""
    counts = sorted({point.workers for point in points})
    for method, title in METHODS.items():
        chosen = {select([p for p in points if p.method == method and p.workers == k]) for k in counts}
        print(f"  {title}: mean final validation / test loss over {SEEDS} seeds (* the rate chosen at that count)")
        print("    rate     " + "".join(f"{f'{k} workers':>17s}" for k in counts))
        for rate in sorted({point.rate for point in points if point.method == method}):
            cells = [next(p for p in points if (p.method, p.workers, p.rate) == (method, k, rate)) for k in counts]
            print((f"    {rate:<9g}" + "".join(f"{p.val_loss:9.3f} /{p.test_loss:6.3f}{'*' if p in chosen else ' '}"
                                            for p in cells)).rstrip())


def workers(out: Path) -> bool:
    configs, sweep = REPRODUCTIONS[4]
    points = []
    for k in WORKER_COUNTS:  # one comparison a count: its report's compare_sweep.png is the loss against the rate
        points += grid_points(run_comparison(configs, sweep, out / f"4-workers-{k}", [f"cluster.workers={k}"],
                                             seeds=SEEDS, failures_allowed=True))
    return judge_workers(points)


def judge_workers(points: list[GridPoint]) -> bool:
    """Reproduction 4's tables and verdicts, from its grid: each method at the
    rate chosen with the fewest workers (Dean et al.'s claim: Adagrad's rate
    carries over to more workers, a fixed one does not), and each tuned at
    every count (the fair comparison)."""
    print_grid(points)
    first, more = WORKER_COUNTS[0], WORKER_COUNTS[1:]
    at = {(p.method, p.workers, p.rate): p for p in points}
    tuned = {method: [select([p for p in points if (p.method, p.workers) == (method, k)]) for k in WORKER_COUNTS]
             for method in METHODS}
    kept = {method: [at[method, k, tuned[method][0].rate] for k in WORKER_COUNTS] for method in METHODS}
    print(f"  {'final test loss (rate: mean loss)':38s}" + "".join(f"{f'{k} workers':>16s}" for k in WORKER_COUNTS))
    for rows, label in ((kept, f"the {first}-worker rate"), (tuned, "tuned at each count")):
        for method, title in METHODS.items():
            print(f"  {f'{title}, {label}':38s}" + "".join(f"{p.rate:>8g}: {p.test_loss:6.3f}" for p in rows[method]))
    adagrad, sgd = tuned["adagrad"], tuned["sgd"]
    return all([
        verdict(all(p.test_loss < CHANCE_LOSS / 2 for p in kept["adagrad"]),
                f"at the rate tuned for {first} workers, Adagrad stays stable: at every count its mean test loss is "
                "below half of a uniform guess's"),
        verdict(all(p.test_loss >= 0.9 * CHANCE_LOSS for p in kept["sgd"][1:]),
                f"at the rate tuned for {first} workers, fixed-rate SGD does not: with {' and '.join(map(str, more))}"
                " workers its mean test loss is within 10% of a uniform guess's"),
        verdict(all(p.test_loss < CHANCE_LOSS / 2 for p in adagrad + sgd),
                "each tuned at its own count, both are stable: at every count below half of a uniform guess's loss"),
        verdict(sgd[0].test_loss < adagrad[0].test_loss and adagrad[-1].test_loss < sgd[-1].test_loss,
                f"each tuned at its own count, fixed-rate SGD's mean test loss is the lower with {first} workers, "
                f"Adagrad's with {WORKER_COUNTS[-1]}"),
    ])


def epoch_ends(config_path: str, run_dir: Path, epochs: range) -> tuple[list[int], list[float]]:
    """The round that ends each of ``epochs``, and the test loss there (a synchronous run's
    version counts its rounds, and these runs evaluate after every one)."""
    experiment = Experiment.build(load_config(config_path))
    ends = [min(shard.steps_for(e) for shard in experiment.data_shards) for e in epochs]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    at = {r["updates"]: r["test_loss"] for r in records if r["kind"] == "eval"}
    return ends, [at[end] for end in ends]


BATCH_RUNS = {"decay": "halving lr", "grow": "doubling batch", "constant": "neither"}


def plot_epochs(ends: dict, losses: dict, epochs: range, path: Path) -> None:
    """Test loss against epochs and against updates, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_epoch, by_update) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for name, label in BATCH_RUNS.items():
        by_epoch.plot(list(epochs), losses[name], label=label)
        by_update.plot(ends[name], losses[name], label=label)
    by_epoch.set(xlabel="epoch", ylabel="test loss", title="test loss at each epoch's end", yscale="log")
    by_update.set(xlabel="updates (synchronous rounds)", title="the same, against updates")
    by_epoch.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def batch_growth(out: Path) -> bool:
    configs = REPRODUCTIONS[5][0]
    runs = summaries(run_comparison(configs, None, out / "5-batch"))
    epochs = range(1, 31)
    ends, losses = {}, {}
    for name, path in zip(BATCH_RUNS, configs):
        ends[name], losses[name] = epoch_ends(path, out / "5-batch" / name, epochs)
    plot_epochs(ends, losses, epochs, out / "5-batch" / "epochs.png")
    print("  epoch:                   " + "  ".join(f"{e:7d}" for e in epochs[4::5]) + "   updates")
    for name, label in BATCH_RUNS.items():
        print(f"  {label + ' test loss:':25s}" + "  ".join(f"{v:7.4f}" for v in losses[name][4::5])
              + f"   {runs[name][0]['final']['updates']:7d}")
    gap = max(abs(g - d) / d for g, d in zip(losses["grow"], losses["decay"]))
    return all([
        verdict(gap <= SAME, f"the same test loss at every epoch's end: the growing batch within {SAME:.0%} of "
                             f"the decaying rate (largest gap {gap:.1%})"),
        verdict(runs["grow"][0]["final"]["updates"] < runs["decay"][0]["final"]["updates"],
                "the growing batch takes fewer updates"),
    ])


CHECKS = {1: delays, 2: periods, 4: workers, 5: batch_growth}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="1,2,4,5", help="which reproductions, e.g. 1,4")
    parser.add_argument("--out", type=Path, default=Path("runs/reproductions"))
    args = parser.parse_args()
    chosen = [int(n) for n in args.only.split(",")]
    unknown = [n for n in chosen if n not in CHECKS]
    if unknown:
        parser.error(f"no reproduction {unknown[0]}: choose from {sorted(CHECKS)}")
    results = {}
    for n in chosen:
        print(f"Reproduction {n}: {CHECKS[n].__name__}")
        results[n] = CHECKS[n](args.out)
    print("claims held: " + ", ".join(f"{n} {'OK' if ok else 'MISSED'}" for n, ok in results.items()))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
