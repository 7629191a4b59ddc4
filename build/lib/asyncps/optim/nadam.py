"""NAdam: Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop."""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from asyncps.optim.base import LearningRate, Optimizer, State, lerp, weight_decay_terms
from asyncps.optim.validation import check_betas, check_nonnegative


class NAdam(Optimizer):
    r"""NAdam, as ``torch.optim.NAdam``.

    .. math::
        \mu_t &= \beta_1 \left(1 - \tfrac12\, 0.96^{t\psi}\right) \qquad
        \Pi_t = \textstyle\prod_{i \le t} \mu_i \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        \theta_t &= \theta_{t-1} - \eta \left[\frac{(1-\mu_t)\, g_t}{1-\Pi_t}
            + \frac{\mu_{t+1}\, m_t}{1-\Pi_{t+1}}\right]
            \Big/ \left(\sqrt{v_t / (1-\beta_2^t)} + \epsilon\right)

    ``psi = momentum_decay = 4e-3`` reproduces Dozat's ``0.96^{t/250}``. The
    running product ``mu_product`` is state (a float64 scalar), not recomputed.
    """

    name = "nadam"
    slots = ("exp_avg", "exp_avg_sq")

    def __init__(self, lr: LearningRate = 2e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False):
        super().__init__(lr)
        check_betas(betas)
        check_nonnegative(eps, "epsilon value", "eps")
        check_nonnegative(weight_decay, "weight_decay value", "weight_decay")
        check_nonnegative(momentum_decay, "momentum_decay value", "momentum_decay")
        self.betas = tuple(betas)
        self.eps = eps
        self.weight_decay = weight_decay
        self.momentum_decay = momentum_decay
        self.decoupled_weight_decay = bool(decoupled_weight_decay)

    def init(self, param: torch.Tensor) -> State:
        slots = super().init(param).tensors
        return State(0, {**slots, "mu_product": torch.ones((), dtype=torch.float64)})

    def _coefficients(self, state: State, lr: float) -> tuple[float, float]:
        """Advance ``mu_product`` and return the weights of g_t and m_t."""
        beta1 = self.betas[0]
        t = state.step
        mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * self.momentum_decay))
        mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * self.momentum_decay))
        mu_product = state["mu_product"].mul_(mu).item()
        return -lr * (1.0 - mu) / (1.0 - mu_product), -lr * mu_next / (1.0 - mu_product * mu_next)

    def reference(self, p: torch.Tensor, g: torch.Tensor, state: State, lr: float) -> None:
        beta1, beta2 = self.betas
        if self.weight_decay != 0:
            if self.decoupled_weight_decay:
                p.mul_(1 - lr * self.weight_decay)
            else:
                g = g.add(p, alpha=self.weight_decay)
        c_grad, c_avg = self._coefficients(state, lr)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(g, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = exp_avg_sq.div(1 - beta2**state.step).sqrt_().add_(self.eps)
        p.addcdiv_(g, denom, value=c_grad)
        p.addcdiv_(exp_avg, denom, value=c_avg)

    def fast(self, p: np.ndarray, g: np.ndarray, state: State, lr: float, out: np.ndarray | None) -> None:
        beta1, beta2 = self.betas
        decay_factor, coupled_wd = weight_decay_terms(lr, self.weight_decay, self.decoupled_weight_decay)
        c_grad, c_avg = self._coefficients(state, lr)
        _nadam_kernel(p, out, g, state.arrays["exp_avg"], state.arrays["exp_avg_sq"],
                      float(decay_factor), float(coupled_wd), 1.0 - beta1, float(beta1), float(beta2), 1.0 - beta2,
                      1.0 - beta2**state.step, float(self.eps), c_grad, c_avg)


@njit(cache=True, nogil=True, error_model="numpy")
def _nadam_kernel(p, out, g, exp_avg, exp_avg_sq, decay_factor, wd, w1, one_minus_w1, beta2, c2,
                  bias_correction2, eps, c_grad, c_avg):
    to = p.dtype.type
    decay_factor, wd, w1, one_minus_w1, beta2, c2 = (to(decay_factor), to(wd), to(w1), to(one_minus_w1), to(beta2),
                                                     to(c2))
    bias_correction2, eps, c_grad, c_avg = to(bias_correction2), to(eps), to(c_grad), to(c_avg)
    dst = p if out is None else out  # None: in place; numba prunes the branch, so the loop stays vectorized
    small_weight = w1 < 0.5
    for i in range(p.size):
        x = p[i] * decay_factor
        gi = g[i] + wd * x
        m = lerp(exp_avg[i], gi, w1, one_minus_w1, small_weight)
        v = exp_avg_sq[i] * beta2 + c2 * gi * gi
        exp_avg[i] = m
        exp_avg_sq[i] = v
        denom = np.sqrt(v / bias_correction2) + eps
        x = x + c_grad * (gi / denom)
        dst[i] = x + c_avg * (m / denom)
