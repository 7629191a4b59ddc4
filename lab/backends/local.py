"""The ``local`` backend: shards in this process, each worker a thread.

The default of ``asyncps run``: it starts at once and needs no services.
Each worker runs its protocol loop on its own thread and event loop. The
numba kernels and torch release the GIL, so workers overlap on both cores.
When the config has delays, each worker's client sleeps them for real
(``ps.delays.DelayedClient``): before each pull and push, and after each
gradient.
"""

from __future__ import annotations

import asyncio
import threading

import torch
from tqdm import tqdm

from lab.evaluator import EVALUATOR, Evaluator
from lab.experiment import Experiment
from lab.metrics import Metrics
from ps import InProcessClient, make_shards
from ps.delays import DelayedClient
from workers.runtime import WorkerRuntime



def run_local(experiment: Experiment, metrics: Metrics, progress: bool = True) -> tuple[dict, dict]:
    """Run the experiment; return the final ``(dense, tables)`` parameters."""
    # One torch thread: torch's OpenMP threads spin and take the cores the workers need.
    torch.set_num_threads(1)
    layout, workers = experiment.layout, experiment.config.cluster.workers
    shards = make_shards(layout, experiment.initial_flat, experiment.initial_tables, experiment.server_rule())
    stop = threading.Event()
    bar = tqdm(total=experiment.steps * workers, unit="step", desc=experiment.config.name, disable=not progress,
               mininterval=0.5)

    def end_run() -> None:
        stop.set()
        for shard in shards:
            shard.close()

    def move_bar(kind: str, fields: dict) -> None:
        if kind == "train":
            bar.update()
        elif kind == "eval" and "test_accuracy" in fields:
            bar.set_postfix(test_acc=f"{fields['test_accuracy']:.3f}", refresh=False)

    metrics.listeners.append(move_bar)
    record = metrics.record
    evaluator = Evaluator(experiment, InProcessClient(layout, shards, EVALUATOR), metrics, end_run)
    delays = experiment.delays

    def runtime(w: int) -> WorkerRuntime:
        client = InProcessClient(layout, shards, w)
        delayed = DelayedClient(client, delays) if delays.active else None
        after_compute = delayed.compute if delayed and delays.is_active("compute") else None
        return WorkerRuntime(w, workers, delayed or client, experiment.model, experiment.data_shards[w],
                             experiment.steps, record, stop, after_compute)

    runtimes = [runtime(w) for w in range(workers)]
    failures: list[BaseException] = []

    def run_worker(runtime: WorkerRuntime) -> None:
        try:
            runtime.run(experiment.protocol)
        except BaseException as err:  # recorded and re-raised in the main thread below
            record("event", message=f"worker {runtime.worker} failed: {err!r}")
            failures.append(err)
            end_run()

    threads = [threading.Thread(target=run_worker, args=(rt,), name=f"worker-{rt.worker}") for rt in runtimes]
    eval_thread = threading.Thread(target=lambda: asyncio.run(evaluator.run()), name="evaluator")
    for thread in threads + [eval_thread]:
        thread.start()
    for thread in threads:
        thread.join()
    end_run()
    eval_thread.join()
    asyncio.run(evaluator.evaluate())  # the final parameters
    bar.close()
    if failures:
        raise failures[0]
    dense, tables, _ = asyncio.run(evaluator.read())
    return dense, tables
