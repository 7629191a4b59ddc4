"""AdaMax: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
Section 7.1 (Algorithm 2)."""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from asyncps.optim.base import LearningRate, Optimizer, State, lerp
from asyncps.optim.validation import check_betas, check_nonnegative


class Adamax(Optimizer):
    r"""AdaMax, Adam with the infinity norm, as ``torch.optim.Adamax``.

    .. math::
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        u_t &= \max(\beta_2 u_{t-1}, |g_t| + \epsilon) \\
        \theta_t &= \theta_{t-1} - \frac{\eta}{1-\beta_1^t}\, m_t / u_t

    The paper has no epsilon; torch adds it inside the max, which keeps
    ``u_t > 0`` where the gradient is exactly zero.
    """

    name = "adamax"
    slots = ("exp_avg", "exp_inf")

    def __init__(self, lr: LearningRate = 2e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(lr)
        check_betas(betas)
        check_nonnegative(eps, "epsilon value", "eps")
        check_nonnegative(weight_decay, "weight_decay value", "weight_decay")
        self.betas = tuple(betas)
        self.eps = eps
        self.weight_decay = weight_decay

    def reference(self, p: torch.Tensor, g: torch.Tensor, state: State, lr: float) -> None:
        beta1, beta2 = self.betas
        if self.weight_decay != 0:
            g = g.add(p, alpha=self.weight_decay)
        exp_avg, exp_inf = state["exp_avg"], state["exp_inf"]
        exp_avg.lerp_(g, 1 - beta1)
        torch.maximum(exp_inf.mul_(beta2), g.abs().add_(self.eps), out=exp_inf)
        p.addcdiv_(exp_avg, exp_inf, value=-lr / (1 - beta1**state.step))

    def fast(self, p: np.ndarray, g: np.ndarray, state: State, lr: float, out: np.ndarray | None) -> None:
        beta1, beta2 = self.betas
        _adamax_kernel(p, out, g, state.arrays["exp_avg"], state.arrays["exp_inf"],
                       float(self.weight_decay), 1.0 - beta1, float(beta1), float(beta2), float(self.eps),
                       -lr / (1 - beta1**state.step))


@njit(cache=True, nogil=True, error_model="numpy")
def _adamax_kernel(p, out, g, exp_avg, exp_inf, wd, w1, one_minus_w1, beta2, eps, neg_clr):
    to = p.dtype.type
    wd, w1, one_minus_w1, beta2, eps, neg_clr = to(wd), to(w1), to(one_minus_w1), to(beta2), to(eps), to(neg_clr)
    dst = p if out is None else out  # None: in place; numba prunes the branch, so the loop stays vectorized
    small_weight = w1 < 0.5
    for i in range(p.size):
        gi = g[i] + wd * p[i]
        m = lerp(exp_avg[i], gi, w1, one_minus_w1, small_weight)
        exp_avg[i] = m
        u = max(exp_inf[i] * beta2, abs(gi) + eps)
        exp_inf[i] = u
        dst[i] = p[i] + neg_clr * (m / u)
