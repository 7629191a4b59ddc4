r"""Stale synchronous parallel: Ho, Cipar, Cui, Lee, Kim, Gibbons, Gibson,
Ganger & Xing, "More Effective Distributed ML via a Stale Synchronous
Parallel Parameter Server", NIPS 2013.

Each worker counts its own clock: the mini-batches it has pushed, one update
a clock. Updates are additive and applied as they arrive. The paper's
guarantees, with staleness bound s (``staleness``):

- bounded staleness: a worker at clock c reads only once every worker has
  completed clock c - s - 1, so its read includes every update stamped
  c - s - 1 or earlier; the fastest worker runs at most s clocks ahead of
  the slowest, which never waits for it;
- reads may be fresher: they include whatever else has arrived;
- read-my-writes: a worker's read includes all of its own updates.

Here::

    worker:  for c = 0, 1, ...: theta, v <- pull(wait for version c - s); g <- gradient(theta, batch); push(g, v)
    shard:   on each push: theta <- step(theta, g)      # the [server] optimizer, at once
             clock[worker] += 1; version <- min over the workers of clock

The shard's version counts the clocks every worker has completed, so the
bound is a pull waiting for version c - s (Petuum Bösen's SSP reads a row
once its clock is at least the reader's clock minus s, the same condition).
A push is marked applied, counted as an update, only when it completes the
slowest worker's clock; the others change the values all the same. Each
gradient is applied on arrival, before the push is acknowledged, so the
worker's next read, made after that acknowledgement, includes it on every
backend: read-my-writes holds without the paper's client cache.

With s = 0 this is bulk synchronous parallel with updates applied one by
one: no worker reads for clock c before all N have pushed clock c - 1, and
the N gradients of clock c are N separate steps of the server optimizer,
each taken at a read that may include some of the clock's earlier arrivals
(with plain SGD, when every read of a clock comes before its first push,
the N steps add up to N times synchronous SGD's step on their mean). It is
not synchronous SGD (``sync``), which averages a round's gradients into one
step.

Dense parameters only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from asyncps import optim
from asyncps.optim.validation import check, check_int
from asyncps.protocols.base import Protocol, WorkerContext
from asyncps.ps import Applied, ServerRule


@dataclass
class ClockState:
    optimizer: optim.State
    clocks: list[int]  # per worker: the clocks it has completed (its pushes to this shard)


class ApplyOnArrival:
    """Apply every gradient at once with the server optimizer; count each worker's
    clocks, and make a new version only when the slowest worker completes one."""

    def __init__(self, optimizer: optim.Optimizer, num_workers: int):
        self.optimizer = optimizer
        self.num_workers = num_workers

    def init(self, values: torch.Tensor) -> ClockState:
        return ClockState(self.optimizer.init(values), [0] * self.num_workers)

    def apply(self, values, grad, state: ClockState, out, *, worker, staleness, version) -> Applied:
        check(0 <= worker < self.num_workers, "worker", worker,
              f"workers are numbered 0..{self.num_workers - 1}, the num_workers given to server_rule")
        completed = min(state.clocks)
        state.clocks[worker] += 1
        self.optimizer.update(values.array, grad.array, state.optimizer, None if out is None else out.array)
        return Applied.NEW_VERSION if min(state.clocks) > completed else Applied.SAME_VERSION

    def apply_rows(self, table, ids, grad_rows, state, *, worker, staleness, version) -> bool:
        raise ValueError("Invalid push: SSP counts clocks over dense gradients only "
                         "(use protocol 'downpour' for models with sparse tables)")

    def state_dict(self, state: ClockState) -> dict:
        return {"optimizer": state.optimizer.state_dict(), "clocks": list(state.clocks)}

    def load_state_dict(self, saved: dict) -> ClockState:
        return ClockState(optim.State.from_state_dict(saved["optimizer"]), [int(c) for c in saved["clocks"]])


@dataclass(frozen=True)
class SSP(Protocol):
    name: ClassVar[str] = "ssp"
    supports_sparse: ClassVar[bool] = False

    staleness: int = 3  # s: how many clocks a worker may run ahead of the slowest

    def __post_init__(self):
        check_int(self.staleness, "staleness", low=0)

    def server_rule(self, optimizer: optim.Optimizer, num_workers: int) -> ServerRule:
        return ApplyOnArrival(optimizer, num_workers)

    def min_workers(self, num_workers: int) -> int:
        return num_workers  # the version waits for the slowest worker's clock: every worker must go on

    async def work(self, ctx: WorkerContext) -> None:
        client = ctx.client
        parameters = torch.empty(client.layout.size)
        for clock, batch in enumerate(ctx.batches()):
            read = await client.pull(parameters, max(0, clock - self.staleness))
            g = ctx.gradient(parameters, {}, batch)
            await client.push(g.dense, read)
