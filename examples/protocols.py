r"""A protocol of your own: Downpour that holds back small updates.

``protocol.name = "examples.protocols:LazyDownpour"`` (examples/protocol.toml).
A protocol is two halves of one algorithm: the rule each server shard
applies to the gradients pushed to it (``server_rule``), and the loop each
worker runs (``async def work(ctx)``), which sees only ``ctx.client`` (pull
and push) and the worker context (its batches and gradients; see
``protocols.base.WorkerContext``). The same loop runs on threads, in
virtual time, on Ray actors and in gRPC worker processes.

Each worker accrues its gradients and pushes their sum only once its norm
reaches ``min_norm`` (and at its last step), then fetches the parameters:
small updates wait to be sent with the next ones, as in communication-
efficient variants of asynchronous SGD (e.g. Chen, Giannakis, Sun & Yin,
"LAG: Lazily Aggregated Gradient", NeurIPS 2018)::

    parameters <- fetch(); accrued = 0
    for each mini-batch:
        accrued += gradient(parameters, mini-batch)
        if ||accrued|| >= min_norm: push(accrued); accrued = 0; parameters <- fetch()
    push(accrued)                                          # what is left

With ``min_norm = 0`` it is Downpour with ``n_fetch = n_push = 1``. The
server applies the [server] optimizer to each push as it arrives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from asyncps.protocols import Protocol, WorkerContext
from asyncps.ps import ApplyEach


@dataclass(frozen=True)
class LazyDownpour(Protocol):
    name: ClassVar[str] = "lazy_downpour"
    supports_sparse: ClassVar[bool] = False  # dense parameters only: it pulls and pushes no table rows

    min_norm: float = 0.5  # push once the accrued gradient's L2 norm reaches this

    def __post_init__(self):  # a bad option fails when the config is built, not in a worker
        if not (isinstance(self.min_norm, (int, float)) and math.isfinite(self.min_norm) and self.min_norm >= 0):
            raise ValueError(f"Invalid min_norm: {self.min_norm!r} (must be a number >= 0)")

    def server_rule(self, optimizer, num_workers):
        return ApplyEach(optimizer)

    async def work(self, ctx: WorkerContext) -> None:
        client = ctx.client
        parameters = torch.empty(client.layout.size)  # this worker's copy of the flat dense parameters
        read = await client.pull(parameters)  # the versions read: each push says what it was computed from
        accrued = None
        for batch in ctx.batches():
            grad = ctx.gradient(parameters, {}, batch).dense  # a new tensor, this loop's to keep
            accrued = grad if accrued is None else accrued.add_(grad)
            if accrued.norm() >= self.min_norm:
                await client.push(accrued, read)
                accrued = None
                read = await client.pull(parameters)
        if accrued is not None:
            await client.push(accrued, read)
