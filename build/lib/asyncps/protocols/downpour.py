r"""Downpour SGD: Dean et al., "Large Scale Distributed Deep Networks", NIPS 2012.

Model replicas run independently on their own part of the data. The
parameters are sharded, and each shard applies the updates to its own slice
as they arrive. The client, the paper's ``DownpourSGDClient(alpha, n_fetch,
n_push)``::

    step = 0; accrued = 0
    loop:
        if step % n_fetch == 0: parameters <- fetch()      # every shard, each at its own version
        g <- gradient(parameters, next mini-batch)
        accrued += g
        parameters -= alpha * g                            # local step (alpha = local_lr)
        if (step + 1) % n_push == 0: push(accrued); accrued = 0
        step += 1

``local_schedule`` puts alpha on a schedule over the worker's own steps
(a table as ``optim.schedule_spec`` reads it, e.g. ``{kind = "exponential",
gamma = 0.999}``; every kind but plateau, which needs the evaluator).

With ``staleness_lr`` the server divides each update's learning rate by the
push's staleness, lr / staleness (Zhang, Gupta, Lian & Liu, "Staleness-aware
Async-SGD for Distributed Deep Learning", IJCAI 2016); a fresh push uses lr.

The server applies any core-library optimizer to each push. AdaGrad is the
default, as in DistBelief, where with warm-starting (one replica trains alone
for a while before "unleashing the other replicas") it "virtually eliminated
stability concerns". The paper's experiments used n_fetch = n_push = 1.

Sparse tables (embeddings) are fetched for each mini-batch's rows and pushed
every step, whatever n_fetch and n_push say: the rows change with the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from asyncps import optim
from asyncps.optim.validation import check, check_bool, check_int, is_number
from asyncps.protocols.base import Protocol, WorkerContext, pull_rows, push_rows
from asyncps.ps import ApplyEach, ServerRule


@dataclass(frozen=True)
class Downpour(Protocol):
    name: ClassVar[str] = "downpour"

    n_fetch: int = 1  # fetch the parameters every n_fetch steps
    n_push: int = 1  # push the accrued gradient every n_push steps
    local_lr: float = 0.0  # alpha: the client's own step between fetches (0: none)
    warmstart_steps: int = 0  # worker 0 alone until every shard has applied this many updates
    staleness_lr: bool = False  # divide each update's lr by its push's staleness (Zhang et al. 2016)
    local_schedule: dict = field(default_factory=dict)  # alpha's schedule over the worker's steps; {} = constant

    def __post_init__(self):
        check_int(self.n_fetch, "n_fetch")
        check_int(self.n_push, "n_push")
        check(is_number(self.local_lr) and self.local_lr >= 0, "local_lr", self.local_lr, "local_lr must be >= 0")
        check_int(self.warmstart_steps, "warmstart_steps", low=0)
        check_bool(self.staleness_lr, "staleness_lr")
        check(not self.local_schedule or self.local_lr > 0, "local_schedule", self.local_schedule,
              "local_schedule schedules local_lr: set local_lr > 0 too")
        optim.local_schedule(self.local_schedule, self.local_lr)  # a bad table fails here, not in a worker

    def server_rule(self, optimizer: optim.Optimizer, num_workers: int) -> ServerRule:
        return ApplyEach(optimizer, staleness_aware=self.staleness_lr)

    def check_steps(self, steps: int) -> None:
        # The others wait for worker 0's updates: one a push, one push every n_push steps.
        updates = -(-steps // self.n_push)
        check(self.warmstart_steps <= updates, "warmstart_steps", self.warmstart_steps,
              f"worker 0 makes {updates} updates in this run, a push every {self.n_push} of its {steps} steps, and the "
              f"other workers would wait for the rest until the run ends, never training: use at most {updates}")

    async def work(self, ctx: WorkerContext) -> None:
        client = ctx.client
        parameters = torch.empty(client.layout.size)  # this replica's own copy
        if ctx.worker > 0 and self.warmstart_steps:
            await client.pull(parameters, self.warmstart_steps)
        accrued, pending, fetched = None, 0, -1
        alpha = optim.local_schedule(self.local_schedule, self.local_lr)
        for step, batch in enumerate(ctx.batches()):
            if step % self.n_fetch == 0 and fetched != step:
                read = await client.pull(parameters)
            rows = await pull_rows(ctx, batch)
            g = ctx.gradient(parameters, rows.values, batch)
            await push_rows(ctx, rows, g)
            if self.local_lr:
                parameters.add_(g.dense, alpha=-optim.lr_at(alpha, step))
            accrued = g.dense if accrued is None else accrued.add_(g.dense)  # a gradient is the caller's own
            pending += 1
            if pending == self.n_push:
                if client.combines_push_pull and (step + 1) % self.n_fetch == 0 and step + 1 < ctx.steps:
                    # The next step's fetch, in the same call: a transport where that saves a round trip (gRPC).
                    _, read = await client.push_pull(accrued, read, parameters)
                    fetched = step + 1
                else:
                    await client.push(accrued, read)
                accrued, pending = None, 0
        if pending:  # the tail of an interrupted accrual is work done; do not drop it
            await client.push(accrued, read)
