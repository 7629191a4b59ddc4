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
(Reproduction 3, Hogwild!, runs on real threads: benchmarks/hogwild_bench.py.)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from lab.reports.compare import compare, parse_sweep, plan

NEAR = 1.10  # "stays near": a final test loss within 10% of the reference's
CHANCE_LOSS = math.log(10)  # cross-entropy of a uniform guess over the 10 digits

REPRODUCTIONS = {
    1: (["experiments/delay_adagrad.toml", "experiments/delay_dtadagrad.toml"], "cluster.workers=1,6,51,501"),
    2: (["experiments/tau_downpour.toml"], "protocol.options.n_fetch+protocol.options.n_push=1,4,16,64",
        ["experiments/tau_easgd.toml", "experiments/tau_eamsgd.toml"], "protocol.options.tau=1,4,16,64"),
    4: (["experiments/workers_adagrad.toml", "experiments/workers_sgd.toml"], "cluster.workers=8,32,64"),
}


def run_comparison(configs: list[str], sweep: str, out: Path) -> dict[str, list[dict]]:
    """Per config name, the summaries of its runs in sweep order."""
    print(f"  asyncps compare {' '.join(configs)} --sweep {sweep} --out {out}")
    planned = plan(configs, [parse_sweep(sweep)], out=out)
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


CHECKS = {1: delays, 2: periods, 4: workers}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="1,2,4", help="which reproductions, e.g. 1,4")
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
