"""What a protocol is, and the small worker context its loop sees.

A protocol is two halves of one algorithm: the server rule it installs on
every shard, and ``async def work(ctx)``, the loop each worker runs. The loop
sees only the ``ps.Client`` (through ``ctx.client``) and the context below;
``workers/`` implements the context for every backend, so one loop runs on
threads, in virtual time, on Ray and over gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Iterator, Protocol as Interface

import torch

from asyncps import optim
from asyncps.ps import Client, ServerRule


@dataclass
class Gradient:
    loss: float
    dense: torch.Tensor  # the flat dense gradient
    rows: dict[str, torch.Tensor]  # table -> one gradient row per id of ctx.rows(batch)[table]


class WorkerContext(Interface):
    worker: int  # this worker's index, 0..num_workers-1
    num_workers: int
    steps: int  # this worker's budget of steps, the same for every worker
    client: Client

    def batches(self) -> Iterator[object]:
        """This worker's mini-batches, until its budget is spent or the run stops."""

    def rows(self, batch) -> dict[str, torch.Tensor]:
        """Per sparse table, the sorted unique global row ids ``batch`` touches."""

    def batch_sizes(self, step: int) -> list[int]:
        """The examples in every worker's batch number ``step`` (0-based), worker
        by worker: what a synchronous round weighs each worker's gradient by."""

    def gradient(self, params: torch.Tensor, rows: dict[str, torch.Tensor], batch) -> Gradient:
        """Loss and gradients at the flat dense ``params`` and the pulled ``rows``
        values: new tensors each call, the caller's to keep or change."""


class Protocol:
    """Base of every protocol: a frozen dataclass of its hyperparameters
    (``protocol.options``, checked in ``__post_init__``), with a ``name``,
    ``server_rule`` and ``work``. A plugin's (``protocol.name =
    "mypkg.algo:Mine"``; ``optim.plugins``) is the same: its shards' rule may
    be ``ps.ApplyEach(optimizer)``, the [server] optimizer applied to each
    push, and its loop uses ``ctx`` alone. Set ``supports_sparse = False``
    unless the loop pulls and pushes table rows (``pull_rows``, ``push_rows``)."""

    name: ClassVar[str]
    supports_sparse: ClassVar[bool] = True

    def server_rule(self, optimizer: optim.Optimizer, num_workers: int) -> ServerRule:
        raise NotImplementedError

    def check_steps(self, steps: int) -> None:
        """Refuse settings a run of ``steps`` steps a worker cannot honour
        (ValueError naming the option and the most it allows)."""

    def min_workers(self, num_workers: int) -> int:
        """The workers that must stay alive for the run to go on; an
        asynchronous protocol goes on with any one."""
        return 1

    async def work(self, ctx: WorkerContext) -> None:
        raise NotImplementedError


@dataclass
class RowParams:
    """The sparse rows a batch touches, as pulled: ids, values, shard versions."""

    ids: dict[str, torch.Tensor]
    values: dict[str, torch.Tensor]
    versions: dict[str, dict[int, int]]


NO_ROWS = RowParams({}, {}, {})  # what a model without sparse tables pulls for every batch


async def pull_rows(ctx: WorkerContext, batch) -> RowParams:
    if not ctx.client.layout.tables:  # a dense model: no rows to ask the model or the shards for
        return NO_ROWS
    ids = ctx.rows(batch)
    values, versions = {}, {}
    for table, table_ids in ids.items():
        values[table], versions[table] = await ctx.client.pull_rows(table, table_ids)
    return RowParams(ids, values, versions)


async def push_rows(ctx: WorkerContext, rows: RowParams, grad: Gradient) -> None:
    for table, table_ids in rows.ids.items():
        await ctx.client.push_rows(table, table_ids, grad.rows[table], rows.versions[table])


__all__ = ["Protocol", "WorkerContext", "Gradient", "RowParams", "NO_ROWS", "pull_rows", "push_rows"]
