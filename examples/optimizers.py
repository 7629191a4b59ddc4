r"""An optimizer of your own: Lion, as an ``optim.Optimizer``.

``server.optimizer = "examples.optimizers:Lion"`` (examples/optimizer.toml):
every shard applies it to the gradients pushed to it. Chen et al.,
"Symbolic Discovery of Optimization Algorithms", NeurIPS 2023, Algorithm 2:

.. math::

    u_t = \operatorname{sign}(\beta_1 m_{t-1} + (1 - \beta_1) g_t), \quad
    \theta_t = \theta_{t-1} - \eta_t (u_t + \lambda \theta_{t-1}), \quad
    m_t = \beta_2 m_{t-1} + (1 - \beta_2) g_t

An optimizer takes ``lr`` (a number, or a schedule the config's
``server.schedule`` makes of it) and its hyperparameters by keyword (the
config's ``server.options``), validated here, and names its per-element
state (``slots``: each a tensor shaped as the parameter, made by ``init``).
``reference`` is the update on torch tensors, in place, state included;
``state.step`` is already advanced and ``lr`` read off the schedule. A shard
runs it on its slice of the parameters; the optimizer needs no ``fast``
kernel of its own (the library's optimizers add a numba one for speed).
"""

from __future__ import annotations

from typing import ClassVar

from asyncps.optim import Optimizer
from asyncps.optim.validation import check_betas, check_nonnegative


class Lion(Optimizer):
    name: ClassVar[str] = "lion"
    slots: ClassVar[tuple[str, ...]] = ("exp_avg",)

    def __init__(self, lr=1e-4, betas=(0.9, 0.99), weight_decay: float = 0.0):
        super().__init__(lr)
        check_betas(betas)
        check_nonnegative(weight_decay, "weight_decay value", "weight_decay")
        self.betas = tuple(betas)
        self.weight_decay = weight_decay

    def reference(self, p, g, state, lr):
        beta1, beta2 = self.betas
        m = state["exp_avg"]
        update = m.mul(beta1).add_(g, alpha=1 - beta1).sign_()
        p.mul_(1 - lr * self.weight_decay).add_(update, alpha=-lr)
        m.mul_(beta2).add_(g, alpha=1 - beta2)
