"""The worker runtime: what a protocol's loop runs inside.

``WorkerRuntime`` implements ``protocols.WorkerContext`` over a model, a data
shard and a client. Backends differ only in where the loop runs: a thread
with its own event loop here, a Ray actor or a process elsewhere. Every
training step and every push is reported through ``record(kind, **fields)``,
a callable the backend supplies, so that ``workers`` never depends on how
metrics are stored.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Callable, Iterator

import numpy as np
import torch

from asyncps.protocols import Gradient, Protocol
from asyncps.ps import Client, ClientWrapper, DelayedClient, Delays, Push, RealClock, ShardClosed
from asyncps.workers.data_shards import DataShard
from asyncps.workers.gradient import loss_and_grad
from asyncps.workers.gradient_transforms import GradientTransform
from asyncps.workers.model_base import Model

Record = Callable[..., None]
_DROPOUT_STREAM = 3  # distinct from the data shards' and the gradient noise's seed streams


class RecordingClient(ClientWrapper):
    """Reports every push: which worker, which shard, the version it arrived
    at, its staleness, and whether the rule applied it."""

    def __init__(self, inner: Client, record: Record):
        super().__init__(inner)
        self.record = record

    def _report(self, pushes: list[Push]) -> list[Push]:
        for p in pushes:
            self.record("push", worker=p.worker, shard=p.shard, version=p.version, staleness=p.staleness,
                        applied=p.applied)
        return pushes

    async def push(self, grad, read):
        return self._report(await self.inner.push(grad, read))

    async def push_rows(self, table, rows, grad_rows, versions):
        return self._report(await self.inner.push_rows(table, rows, grad_rows, versions))

    @property
    def combines_push_pull(self) -> bool:
        return self.inner.combines_push_pull

    async def push_pull(self, grad, read, out, at_least=0):
        if not self.inner.combines_push_pull:  # recorded as a push, when it was one, then a pull
            return await super().push_pull(grad, read, out, at_least)
        pushes, versions = await self.inner.push_pull(grad, read, out, at_least)
        return self._report(pushes), versions


class WorkerRuntime:
    """One worker: its data shard for ``steps`` steps, gradients from ``model``.

    ``after_compute``, if given, is called after each gradient, before the step
    is recorded: a real backend sleeps the computation's delay there, and the
    sim backend charges it in virtual time. ``delays`` (``ps.Delays``, when any
    is active) is the real backends' part: the client waits each call's drawn
    duration on the real clock (``ps.delays.DelayedClient``), after_compute
    each gradient's. ``transform`` (the run's clipping and noise) changes
    each gradient before the protocol sees it.
    """

    def __init__(self, worker: int, num_workers: int, client: Client, model: Model, data: DataShard, steps: int,
                 record: Record, stopped: Callable[[], bool] = lambda: False,
                 after_compute: Callable[[], None] | None = None, delays: Delays | None = None,
                 transform: GradientTransform | None = None):
        if delays is not None and delays.active:
            client = DelayedClient(client, delays.samplers(worker), RealClock())
            after_compute = client.compute
        self.worker = worker
        self.num_workers = num_workers
        self.client = RecordingClient(client, record)
        self.model = model
        self.data = data
        self.steps = steps
        self.record = record
        self.stopped = stopped
        self.after_compute = after_compute
        self.transform = None if transform is None else transform.for_worker(worker)
        self.step = 0  # steps taken so far

    def batches(self) -> Iterator[object]:
        for _, batch in zip(range(self.steps), self.data):
            if self.stopped():
                return
            yield batch

    def rows(self, batch) -> dict[str, torch.Tensor]:
        return self.model.rows(batch)

    def batch_sizes(self, step: int) -> list[int]:
        return self.data.batch_sizes(step)

    def gradient(self, params: torch.Tensor, rows: dict[str, torch.Tensor], batch) -> Gradient:
        with self.randomness():
            grad = Gradient(*loss_and_grad(self.model, params, rows, batch))
        if self.transform is not None:
            self.transform(grad, self.step)
        if self.after_compute is not None:
            self.after_compute()
        self.step += 1
        self.record("train", worker=self.worker, step=self.step, loss=grad.loss, epoch=self.data.epoch)
        return grad

    @contextlib.contextmanager
    def randomness(self):
        """For a model that draws random numbers (dropout): torch's generator seeded by
        (seed, worker, step), so a run in virtual time draws the same ones every time."""
        if not self.model.stochastic:
            yield
            return
        with torch.random.fork_rng(devices=[]):
            seed = np.random.SeedSequence([self.data.seed, _DROPOUT_STREAM, self.worker, self.step])
            torch.manual_seed(int(seed.generate_state(1, np.uint64)[0]))
            yield

    async def work(self, protocol: Protocol) -> None:
        """The protocol's loop to its end. A shard closing under a waiting pull
        is the run ending, not an error."""
        try:
            await protocol.work(self)
        except ShardClosed:
            pass

    def run(self, protocol: Protocol) -> None:
        """``work`` on this thread, with its own event loop."""
        asyncio.run(self.work(protocol))
