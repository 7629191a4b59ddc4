r"""Stale synchronous parallel: Ho, Cipar, Cui, Lee, Kim, Gibbons, Gibson,
Ganger & Xing, "More Effective Distributed ML via a Stale Synchronous
Parallel Parameter Server", NIPS 2013.

Each worker counts its own clock: the mini-batches it has pushed. A worker
may run ahead of the slowest one by at most ``staleness`` = s clocks. Before
it computes clock c, its read waits until every update of clocks up to
c - s - 1 is in the parameters::

    worker:  for c = 0, 1, ...: theta, v <- pull(wait for version c - s); g <- gradient(theta, batch); push(g, v)
    shard:   keep each clock's gradients apart; once clock c has all N, apply their mean:
             theta <- step(theta, mean(g of clock c)); version <- c + 1

The shard's version counts the clocks applied. A clock's gradients are
averaged and applied as one update, as synchronous SGD does, so s = 0 is
synchronous SGD exactly, and a larger s lets fast workers run ahead instead
of waiting at every clock. Reads may be fresher than the bound requires:
they see every clock applied so far. Unlike the paper's client cache, a
worker's own gradient shows in its reads only once its clock is complete.

Dense parameters only, like synchronous SGD.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

import optim
from optim.validation import check_int
from protocols.base import Protocol, WorkerContext
from ps import ServerRule


@dataclass
class ClockState:
    optimizer: optim.State
    clocks: dict[int, int] = field(default_factory=dict)  # worker -> gradients it has pushed
    pending: dict[int, list] = field(default_factory=dict, repr=False)  # clock -> [sum of its gradients, count]


class ApplyEachClock:
    """Sum each clock's gradients apart; apply a clock's mean once all ``needed`` workers have pushed it.

    Clock c completes only after every worker pushed clock c - 1, so clocks
    are applied in order, one update each."""

    def __init__(self, optimizer: optim.Optimizer, needed: int):
        self.optimizer = optimizer
        self.needed = needed

    def init(self, values: torch.Tensor) -> ClockState:
        return ClockState(self.optimizer.init(values))

    def apply(self, values, grad, state: ClockState, out, *, worker, staleness, version) -> bool:
        clock = state.clocks.get(worker, 0)
        state.clocks[worker] = clock + 1
        if clock not in state.pending:
            state.pending[clock] = [grad.tensor.clone(), 1]
        else:
            state.pending[clock][0].add_(grad.tensor)
            state.pending[clock][1] += 1
        total, count = state.pending[clock]
        if count < self.needed:
            return False
        del state.pending[clock]
        self.optimizer.step(values.tensor, total.div_(count), state.optimizer, out=None if out is None else out.tensor)
        return True

    def apply_rows(self, table, ids, grad_rows, state, *, worker, staleness, version) -> bool:
        raise ValueError("Invalid push: SSP averages dense gradients only "
                         "(use protocol 'downpour' for models with sparse tables)")

    def state_dict(self, state: ClockState) -> dict:
        return {"optimizer": state.optimizer.state_dict(), "clocks": dict(state.clocks),
                "pending": {clock: [total.clone(), count] for clock, (total, count) in state.pending.items()}}

    def load_state_dict(self, saved: dict) -> ClockState:
        return ClockState(optim.State.from_state_dict(saved["optimizer"]), dict(saved["clocks"]),
                          {clock: [total.clone(), count] for clock, (total, count) in saved["pending"].items()})


@dataclass(frozen=True)
class SSP(Protocol):
    name: ClassVar[str] = "ssp"
    supports_sparse: ClassVar[bool] = False

    staleness: int = 3  # s: how many clocks a worker may run ahead of the slowest

    def __post_init__(self):
        check_int(self.staleness, "staleness", low=0)

    def server_rule(self, optimizer: optim.Optimizer, num_workers: int) -> ServerRule:
        return ApplyEachClock(optimizer, self.min_workers(num_workers))

    def min_workers(self, num_workers: int) -> int:
        return num_workers  # every clock waits for every worker's gradient

    async def work(self, ctx: WorkerContext) -> None:
        client = ctx.client
        parameters = torch.empty(client.layout.size)
        for clock, batch in enumerate(ctx.batches()):
            read = await client.pull(parameters, max(0, clock - self.staleness))
            g = ctx.gradient(parameters, {}, batch)
            await client.push(g.dense, read)
