"""Adadelta: Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012."""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from asyncps.optim.base import LearningRate, Optimizer, State
from asyncps.optim.validation import check_in, check_nonnegative


class Adadelta(Optimizer):
    r"""Adadelta, as ``torch.optim.Adadelta``.

    .. math::
        v_t &= \rho v_{t-1} + (1-\rho) g_t^2 \\
        \Delta x_t &= \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t \\
        u_t &= \rho u_{t-1} + (1-\rho) \Delta x_t^2 \\
        \theta_t &= \theta_{t-1} - \eta\,\Delta x_t

    Zeiler's paper has no learning rate (``lr = 1``, torch's default) and used
    ``rho = 0.95``; torch defaults to ``rho = 0.9``.
    """

    name = "adadelta"
    slots = ("square_avg", "acc_delta")

    def __init__(self, lr: LearningRate = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0):
        super().__init__(lr)
        check_in(rho, 0.0, 1.0, "rho value", "rho", high_open=False)
        check_nonnegative(eps, "epsilon value", "eps")
        check_nonnegative(weight_decay, "weight_decay value", "weight_decay")
        self.rho = rho
        self.eps = eps
        self.weight_decay = weight_decay

    def reference(self, p: torch.Tensor, g: torch.Tensor, state: State, lr: float) -> None:
        if self.weight_decay != 0:
            g = g.add(p, alpha=self.weight_decay)
        square_avg, acc_delta = state["square_avg"], state["acc_delta"]
        square_avg.mul_(self.rho).addcmul_(g, g, value=1 - self.rho)
        std = square_avg.add(self.eps).sqrt_()
        delta = acc_delta.add(self.eps).sqrt_().div_(std).mul_(g)
        acc_delta.mul_(self.rho).addcmul_(delta, delta, value=1 - self.rho)
        p.add_(delta, alpha=-lr)

    def fast(self, p: np.ndarray, g: np.ndarray, state: State, lr: float, out: np.ndarray | None) -> None:
        _adadelta_kernel(p, out, g, state.arrays["square_avg"], state.arrays["acc_delta"],
                         float(self.weight_decay), float(self.rho), 1.0 - self.rho, float(self.eps), -lr)


@njit(cache=True, nogil=True, error_model="numpy")
def _adadelta_kernel(p, out, g, square_avg, acc_delta, wd, rho, one_minus_rho, eps, neg_lr):
    to = p.dtype.type
    wd, rho, one_minus_rho, eps, neg_lr = to(wd), to(rho), to(one_minus_rho), to(eps), to(neg_lr)
    dst = p if out is None else out  # None: in place; numba prunes the branch, so the loop stays vectorized
    for i in range(p.size):
        gi = g[i] + wd * p[i]
        v = square_avg[i] * rho + one_minus_rho * gi * gi
        square_avg[i] = v
        delta = np.sqrt(acc_delta[i] + eps) / np.sqrt(v + eps) * gi
        acc_delta[i] = acc_delta[i] * rho + one_minus_rho * delta * delta
        dst[i] = p[i] + neg_lr * delta
