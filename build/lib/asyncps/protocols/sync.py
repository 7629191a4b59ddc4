r"""Synchronous SGD, optionally with backup workers.

Every worker pulls version v, computes a gradient on its own mini-batch and
pushes it. Each shard waits until it has the gradients for version v, then
applies their average once, making version v + 1::

    worker:  loop: theta, v <- pull(wait for version v); g <- gradient(theta, batch)
                   push(N n_w / (n_1 + ... + n_N) * g, v); v <- v + 1
    shard:   collect g from the workers at version v; theta <- step(theta, mean(g)); v <- v + 1

With N workers a round is one step of mini-batch SGD on the union of their
batches. A worker's gradient is the mean over its own batch, and an epoch's
last batch is short when batch_size does not divide the worker's shard, so
worker w weighs its gradient by N n_w / (n_1 + ... + n_N), n_j being the
examples in worker j's batch of the same step (``ctx.batch_sizes``: the
shards of a split are cut alike, so each worker counts every worker's batch
without asking). The mean of the weighted gradients is then
sum_w n_w g_w / sum_j n_j, the gradient of the union batch; when the
batches are equal every weight is exactly 1.

With ``backup_workers = b`` (Chen, Pan, Monga, Bengio & Jozefowicz,
"Revisiting Distributed Synchronous SGD", 2016), a shard applies after the
first N - b gradients. The stragglers' gradients for a version already
applied are dropped, so the slowest b workers never hold up a round. The
weights stay those of all N batches: a round applies the sum of the arrived
batches' per-example gradients divided by (N - b) / N of the examples in
all N batches of that step. That is SGD on the union of the arrived batches
when they hold their share of the step's examples, always so when every
batch is full (Chen et al.'s equal weights); when a short batch is among
them or among the dropped, the step is that much shorter or longer. A
straggler that skipped rounds weighs its batch by its own step's sizes.

A run is ``steps`` rounds. A straggler skips the rounds it missed and so
has batches left at the end. It stops when the last round has been applied,
rather than waiting for a round that too few workers remain to complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from asyncps import optim
from asyncps.optim.validation import check, check_int
from asyncps.protocols.base import Protocol, WorkerContext
from asyncps.ps import ServerRule


@dataclass
class RoundState:
    optimizer: optim.State
    total: torch.Tensor | None = field(default=None, repr=False)  # the sum of this round's gradients
    count: int = 0


class AverageThenApply:
    """Sum a round's gradients; apply their mean once ``needed`` have arrived."""

    def __init__(self, optimizer: optim.Optimizer, needed: int):
        self.optimizer = optimizer
        self.needed = needed

    def init(self, values: torch.Tensor) -> RoundState:
        return RoundState(self.optimizer.init(values))

    def apply(self, values, grad, state: RoundState, out, *, worker, staleness, version) -> bool:
        if staleness > 0:  # a backup worker's gradient for a round already applied
            return False
        if state.total is None:
            state.total = grad.tensor.clone()
        elif state.count == 0:
            state.total.copy_(grad.tensor)
        else:
            state.total.add_(grad.tensor)
        state.count += 1
        if state.count < self.needed:
            return False
        self.optimizer.step(values.tensor, state.total.div_(state.count), state.optimizer,
                            out=None if out is None else out.tensor)
        state.count = 0
        return True

    def apply_rows(self, table, ids, grad_rows, state, *, worker, staleness, version) -> bool:
        raise ValueError("Invalid push: synchronous SGD averages dense gradients only "
                         "(use protocol 'downpour' for models with sparse tables)")

    def state_dict(self, state: RoundState) -> dict:
        # A round in progress is not saved: after a restore its workers push again.
        return state.optimizer.state_dict()

    def load_state_dict(self, saved: dict) -> RoundState:
        return RoundState(optim.State.from_state_dict(saved))


@dataclass(frozen=True)
class Sync(Protocol):
    name: ClassVar[str] = "sync"
    supports_sparse: ClassVar[bool] = False

    backup_workers: int = 0  # b: apply after the first N - b gradients of a round

    def __post_init__(self):
        check_int(self.backup_workers, "backup_workers", low=0)

    def server_rule(self, optimizer: optim.Optimizer, num_workers: int) -> ServerRule:
        check(self.backup_workers < num_workers, "backup_workers", self.backup_workers,
              f"backup_workers must be less than the number of workers ({num_workers})")
        return AverageThenApply(optimizer, self.min_workers(num_workers))

    def min_workers(self, num_workers: int) -> int:
        return num_workers - self.backup_workers  # a round applies once this many gradients are in

    async def work(self, ctx: WorkerContext) -> None:
        client = ctx.client
        parameters = torch.empty(client.layout.size)
        wanted = 0  # the round to read
        for step, batch in enumerate(ctx.batches()):
            if int(wanted) >= ctx.steps:  # every round of the run has been applied
                return
            read = await client.pull(parameters, wanted)
            g = ctx.gradient(parameters, {}, batch)
            sizes = ctx.batch_sizes(step)
            weight = len(sizes) * sizes[ctx.worker] / sum(sizes)  # N n_w / sum_j n_j
            if weight != 1.0:
                g.dense.mul_(weight)
            await client.push(g.dense, read)
            wanted = read.next()
