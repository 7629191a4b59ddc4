"""Adam and AdamW.

Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018 (AMSGrad);
Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (AdamW).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from asyncps.optim.base import LearningRate, Optimizer, State, lerp, weight_decay_terms
from asyncps.optim.validation import check_betas, check_nonnegative


class Adam(Optimizer):
    r"""Adam, with optional AMSGrad and L2 or decoupled weight decay.

    .. math::
        g_t &\leftarrow g_t + \lambda\theta_{t-1} \quad\text{(L2; AdamW instead: } \theta_{t-1} \leftarrow (1-\eta\lambda)\theta_{t-1})\\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \qquad
        \hat v_t = \max(\hat v_{t-1}, v_t) \text{ with AMSGrad, else } v_t \\
        \theta_t &= \theta_{t-1} - \frac{\eta}{1-\beta_1^t}\,
                    \frac{m_t}{\sqrt{\hat v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    As in ``torch.optim.Adam``, epsilon is added after bias correction and the
    AMSGrad maximum is taken over the *uncorrected* second moment.
    """

    name = "adam"
    decoupled_weight_decay = False

    def __init__(self, lr: LearningRate = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False):
        super().__init__(lr)
        check_betas(betas)
        check_nonnegative(eps, "epsilon value", "eps")
        check_nonnegative(weight_decay, "weight_decay value", "weight_decay")
        self.betas = tuple(betas)
        self.eps = eps
        self.weight_decay = weight_decay
        self.amsgrad = bool(amsgrad)

    @property
    def slots(self):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if self.amsgrad else ("exp_avg", "exp_avg_sq")

    def reference(self, p: torch.Tensor, g: torch.Tensor, state: State, lr: float) -> None:
        beta1, beta2 = self.betas
        t = state.step
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if self.weight_decay != 0:
            if self.decoupled_weight_decay:
                p.mul_(1 - lr * self.weight_decay)
            else:
                g = g.add(p, alpha=self.weight_decay)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        if self.amsgrad:
            v = torch.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
        step_size = lr / (1 - beta1**t)
        denom = (v.sqrt() / (1 - beta2**t) ** 0.5).add_(self.eps)
        p.addcdiv_(m, denom, value=-step_size)

    def fast(self, p: np.ndarray, g: np.ndarray, state: State, lr: float, out: np.ndarray | None) -> None:
        beta1, beta2 = self.betas
        t = state.step
        decay_factor, coupled_wd = weight_decay_terms(lr, self.weight_decay, self.decoupled_weight_decay)
        v_max = state.arrays["max_exp_avg_sq"] if self.amsgrad else p[:0]
        _adam_kernel(p, out, g, state.arrays["exp_avg"], state.arrays["exp_avg_sq"], v_max,
                     float(decay_factor), float(coupled_wd), 1.0 - beta1, float(beta1), float(beta2), 1.0 - beta2,
                     (1 - beta2**t) ** 0.5, float(self.eps), -lr / (1 - beta1**t),
                     self.amsgrad)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019), as
    ``torch.optim.AdamW``: the decay is scaled by the full learning rate,
    ``theta <- theta * (1 - lr * weight_decay)``, before the Adam step."""

    name = "adamw"
    decoupled_weight_decay = True

    def __init__(self, lr: LearningRate = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False):
        super().__init__(lr, betas, eps, weight_decay, amsgrad)


@njit(cache=True, nogil=True, error_model="numpy")
def _adam_kernel(p, out, g, m, v, v_max, decay_factor, wd, w1, one_minus_w1, beta2, c2,
                 bias_correction2_sqrt, eps, neg_step_size, amsgrad):
    to = p.dtype.type
    decay_factor, wd, w1, one_minus_w1, beta2, c2 = (to(decay_factor), to(wd), to(w1), to(one_minus_w1), to(beta2),
                                                     to(c2))
    bias_correction2_sqrt, eps, neg_step_size = to(bias_correction2_sqrt), to(eps), to(neg_step_size)
    dst = p if out is None else out  # None: in place; numba prunes the branch, so the loop stays vectorized
    small_weight = w1 < 0.5
    for i in range(p.size):
        x = p[i] * decay_factor
        gi = g[i] + wd * x
        mi = lerp(m[i], gi, w1, one_minus_w1, small_weight)
        vi = v[i] * beta2 + c2 * gi * gi
        m[i] = mi
        v[i] = vi
        if amsgrad:
            vi = max(v_max[i], vi)
            v_max[i] = vi
        dst[i] = x + neg_step_size * (mi / (np.sqrt(vi) / bias_correction2_sqrt + eps))
