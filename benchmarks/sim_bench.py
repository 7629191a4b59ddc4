"""What the simulator adds over the gradient computations it schedules.

64 Downpour workers train a model of about 1,000 parameters (an MLP with 14
hidden units on the 8x8 digits) in virtual time with log-normal delays: every
mini-batch gradient, push, shard update, staleness record and metrics line.
The peer runs the same gradient computations on the same batches in a plain
loop, without the simulator, in the same run. Target: at most 1.3x.

    python benchmarks/sim_bench.py [--workers 64] [--epochs 4]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time

import torch

from pathlib import Path

from lab.config import load_config
from lab.experiment import Experiment
from lab.metrics import Metrics
from lab.sim import run_sim
from workers.gradient import loss_and_grad

TARGET = 1.3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(None, [
            "backend=sim", f"out_dir={tmp}", "model.options={hidden = [14]}", "data.batch_size=8",
            f"cluster.workers={args.workers}", "cluster.shards=2", f"train.epochs={args.epochs}",
            "train.eval_every=1000000",
            "delays.compute={kind = 'lognormal', median = 0.01, sigma = 0.5}",
            "delays.push={kind = 'lognormal', median = 0.002, sigma = 0.5}",
            "delays.pull={kind = 'lognormal', median = 0.002, sigma = 0.5}"])
        experiment = Experiment.build(config)
        flat = experiment.initial_flat.clone()
        # Warm up once: numba loads its compiled kernels and torch its first
        # paths on first use, a one-time cost neither contender should carry.
        with Metrics(Path(tmp) / "warmup.jsonl") as metrics:
            run_sim(Experiment.build(config), metrics, progress=False)

        start = time.perf_counter()  # iterating the data shards is part of both
        pushes = 0
        for shard in experiment.data_shards:
            for batch in itertools.islice(iter(shard), experiment.steps):
                loss_and_grad(experiment.model, flat, {}, batch)
                pushes += 1
        plain = time.perf_counter() - start

        start = time.perf_counter()  # the simulation only: no data loading, no plots
        with Metrics(Path(tmp) / "metrics.jsonl") as metrics:
            run_sim(experiment, metrics, progress=False)
        simulated = time.perf_counter() - start

    print(f"{args.workers} workers, {experiment.layout.size:,} parameters, {pushes:,} simulated pushes")
    print(f"  plain loop of the same gradients   {plain:6.2f} s")
    print(f"  sim backend                        {simulated:6.2f} s  ({pushes / simulated:,.0f} pushes/s)")
    print(f"  ratio {simulated / plain:.2f}x (target <= {TARGET}x) {'OK' if simulated / plain <= TARGET else 'MISSED'}")


if __name__ == "__main__":
    main()
