r"""Delay-tolerant AdaGrad: AdaptiveRevision, McMahan & Streeter, "Delay-Tolerant
Algorithms for Asynchronous Distributed Online Learning", NIPS 2014.

Asynchronous AdaGrad applies each gradient as it arrives (z += g²) and
ignores that it was computed before the updates it missed. AdaptiveRevision
counts those updates, ``g_bck``, the sum of the gradients applied between the
worker's read and its push, and when the accumulator grows it revises the
steps already taken for them. Per coordinate, with ``ḡ`` the sum of every
gradient applied (the paper's box, as in Petuum Bösen's server)::

    Read:              x, ḡ_old <- x, ḡ
    Update(g, ḡ_old):  g_bck = ḡ − ḡ_old
                       η_old = α / (sqrt(z') + eps)
                       z     = z + g² + 2 g g_bck        # may decrease
                       z'    = max(z', z)                # so the rate never increases
                       η     = α / (sqrt(z') + eps)
                       x     = x − η g + (η_old − η) g_bck
                       ḡ     = ḡ + g

With no delay (g_bck = 0) this is AdaGrad; k gradients read at one state and
applied in any order add up to one AdaGrad step on their sum, as long as z
never decreases.

In the paper a pull returns ``ḡ`` with ``x``, and the worker sends it back
with its gradient. Here the server keeps what it needs instead
(``protocols.update_log``): a push already carries the version its worker
read, and ``g_bck`` is the sum of the gradients the shard applied since that
version, as Bösen keeps its ``ḡ`` snapshots on the server, per version. The
math is the same and the traffic is halved: pulls carry ``x`` alone, pushes
``g`` alone.

α, z0 (the accumulator's start; Bösen uses 1) and eps are the server
optimizer's ``lr``, ``initial_accumulator_value`` and ``eps``: the server
optimizer must be ``adagrad``, so asynchronous AdaGrad and AdaptiveRevision
at one α are the same [server] section with protocol ``downpour`` or
``dtadagrad``. Workers run the plain asynchronous loop: Downpour's with
n_fetch = n_push = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from numba import njit

from asyncps import optim
from asyncps.optim.validation import check, check_int
from asyncps.protocols.base import Protocol, WorkerContext
from asyncps.protocols.downpour import Downpour
from asyncps.protocols.update_log import UpdateLog
from asyncps.ps import ServerRule


@dataclass
class RevisionState:
    z: torch.Tensor  # the accumulator
    z_max: torch.Tensor  # z', the running max of z
    log: UpdateLog  # the gradients applied: ḡ − ḡ_old for any recent read


@dataclass(eq=False)
class ReviseAdagrad:
    """The AdaptiveRevision server rule, for the dense slice and for sparse tables."""

    lr: float
    initial_accumulator_value: float
    eps: float
    num_workers: int

    def init(self, values: torch.Tensor) -> RevisionState:
        z = torch.full_like(values, self.initial_accumulator_value)
        return RevisionState(z, z.clone(), UpdateLog.like(values, self.num_workers))

    def revise(self, x: torch.Tensor, g: torch.Tensor, g_bck: torch.Tensor, z: torch.Tensor,
               z_max: torch.Tensor) -> None:
        """The update of the paper's box, in place on ``x``, ``z`` and ``z_max``
        (contiguous tensors of one shape)."""
        _revise(*(t.view(-1).numpy() for t in (x, g, g_bck, z, z_max)), float(self.lr), float(self.eps))

    def apply(self, values, grad, state: RevisionState, out, *, worker, staleness, version) -> bool:
        state.log.check_worker(worker)  # before anything changes
        values, grad, out = values.tensor, grad.tensor, None if out is None else out.tensor
        g_bck = state.log.since(version - staleness)
        x = values if out is None else out.copy_(values)
        self.revise(x, grad, g_bck, state.z, state.z_max)
        state.log.record(version, worker, grad.clone())  # the pusher may reuse its gradient buffer
        return True

    def apply_rows(self, table, ids, grad_rows, state: RevisionState, *, worker, staleness, version) -> bool:
        state.log.check_worker(worker)  # before anything changes
        touched, where = torch.unique(ids, return_inverse=True)
        g = torch.zeros(touched.numel(), table.shape[1], dtype=table.dtype).index_add_(0, where, grad_rows)
        g_bck = state.log.since(version - staleness, touched)
        x, z, z_max = (t.index_select(0, touched) for t in (table, state.z, state.z_max))
        self.revise(x, g, g_bck, z, z_max)
        for full, rows in ((table, x), (state.z, z), (state.z_max, z_max)):
            full.index_copy_(0, touched, rows)
        state.log.record(version, worker, g, touched)
        return True

    def state_dict(self, state: RevisionState) -> dict:
        return {"z": state.z.clone(), "z_max": state.z_max.clone(), "log": state.log.state_dict()}

    def load_state_dict(self, saved: dict) -> RevisionState:
        return RevisionState(saved["z"].clone(), saved["z_max"].clone(), UpdateLog.from_state_dict(saved["log"]))


@dataclass(frozen=True)
class AdaptiveRevision(Protocol):
    name: ClassVar[str] = "dtadagrad"

    def server_rule(self, optimizer: optim.Optimizer, num_workers: int) -> ServerRule:
        check(isinstance(optimizer, optim.Adagrad), "server optimizer", getattr(optimizer, "name", optimizer),
              "protocol 'dtadagrad' revises AdaGrad's steps: set [server] optimizer = \"adagrad\"")
        check(not callable(optimizer.lr), "lr", optimizer.lr,
              "AdaptiveRevision has one constant step size alpha: set [server] options lr to a number")
        check(optimizer.lr_decay == 0, "lr_decay", optimizer.lr_decay,
              "AdaptiveRevision's rate comes from its accumulator alone: set [server] options lr_decay = 0")
        check(optimizer.weight_decay == 0, "weight_decay", optimizer.weight_decay,
              "AdaptiveRevision revises gradient steps only: set [server] options weight_decay = 0")
        check(optimizer.eps > 0 or optimizer.initial_accumulator_value > 0, "eps", optimizer.eps,
              "with initial_accumulator_value = 0, eps = 0 divides by zero: set eps > 0 (e.g. 1e-10) "
              "or initial_accumulator_value > 0 (Bösen uses 1)")
        check_int(num_workers, "num_workers")
        return ReviseAdagrad(optimizer.lr, optimizer.initial_accumulator_value, optimizer.eps, num_workers)

    async def work(self, ctx: WorkerContext) -> None:
        await Downpour().work(ctx)


@njit(cache=True, nogil=True, error_model="numpy")
def _revise(x, g, g_bck, z, z_max, lr, eps):
    """The paper's box per coordinate, each step rounded as ``optim.Adagrad``'s
    kernel rounds it, so that with no delay (g_bck = 0) it is AdaGrad bit for bit."""
    to = x.dtype.type
    lr, eps, two = to(lr), to(eps), to(2)
    for i in range(x.size):
        eta_old = lr / (np.sqrt(z_max[i]) + eps)
        zi = z[i] + (g[i] * g[i] + two * g[i] * g_bck[i])  # may decrease
        z[i] = zi
        zm = max(z_max[i], zi)  # so the rate never increases
        z_max[i] = zm
        std = np.sqrt(zm) + eps
        x[i] = x[i] + -lr * (g[i] / std) + (eta_old - lr / std) * g_bck[i]
