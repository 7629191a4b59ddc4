"""What the simulator adds over the gradient computations it schedules.

64 Downpour workers train a model of about 1,000 parameters (an MLP with 14
hidden units on the 8x8 digits, mini-batches of the config's default 32) in
virtual time with log-normal delays: every mini-batch gradient, pull, push,
shard update, staleness record and metrics line. The peer runs the same
gradient computations on the same batches in a plain loop, without the
simulator. Both are measured in the same run, interleaved rep by rep, and
compared by their medians. Both run on one thread, so they are timed in this
process's CPU seconds: load elsewhere on the machine does not count. Target:
at most 1.3x.

Also measured: a minimal simulator of the same run, written here for the
comparison (a heap of workers in virtual time, the same delays, gradients,
Adagrad updates of two shards and metrics lines, without protocols,
clients, snapshots or staleness records): what any simulator in Python pays.

    python benchmarks/sim_bench.py [--workers 64] [--epochs 20] [--batch-size 32] [--reps 5]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from asyncps.lab.config import load_config
from asyncps.lab.experiment import Experiment
from asyncps.lab.metrics import Metrics
from asyncps.lab.backends.sim import SimBackend
from asyncps.lab.runner import Run
from asyncps.ps.delays import EVENTS
from asyncps.ps.flat import all_usable
from timing import Targets
from asyncps.workers.gradient import loss_and_grad

TARGET = 1.3


def plain_loop(experiment: Experiment) -> float:
    """Seconds for every worker's gradients, one after another; iterating the
    data shards is part of both contenders."""
    flat = experiment.initial_flat.clone()
    start = time.process_time()
    for shard in experiment.data_shards:
        for batch in itertools.islice(iter(shard), experiment.steps):
            loss_and_grad(experiment.model, flat, {}, batch)
    return time.process_time() - start


def simulation(experiment: Experiment, path: Path) -> float:
    """Seconds for the simulated run itself, its metrics file written and
    closed: no data loading, no plots."""
    start = time.process_time()
    with Metrics(path) as metrics:
        Run(experiment, metrics, SimBackend(experiment, metrics), progress=False).execute()
    return time.process_time() - start


def minimal_simulation(experiment: Experiment, path: Path) -> float:
    """Seconds for the minimal simulator: each worker, in virtual-time order,
    reads both shards, computes its gradient, and pushes it to each shard
    (finite check, the server optimizer's update, a version, a metrics line)."""
    layout, workers = experiment.layout, experiment.config.cluster.workers
    optimizer = experiment.server_rule().optimizer
    shards = [part.clone() for part in layout.split(experiment.initial_flat)]
    states = [optimizer.init(shard) for shard in shards]
    values = [shard.numpy() for shard in shards]  # the flat views update() takes, made once
    versions = [0] * layout.num_shards
    draws = [[experiment.delays.sampler(w, event) for event in EVENTS] for w in range(workers)]
    batches = [itertools.islice(iter(shard), experiment.steps) for shard in experiment.data_shards]
    params = [torch.empty(layout.size) for _ in range(workers)]
    queue = [(0.0, w) for w in range(workers)]
    start = time.process_time()
    with open(path, "w") as out:
        while queue:
            now, w = heapq.heappop(queue)
            batch = next(batches[w], None)
            if batch is None:
                continue
            torch.cat(shards, out=params[w])
            read = list(versions)
            loss, grad, _ = loss_and_grad(experiment.model, params[w], {}, batch)
            out.write(json.dumps({"time": now, "kind": "train", "worker": w, "loss": loss}) + "\n")
            for s, part in enumerate(layout.split(grad)):
                if not all_usable(part):
                    raise ValueError("non-finite gradient")
                optimizer.update(values[s], part.numpy(), states[s])
                out.write(json.dumps({"time": now, "kind": "push", "worker": w, "shard": s,
                                      "staleness": versions[s] - read[s]}) + "\n")
                versions[s] += 1
            heapq.heappush(queue, (now + sum(draw(layout.size * 4) for draw in draws[w]), w))
    return time.process_time() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(None, [
            "backend=sim", f"out_dir={tmp}", "model.options={hidden = [14]}", f"data.batch_size={args.batch_size}",
            f"cluster.workers={args.workers}", "cluster.shards=2", f"train.epochs={args.epochs}",
            "train.eval_every=1000000",
            "delays.compute={kind = 'lognormal', median = 0.01, sigma = 0.5}",
            "delays.push={kind = 'lognormal', median = 0.002, sigma = 0.5}",
            "delays.pull={kind = 'lognormal', median = 0.002, sigma = 0.5}"])
        # Warm up once: numba loads its compiled kernels and torch its first
        # paths on first use, a one-time cost neither contender should carry.
        simulation(Experiment.build(config), Path(tmp) / "warmup.jsonl")
        minimal_simulation(Experiment.build(config), Path(tmp) / "warmup.jsonl")
        plain_loop(Experiment.build(config))
        plain, simulated, minimal = [], [], []
        for _ in range(args.reps):  # interleaved: load from elsewhere falls on all alike
            plain.append(plain_loop(Experiment.build(config)))
            simulated.append(simulation(Experiment.build(config), Path(tmp) / "metrics.jsonl"))
            minimal.append(minimal_simulation(Experiment.build(config), Path(tmp) / "minimal.jsonl"))
        experiment = Experiment.build(config)
    plain_s, sim_s, minimal_s = statistics.median(plain), statistics.median(simulated), statistics.median(minimal)
    pushes = args.workers * experiment.steps
    ratio = sim_s / plain_s
    print(f"{args.workers} workers, {experiment.layout.size:,} parameters, batch {args.batch_size}, "
          f"{pushes:,} simulated pushes, median of {args.reps}")
    print(f"  plain loop of the same gradients   {plain_s:6.2f} s  ({plain_s / pushes * 1e6:,.0f} us a gradient)")
    print(f"  sim backend                        {sim_s:6.2f} s  ({pushes / sim_s:,.0f} pushes/s, "
          f"{(sim_s - plain_s) / pushes * 1e6:,.0f} us of simulator work a push)")
    targets = Targets()
    print(f"  ratio {ratio:.2f}x (target <= {TARGET}x) {targets.verdict(ratio <= TARGET)}")
    print(f"  minimal simulator, for comparison  {minimal_s:6.2f} s  ({minimal_s / plain_s:.2f}x the plain loop)")
    return targets.report()


if __name__ == "__main__":
    sys.exit(main())
