"""The papers' claims, checked on the reproductions in experiments/.

Each reproduction is an ``asyncps compare`` of configs in virtual time (the
sim backend, deterministic: the same numbers every run). This script makes
the same comparison as the command printed beside it, writes its report under
``--out``, and checks the paper's claim on the runs' summaries. A claim that
fails is printed as MISSED with the numbers, and the script exits 1.

    python benchmarks/reproductions.py [--only 1,2,4] [--out runs/reproductions]

1. McMahan & Streeter 2014: as the delay grows (0, 10, 100, 1000 updates),
   asynchronous AdaGrad degrades; AdaptiveRevision stays near its no-delay
   loss at one fixed alpha.
2. Zhang, Choromanska & LeCun 2015: as the communication period tau grows
   (1, 4, 16, 64) with 4 workers, Downpour degrades or diverges while EASGD
   and EAMSGD stay stable.
4. Dean et al. 2012: as the workers grow (8, 32, 64), Downpour with
   server-side Adagrad stays stable; with a fixed learning rate it does not.
5. Smith, Kindermans, Ying & Le 2018: halving the learning rate at epochs 10
   and 20, or doubling the batch at those epochs instead, gives the same test
   loss epoch by epoch; the growing batch takes fewer updates.
(Reproduction 3, Hogwild!, runs on real threads: benchmarks/hogwild_bench.py.)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from lab.config import load_config
from lab.experiment import Experiment
from lab.reports.compare import compare, parse_sweep, plan

NEAR = 1.10  # "stays near": a final test loss within 10% of the reference's
CHANCE_LOSS = math.log(10)  # cross-entropy of a uniform guess over the 10 digits

REPRODUCTIONS = {
    1: (["experiments/delay_adagrad.toml", "experiments/delay_dtadagrad.toml"], "cluster.workers=1,6,51,501"),
    2: (["experiments/tau_downpour.toml"], "protocol.options.n_fetch+protocol.options.n_push=1,4,16,64",
        ["experiments/tau_easgd.toml", "experiments/tau_eamsgd.toml"], "protocol.options.tau=1,4,16,64"),
    4: (["experiments/workers_adagrad.toml", "experiments/workers_sgd.toml"], "cluster.workers=8,32,64"),
    5: (["experiments/lr_decay.toml", "experiments/batch_growth.toml", "experiments/lr_constant.toml"], None),
}
SAME = 0.05  # "the same test loss": within 5% of each other


def run_comparison(configs: list[str], sweep: str | None, out: Path) -> dict[str, list[dict]]:
    """Per config name, the summaries of its runs in sweep order."""
    print(f"  asyncps compare {' '.join(configs)}{f' --sweep {sweep}' if sweep else ''} --out {out}")
    planned = plan(configs, [parse_sweep(sweep)] if sweep else [], out=out)
    _, failures = compare(planned, out, progress=False, echo=lambda line: print(f"    {line}"))
    if failures:  # a reproduction's every run is part of its claim
        raise RuntimeError("runs of the reproduction failed:\n" + "\n".join(failures))
    by_name: dict[str, list[dict]] = {}
    for config in planned:
        summary = json.loads((out / config.name / "summary.json").read_text())
        by_name.setdefault(config.name.split("-")[0], []).append(summary)
    return by_name


def loss(summary: dict) -> float:
    return summary["final"]["test_loss"]


def verdict(ok: bool, claim: str) -> bool:
    print(f"  {'OK    ' if ok else 'MISSED'} {claim}")
    return ok


def delays(out: Path) -> bool:
    runs = run_comparison(*REPRODUCTIONS[1], out / "1-delay")
    adagrad, revision = runs["adagrad"], runs["dtadagrad"]
    print("  delay (mean staleness):   " + "  ".join(f"{s['staleness']['mean']:7.1f}" for s in adagrad))
    print("  AdaGrad test loss:        " + "  ".join(f"{loss(s):7.4f}" for s in adagrad))
    print("  AdaptiveRevision loss:    " + "  ".join(f"{loss(s):7.4f}" for s in revision))
    return all([
        verdict(loss(adagrad[-1]) > NEAR * loss(adagrad[0]),
                "asynchronous AdaGrad degrades: at the largest delay its loss is more than 10% above no delay"),
        verdict(loss(revision[-1]) <= NEAR * loss(revision[0]),
                "AdaptiveRevision stays within 10% of its no-delay loss at the largest delay"),
        verdict(loss(revision[-1]) < loss(adagrad[-1]),
                "at the largest delay, AdaptiveRevision's loss is below AdaGrad's"),
    ])


def periods(out: Path) -> bool:
    downpour = run_comparison(*REPRODUCTIONS[2][:2], out / "2-tau-downpour")["downpour"]
    elastic = run_comparison(*REPRODUCTIONS[2][2:], out / "2-tau-easgd")
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


def workers(out: Path) -> bool:
    runs = run_comparison(*REPRODUCTIONS[4], out / "4-workers")
    adagrad, sgd = runs["adagrad"], runs["sgd"]
    print("  workers:                 " + "  ".join(f"{k:7d}" for k in (8, 32, 64)))
    print("  Adagrad test loss:       " + "  ".join(f"{loss(s):7.4f}" for s in adagrad))
    print("  fixed-rate SGD loss:     " + "  ".join(f"{loss(s):7.4f}" for s in sgd))
    return all([
        verdict(all(loss(s) < CHANCE_LOSS / 2 for s in adagrad),
                "Adagrad stays stable: at every worker count its loss is below half of a uniform guess's"),
        verdict(any(loss(s) >= 0.9 * CHANCE_LOSS for s in sgd),
                "the fixed rate does not: at some worker count its loss is within 10% of a uniform guess's"),
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
    runs = run_comparison(configs, None, out / "5-batch")
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
