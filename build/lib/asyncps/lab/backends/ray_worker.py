"""One worker as a Ray actor: a thin shell over ``workers.WorkerRuntime``.

The protocol's loop runs on a thread of the actor, over a ``RayClient`` (in
a ``DelayedClient`` when the run has delays). What the runtime records, the
actor streams back to the driver: ``run`` is a generator, and each item is a
list of records with their wall-clock times. So the run directory is
written where the driver is, even when the worker is on another node.

Like ``ShardActor`` it is a plain class; ``ray.remote`` makes the actor.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Iterator

import torch

from asyncps.protocols import Protocol
from asyncps.ps import Layout
from asyncps.ps.delays import Delays
from asyncps.ps.ray_client import RayClient
from asyncps.workers.data_shards import DataShard
from asyncps.workers.gradient_transforms import GradientTransform
from asyncps.workers.model_base import Model
from asyncps.workers.runtime import WorkerRuntime

FLUSH_SECONDS = 0.05  # how often a worker sends its records: a few dozen small messages a second at most


class WorkerActor:
    def __init__(self, worker: int, num_workers: int, model: Model, data: DataShard, steps: int,
                 protocol: Protocol, layout: Layout, delays: Delays, shards: list, transform: GradientTransform):
        torch.set_num_threads(1)  # torch's own threads would spin on the cores the other actors need
        self.worker = worker
        self.protocol = protocol
        self.client = RayClient(layout, shards, worker)
        self._records: queue.SimpleQueue = queue.SimpleQueue()
        self._ended = threading.Event()
        self._error: BaseException | None = None
        self.runtime = WorkerRuntime(worker, num_workers, self.client, model, data, steps, self._record, delays=delays,
                                     transform=transform)

    def ready(self) -> int:
        return self.worker

    def _record(self, kind: str, **fields) -> None:
        self._records.put({"time": round(time.time(), 6), "kind": kind, **fields})

    def _work(self) -> None:
        try:
            self.runtime.run(self.protocol)
            self.client.close()
        except BaseException as err:  # raised again by run(), in the driver
            self._error = err
        finally:
            self._ended.set()

    def run(self) -> Iterator[list[dict]]:
        """Run the protocol's loop to its end, yielding the records as it goes."""
        threading.Thread(target=self._work, name=f"worker-{self.worker}", daemon=True).start()
        while True:
            ended = self._ended.wait(FLUSH_SECONDS)
            batch = []
            while not self._records.empty():
                batch.append(self._records.get())
            if batch:
                yield batch
            if ended:  # everything recorded before the end has been sent
                break
        if self._error is not None:
            raise self._error
