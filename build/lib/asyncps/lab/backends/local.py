"""The ``local`` backend: shards in this process, each worker a thread.

The default of ``asyncps run``: it starts at once and needs no services.
Each worker runs its protocol loop on its own thread and event loop. The
numba kernels and torch release the GIL, so workers overlap on both cores.
When the config has delays, each worker's client waits them for real
(``workers.runtime.WorkerRuntime`` with the run's delays).
"""

from __future__ import annotations

import torch

from asyncps.lab.backends.base import Backend, Threads, reported
from asyncps.lab.evaluator import EVALUATOR
from asyncps.ps import InProcessClient, make_shards
from asyncps.workers.runtime import WorkerRuntime


class LocalBackend(Backend):
    name = "local"

    def start(self, fail) -> InProcessClient:
        # One torch thread: torch's OpenMP threads spin and take the cores the workers need.
        torch.set_num_threads(1)
        experiment = self.experiment
        self.shards = make_shards(experiment.layout, experiment.initial_flat, experiment.initial_tables,
                                  experiment.server_rule(), experiment.config.cluster.workers)
        self.threads = Threads()
        return self._client(EVALUATOR)

    def _client(self, worker: int) -> InProcessClient:
        return InProcessClient(self.experiment.layout, self.shards, worker)

    def start_worker(self, worker, ended, stopped) -> None:
        experiment = self.experiment
        runtime = WorkerRuntime(worker, experiment.config.cluster.workers, self._client(worker), experiment.model,
                                experiment.data_shards[worker], experiment.steps, self.metrics.record, stopped,
                                delays=experiment.delays, transform=experiment.transform)
        self.threads.spawn(f"worker-{worker}", reported(worker, runtime.work(experiment.protocol), ended))

    def spawn(self, name, coro) -> None:
        self.threads.spawn(name, coro)

    def wait(self) -> None:
        self.threads.join()

    def end(self) -> None:
        for shard in self.shards:
            shard.close()
