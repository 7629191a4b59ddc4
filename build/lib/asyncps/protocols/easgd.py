r"""Elastic averaging SGD: Zhang, Choromanska & LeCun, "Deep learning with
Elastic Averaging SGD", NIPS 2015 (arXiv 1412.6651).

Each worker trains its own copy x of the model with local steps. The shards
hold the center variable x~, the model the evaluator scores. An elastic force
links the two: every ``tau`` local steps a worker moves toward the center by
alpha (x - x~) and the center moves toward the worker by the same amount.
Asynchronous EASGD, the paper's Algorithm 1, for worker i::

    x <- x~ (fetched); t <- 0
    loop:
        g <- gradient(x, next mini-batch)               # at x before the elastic move
        if t % tau == 0:                                # also at t = 0
            x~ <- fetch()
            d  <- alpha * (x - x~)
            x  <- x - d                                 # the worker moves toward the center
            push(d)                                     # the shard: x~ <- x~ + d
        x <- local_step(x, g)                           # any core-library optimizer
        t <- t + 1

The paper sets beta = p * alpha for p workers, a symmetric force, and uses
beta = 0.9: alpha = 0.9 / p. With alpha = 0 the workers train independently
and the center never moves. The local step is SGD in Algorithm 1; here
``easgd`` takes any core-library optimizer (``optimizer``, ``options``). Its
elastic force acts on the optimizer's own parameter: with torch's momentum
or Nesterov SGD that is not EAMSGD (below), whose force acts on x, not on
the look-ahead point torch's Nesterov SGD keeps.

EAMSGD, the paper's Algorithm 2 (``eamsgd``), keeps the elastic exchange
and replaces the local step by Nesterov momentum, delta = 0.99 in the paper::

    x <- x~ (fetched); v <- 0; t <- 0
    loop:
        g <- gradient(x + delta * v, next mini-batch)   # at the look-ahead of x before the elastic move
        if t % tau == 0:                                # the exchange of Algorithm 1, at x itself
            x~ <- fetch(); d <- alpha * (x - x~); x <- x - d; push(d)
        v <- delta * v - eta * g                        # the elastic move does not enter v
        x <- x + v
        t <- t + 1

The authors' code (``optim-eamsgd.lua`` in sixin-zh/mpiT) orders a step the
same way: the elastic difference from the current x, the gradient at
x + delta v, the elastic move outside the velocity. With delta = 0 this is
EASGD with local SGD.

Either local rate may follow a ``schedule`` over the worker's local steps
(a table as ``optim.schedule_spec`` reads it; every kind but plateau).

The shards only add what is pushed (the elastic differences); the [server]
optimizer is not used. Dense parameters only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from asyncps import optim
from asyncps.optim.validation import check, check_int, is_number
from asyncps.protocols.base import Protocol, WorkerContext
from asyncps.ps import Client, ServerRule


class ElasticCenter:
    """The center variable x~ on a shard: each push is an elastic difference alpha (x - x~), added to it."""

    def init(self, values: torch.Tensor) -> None:
        return None

    def apply(self, values, grad, state, out, *, worker, staleness, version) -> bool:
        if out is None:
            values.tensor.add_(grad.tensor)
        else:
            torch.add(values.tensor, grad.tensor, out=out.tensor)
        return True

    def apply_rows(self, table, ids, grad_rows, state, *, worker, staleness, version) -> bool:
        raise ValueError("Invalid push: EASGD exchanges dense parameters only (use protocol 'downpour' for "
                         "models with sparse tables)")

    def state_dict(self, state: None) -> dict:
        return {}

    def load_state_dict(self, saved: dict) -> None:
        return None


@dataclass(frozen=True)
class Elastic(Protocol):
    """What EASGD and EAMSGD share: the center on the shards and the elastic exchange."""

    supports_sparse: ClassVar[bool] = False

    tau: int = 1  # the communication period: local steps between elastic exchanges
    beta: float = 0.9  # the moving rate of the center: alpha = beta / workers
    alpha: float | None = None  # the elastic force per exchange; None: beta / workers
    schedule: dict = field(default_factory=dict)  # the local rate's schedule over the worker's steps; {} = constant

    def __post_init__(self):
        check_int(self.tau, "tau")
        check(is_number(self.beta) and 0 <= self.beta <= 1, "beta", self.beta, "beta must be in [0, 1]")
        check(self.alpha is None or (is_number(self.alpha) and 0 <= self.alpha <= 1), "alpha", self.alpha,
              "alpha must be in [0, 1] (or left out: beta / workers)")

    def elastic_alpha(self, num_workers: int) -> float:
        return self.beta / num_workers if self.alpha is None else self.alpha

    def server_rule(self, optimizer: optim.Optimizer, num_workers: int) -> ServerRule:
        return ElasticCenter()

    @staticmethod
    async def exchange(client: Client, x: torch.Tensor, center: torch.Tensor, alpha: float) -> None:
        """The elastic exchange at ``x``: x <- x - alpha (x - x~), and the center gets + alpha (x - x~)."""
        read = await client.pull(center)
        d = x.sub(center).mul_(alpha)
        x.sub_(d)
        await client.push(d, read)


@dataclass(frozen=True)
class EASGD(Elastic):
    name: ClassVar[str] = "easgd"

    optimizer: str = "sgd"  # the workers' local optimizer: any optim.create name
    options: dict = field(default_factory=lambda: {"lr": 0.05})

    def __post_init__(self):
        super().__post_init__()
        self.local_optimizer()  # a bad local optimizer fails here, not in a worker

    def local_optimizer(self) -> optim.Optimizer:
        rate = optim.local_schedule(self.schedule, optim.base_lr(self.optimizer, self.options))
        return optim.create(self.optimizer, **{**self.options, "lr": rate})

    async def work(self, ctx: WorkerContext) -> None:
        client = ctx.client
        alpha = self.elastic_alpha(ctx.num_workers)
        local = self.local_optimizer()
        x = torch.empty(client.layout.size)  # this worker's own copy
        await client.pull(x)
        state = local.init(x)
        center = torch.empty_like(x)
        for t, batch in enumerate(ctx.batches()):
            g = ctx.gradient(x, {}, batch)
            if t % self.tau == 0:
                await self.exchange(client, x, center, alpha)
            local.step(x, g.dense, state)


@dataclass(frozen=True)
class EAMSGD(Elastic):
    name: ClassVar[str] = "eamsgd"

    lr: float = 0.005  # eta: the local step size
    momentum: float = 0.99  # delta: the Nesterov momentum of the local steps

    def __post_init__(self):
        super().__post_init__()
        check(is_number(self.lr) and self.lr >= 0, "lr", self.lr, "lr must be a number >= 0")
        check(is_number(self.momentum) and 0 <= self.momentum < 1, "momentum", self.momentum,
              "momentum must be in [0, 1)")
        optim.local_schedule(self.schedule, self.lr)  # a bad table fails here, not in a worker

    async def work(self, ctx: WorkerContext) -> None:
        client = ctx.client
        alpha = self.elastic_alpha(ctx.num_workers)
        x = torch.empty(client.layout.size)  # this worker's own copy
        await client.pull(x)
        v = torch.zeros_like(x)  # its velocity
        center = torch.empty_like(x)
        eta = optim.local_schedule(self.schedule, self.lr)
        for t, batch in enumerate(ctx.batches()):
            g = ctx.gradient(x + self.momentum * v, {}, batch)
            if t % self.tau == 0:
                await self.exchange(client, x, center, alpha)
            v.mul_(self.momentum).sub_(g.dense.mul_(optim.lr_at(eta, t)))
            x.add_(v)
