"""Stochastic gradient descent with momentum (Polyak 1964) and Nesterov
momentum (Nesterov 1983; Sutskever et al., ICML 2013)."""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from asyncps.optim.base import LearningRate, Optimizer, State
from asyncps.optim.validation import check, check_nonnegative


class SGD(Optimizer):
    r"""SGD, as ``torch.optim.SGD``.

    .. math::
        g_t &\leftarrow g_t + \lambda\theta_{t-1} \\
        b_t &= \mu b_{t-1} + (1-\tau) g_t \quad (b_1 = g_1) \\
        g_t &\leftarrow g_t + \mu b_t \text{ (Nesterov) or } b_t \text{ (momentum)} \\
        \theta_t &= \theta_{t-1} - \eta g_t

    With ``step_rows`` a row touched for the first time after step 1 starts
    its buffer at zero, so it gets ``(1 - dampening) g`` rather than ``g``.
    """

    name = "sgd"

    def __init__(self, lr: LearningRate = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(lr)
        check_nonnegative(momentum, "momentum value", "momentum")
        check_nonnegative(dampening, "dampening value", "dampening")
        check_nonnegative(weight_decay, "weight_decay value", "weight_decay")
        check(not nesterov or (momentum > 0 and dampening == 0), "nesterov", nesterov,
              "Nesterov momentum requires momentum > 0 and dampening = 0")
        self.momentum = momentum
        self.dampening = dampening
        self.weight_decay = weight_decay
        self.nesterov = bool(nesterov)

    @property
    def slots(self):
        return ("momentum_buffer",) if self.momentum != 0 else ()

    def reference(self, p: torch.Tensor, g: torch.Tensor, state: State, lr: float) -> None:
        if self.weight_decay != 0:
            g = g.add(p, alpha=self.weight_decay)
        if self.momentum != 0:
            buf = state["momentum_buffer"]
            if state.step == 1:
                buf.copy_(g)
            else:
                buf.mul_(self.momentum).add_(g, alpha=1 - self.dampening)
            g = g.add(buf, alpha=self.momentum) if self.nesterov else buf
        p.add_(g, alpha=-lr)

    def fast(self, p: np.ndarray, g: np.ndarray, state: State, lr: float, out: np.ndarray | None) -> None:
        buf = state.arrays["momentum_buffer"] if self.momentum != 0 else p[:0]
        _sgd_kernel(p, out, g, buf,
                    float(self.weight_decay), float(self.momentum), 1.0 - self.dampening, -lr,
                    self.momentum != 0, state.step == 1, self.nesterov)


@njit(cache=True, nogil=True, error_model="numpy")
def _sgd_kernel(p, out, g, buf, wd, momentum, one_minus_dampening, neg_lr, use_momentum, first_step, nesterov):
    to = p.dtype.type
    wd, momentum, one_minus_dampening, neg_lr = to(wd), to(momentum), to(one_minus_dampening), to(neg_lr)
    dst = p if out is None else out  # None: in place; numba prunes the branch, so the loop stays vectorized
    for i in range(p.size):
        gi = g[i] + wd * p[i]
        if use_momentum:
            b = gi if first_step else buf[i] * momentum + one_minus_dampening * gi
            buf[i] = b
            gi = gi + momentum * b if nesterov else b
        dst[i] = p[i] + neg_lr * gi
