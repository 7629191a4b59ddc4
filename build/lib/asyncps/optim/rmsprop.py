"""RMSprop: Tieleman & Hinton, Lecture 6.5 of "Neural Networks for Machine
Learning", 2012; the centered form is Graves, "Generating Sequences With
Recurrent Neural Networks", 2013."""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from asyncps.optim.base import LearningRate, Optimizer, State, lerp
from asyncps.optim.validation import check_in, check_nonnegative


class RMSprop(Optimizer):
    r"""RMSprop, as ``torch.optim.RMSprop``.

    .. math::
        v_t &= \alpha v_{t-1} + (1-\alpha) g_t^2 \qquad
        \bar g_t = \alpha \bar g_{t-1} + (1-\alpha) g_t \text{ (centered)} \\
        d_t &= \sqrt{v_t - \bar g_t^2} + \epsilon \text{ (centered) or } \sqrt{v_t} + \epsilon \\
        b_t &= \mu b_{t-1} + g_t / d_t \qquad \theta_t = \theta_{t-1} - \eta b_t
        \quad (\text{or } \theta_{t-1} - \eta g_t / d_t \text{ without momentum})

    Epsilon is outside the square root (TensorFlow puts it inside); Hinton's
    lecture used ``alpha = 0.9``, torch defaults to 0.99.
    """

    name = "rmsprop"

    def __init__(self, lr: LearningRate = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False):
        super().__init__(lr)
        check_in(alpha, 0.0, 1.0, "alpha value", "alpha", high_open=False)
        check_nonnegative(eps, "epsilon value", "eps")
        check_nonnegative(weight_decay, "weight_decay value", "weight_decay")
        check_nonnegative(momentum, "momentum value", "momentum")
        self.alpha = alpha
        self.eps = eps
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.centered = bool(centered)

    @property
    def slots(self):
        return ("square_avg",) + (("grad_avg",) if self.centered else ()) + (
            ("momentum_buffer",) if self.momentum > 0 else ())

    def reference(self, p: torch.Tensor, g: torch.Tensor, state: State, lr: float) -> None:
        if self.weight_decay != 0:
            g = g.add(p, alpha=self.weight_decay)
        square_avg = state["square_avg"]
        square_avg.mul_(self.alpha).addcmul_(g, g, value=1 - self.alpha)
        if self.centered:
            grad_avg = state["grad_avg"].lerp_(g, 1 - self.alpha)
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            avg = square_avg.sqrt()
        avg.add_(self.eps)
        if self.momentum > 0:
            buf = state["momentum_buffer"].mul_(self.momentum).addcdiv_(g, avg)
            p.add_(buf, alpha=-lr)
        else:
            p.addcdiv_(g, avg, value=-lr)

    def fast(self, p: np.ndarray, g: np.ndarray, state: State, lr: float, out: np.ndarray | None) -> None:
        unused = p[:0]
        grad_avg = state.arrays["grad_avg"] if self.centered else unused
        buf = state.arrays["momentum_buffer"] if self.momentum > 0 else unused
        _rmsprop_kernel(p, out, g, state.arrays["square_avg"], grad_avg, buf,
                        float(self.weight_decay), float(self.alpha), 1.0 - self.alpha, float(self.eps),
                        float(self.momentum), -lr,
                        self.centered, self.momentum > 0)


@njit(cache=True, nogil=True, error_model="numpy")
def _rmsprop_kernel(p, out, g, square_avg, grad_avg, buf, wd, alpha, one_minus_alpha, eps, momentum, neg_lr,
                    centered, use_momentum):
    to = p.dtype.type
    wd, alpha, one_minus_alpha, eps, momentum, neg_lr = (to(wd), to(alpha), to(one_minus_alpha), to(eps),
                                                         to(momentum), to(neg_lr))
    dst = p if out is None else out  # None: in place; numba prunes the branch, so the loop stays vectorized
    small_weight = one_minus_alpha < 0.5
    for i in range(p.size):
        gi = g[i] + wd * p[i]
        v = square_avg[i] * alpha + one_minus_alpha * gi * gi
        square_avg[i] = v
        if centered:
            ga = lerp(grad_avg[i], gi, one_minus_alpha, alpha, small_weight)
            grad_avg[i] = ga
            avg = np.sqrt(v + -ga * ga) + eps
        else:
            avg = np.sqrt(v) + eps
        if use_momentum:
            b = buf[i] * momentum + gi / avg
            buf[i] = b
            dst[i] = p[i] + neg_lr * b
        else:
            dst[i] = p[i] + neg_lr * (gi / avg)
