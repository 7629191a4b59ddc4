"""Adagrad: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online
Learning and Stochastic Optimization", JMLR 2011."""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from asyncps.optim.base import LearningRate, Optimizer, State
from asyncps.optim.validation import check_nonnegative


class Adagrad(Optimizer):
    r"""Adagrad, as ``torch.optim.Adagrad``.

    .. math::
        g_t &\leftarrow g_t + \lambda\theta_{t-1} \qquad
        \tilde\eta_t = \eta / (1 + (t-1)\,\text{lr\_decay}) \\
        s_t &= s_{t-1} + g_t^2 \quad (s_0 = \text{initial\_accumulator\_value}) \\
        \theta_t &= \theta_{t-1} - \tilde\eta_t\, g_t / (\sqrt{s_t} + \epsilon)

    This is the per-parameter rate Downpour's shards apply (Dean et al. 2012).
    """

    name = "adagrad"
    slots = ("sum",)

    def __init__(self, lr: LearningRate = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10):
        super().__init__(lr)
        check_nonnegative(lr_decay, "lr_decay value", "lr_decay")
        check_nonnegative(weight_decay, "weight_decay value", "weight_decay")
        check_nonnegative(initial_accumulator_value, "initial_accumulator_value", "initial_accumulator_value")
        check_nonnegative(eps, "epsilon value", "eps")
        self.lr_decay = lr_decay
        self.weight_decay = weight_decay
        self.initial_accumulator_value = initial_accumulator_value
        self.eps = eps

    def init(self, param: torch.Tensor) -> State:
        state = super().init(param)
        state["sum"].fill_(self.initial_accumulator_value)
        return state

    def _clr(self, lr: float, t: int) -> float:
        return lr / (1 + (t - 1) * self.lr_decay)

    def reference(self, p: torch.Tensor, g: torch.Tensor, state: State, lr: float) -> None:
        if self.weight_decay != 0:
            g = g.add(p, alpha=self.weight_decay)
        state["sum"].addcmul_(g, g, value=1)
        std = state["sum"].sqrt().add_(self.eps)
        p.addcdiv_(g, std, value=-self._clr(lr, state.step))

    def fast(self, p: np.ndarray, g: np.ndarray, state: State, lr: float, out: np.ndarray | None) -> None:
        _adagrad_kernel(p, out, g, state.arrays["sum"], float(self.weight_decay), float(self.eps),
                        -self._clr(lr, state.step))


@njit(cache=True, nogil=True, error_model="numpy")
def _adagrad_kernel(p, out, g, s, wd, eps, neg_clr):
    to = p.dtype.type
    wd, eps, neg_clr = to(wd), to(eps), to(neg_clr)
    dst = p if out is None else out  # None: in place; numba prunes the branch, so the loop stays vectorized
    for i in range(p.size):
        gi = g[i] + wd * p[i]
        si = s[i] + gi * gi
        s[i] = si
        dst[i] = p[i] + neg_clr * (gi / (np.sqrt(si) + eps))
