r"""DC-ASGD: Zheng, Meng, Wang, Chen, Yu, Ma & Liu, "Asynchronous Stochastic
Gradient Descent with Delay Compensation", ICML 2017 (arXiv 1609.08326).

A gradient computed at w_bak(m), the parameters worker m last pulled, arrives
when the parameters are w. DC-ASGD corrects it with the first-order term of
its Taylor expansion around w_bak(m), the Hessian approximated by λ g ⊙ g::

    worker m:  pull w (the server sets w_bak(m) <- w); g <- gradient(w, batch); push g
    server:    g_c = g + λ g ⊙ g ⊙ (w − w_bak(m))
               w   <- optimizer(w, g_c)                # SGD in the paper, here any server optimizer

DC-ASGD-c keeps λ constant. DC-ASGD-a (``adaptive``) scales it per
coordinate by the gradient's magnitude:
λ_t = λ0 / sqrt(MeanSquare(t) + eps), MeanSquare(t) = m MeanSquare(t−1) + (1 − m) g_t²,
one MeanSquare on the server, updated by every push before its λ_t is taken.
The paper's CIFAR-10 settings are the defaults: λ = 0.04 for DC-ASGD-c (also
MXNet's ``dcasgd`` default), λ0 = 2, m = 0.95 and eps = 1e-7 for DC-ASGD-a.

On a sparse table (``push_rows``) MeanSquare is lazy, as the server
optimizers' row state is: a push updates only the rows r it touches (their
duplicate ids summed first), MeanSquare[r] <- m MeanSquare[r] + (1 − m) g_r²,
and an untouched row's MeanSquare stays as it is until a push touches it.
A dense push of the whole table, zero in the other rows, would instead decay
their MeanSquare by m each time; lazily, a rarely pushed row keeps a larger
MeanSquare, hence a smaller λ_t, than it would have there.

w − w_bak(m) is exact here: the sum of the parameter changes the shard
applied since the version the push says its worker read
(``protocols.update_log``). Multiverso instead sets w_bak(m) just after m's
push, as if every worker pulled at once, and MXNet's ``dcasgd`` optimizer
uses the weights before its own previous update, one step back whatever the
delay. Workers run the plain asynchronous loop: Downpour's with
n_fetch = n_push = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from asyncps import optim
from asyncps.optim.validation import check, check_bool, check_in, check_int, is_number
from asyncps.protocols.base import Protocol, WorkerContext
from asyncps.protocols.downpour import Downpour
from asyncps.protocols.update_log import UpdateLog
from asyncps.ps import ServerRule


@dataclass
class CompensationState:
    optimizer: optim.State
    log: UpdateLog  # the parameter changes applied: w − w_bak(m) for any recent read
    mean_square: torch.Tensor | None  # DC-ASGD-a's MeanSquare; None for DC-ASGD-c


class CompensateThenApply:
    """Add the delay compensation to each gradient, then apply the server optimizer."""

    def __init__(self, optimizer: optim.Optimizer, lambda_: float, adaptive: bool, mean_square_decay: float,
                 eps: float, num_workers: int):
        self.optimizer = optimizer
        self.lambda_ = lambda_
        self.adaptive = adaptive
        self.mean_square_decay = mean_square_decay
        self.eps = eps
        self.num_workers = num_workers

    def __repr__(self) -> str:
        return (f"CompensateThenApply({self.optimizer!r}, lambda_={self.lambda_!r}, adaptive={self.adaptive}, "
                f"mean_square_decay={self.mean_square_decay!r}, eps={self.eps!r}, num_workers={self.num_workers})")

    def init(self, values: torch.Tensor) -> CompensationState:
        mean_square = torch.zeros_like(values) if self.adaptive else None
        return CompensationState(self.optimizer.init(values), UpdateLog.like(values, self.num_workers), mean_square)

    def compensate(self, g: torch.Tensor, drift: torch.Tensor, mean_square: torch.Tensor | None) -> torch.Tensor:
        """g + λ g ⊙ g ⊙ drift, with ``drift`` = w − w_bak(m); updates ``mean_square`` in place."""
        lam = self.lambda_
        if self.adaptive:
            mean_square.mul_(self.mean_square_decay).addcmul_(g, g, value=1 - self.mean_square_decay)
            lam = self.lambda_ / (mean_square + self.eps).sqrt()
        return g + lam * g * g * drift

    def apply(self, values, grad, state: CompensationState, out, *, worker, staleness, version) -> bool:
        state.log.check_worker(worker)  # before anything changes
        values, grad, out = values.tensor, grad.tensor, None if out is None else out.tensor
        g_c = self.compensate(grad, state.log.since(version - staleness), state.mean_square)
        before = values.clone() if out is None else values
        self.optimizer.step(values, g_c, state.optimizer, out=out)
        after = values if out is None else out
        state.log.record(version, worker, after - before)
        return True

    def apply_rows(self, table, ids, grad_rows, state: CompensationState, *, worker, staleness, version) -> bool:
        state.log.check_worker(worker)  # before anything changes
        touched, where = torch.unique(ids, return_inverse=True)
        g = torch.zeros(touched.numel(), table.shape[1], dtype=table.dtype).index_add_(0, where, grad_rows)
        mean_square = state.mean_square.index_select(0, touched) if self.adaptive else None
        g_c = self.compensate(g, state.log.since(version - staleness, touched), mean_square)
        if self.adaptive:
            state.mean_square.index_copy_(0, touched, mean_square)
        before = table.index_select(0, touched)
        self.optimizer.step_rows(table, touched, g_c, state.optimizer)
        state.log.record(version, worker, table.index_select(0, touched) - before, touched)
        return True

    def state_dict(self, state: CompensationState) -> dict:
        saved = {"optimizer": state.optimizer.state_dict(), "log": state.log.state_dict()}
        if self.adaptive:
            saved["mean_square"] = state.mean_square.clone()
        return saved

    def load_state_dict(self, saved: dict) -> CompensationState:
        mean_square = saved["mean_square"].clone() if self.adaptive else None
        return CompensationState(optim.State.from_state_dict(saved["optimizer"]),
                                 UpdateLog.from_state_dict(saved["log"]), mean_square)


@dataclass(frozen=True)
class DCASGD(Protocol):
    name: ClassVar[str] = "dcasgd"

    adaptive: bool = False  # False: DC-ASGD-c (constant λ); True: DC-ASGD-a (λ0 scaled per coordinate)
    lambda_: float | None = None  # λ, or λ0 when adaptive: a number >= 0 (None: the paper's 0.04, or 2 when adaptive)
    mean_square_decay: float = 0.95  # m of DC-ASGD-a's MeanSquare, in [0, 1)
    eps: float = 1e-7  # DC-ASGD-a's eps under the square root, > 0

    def __post_init__(self):
        check_bool(self.adaptive, "adaptive")
        check(self.lambda_ is None or (is_number(self.lambda_) and self.lambda_ >= 0), "lambda_", self.lambda_,
              "lambda_ must be a number >= 0")
        check_in(self.mean_square_decay, 0.0, 1.0, "mean_square_decay", "mean_square_decay")
        check(is_number(self.eps) and self.eps > 0, "eps", self.eps, "eps must be a number > 0")

    @property
    def lam(self) -> float:
        """λ of DC-ASGD-c, or λ0 of DC-ASGD-a."""
        if self.lambda_ is not None:
            return self.lambda_
        return 2.0 if self.adaptive else 0.04

    def server_rule(self, optimizer: optim.Optimizer, num_workers: int) -> ServerRule:
        check_int(num_workers, "num_workers")
        return CompensateThenApply(optimizer, self.lam, self.adaptive, self.mean_square_decay, self.eps, num_workers)

    async def work(self, ctx: WorkerContext) -> None:
        await Downpour().work(ctx)
