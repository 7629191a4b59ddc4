"""Learning-rate schedules: ``step -> lr``.

A schedule is any callable taking the update count (0 for the first update)
and returning the learning rate for that update; optimizers accept one
wherever they accept a float ``lr``. ``schedule(t)`` is the lr that
``torch.optim.lr_scheduler``'s counterpart leaves in ``param_groups`` before
the ``t``-th ``opt.step()``, when ``opt.step(); sched.step()`` alternate.

Each schedule is a frozen dataclass evaluated in closed form, so it is
picklable (it travels to Ray actors) and any step can be read without replaying
the ones before it — a restored shard just asks for ``schedule(version)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Callable

from asyncps.optim.validation import check, check_int, is_number

__all__ = ["Schedule", "Constant", "StepDecay", "ExponentialDecay", "InverseTimeDecay", "CosineAnnealing", "SGDR",
           "Triangular", "Noam", "Warmup", "lr_at"]

Schedule = Callable[[int], float]


def _check(ok: bool, name: str, value, rule: str) -> None:
    check(ok, name, value, f"{name} must be {rule}")


def _check_lr(name: str, value) -> None:
    _check(is_number(value) and value >= 0, name, value, "a finite number >= 0")


def _check_decay_factor(name: str, value) -> None:
    _check(is_number(value) and 0 < value <= 1, name, value, "in (0, 1]")


def lr_at(lr: float | Schedule, step: int) -> float:
    """The learning rate for update ``step``: ``lr`` itself, or ``lr(step)`` for a schedule.

    Checked on every read, because a schedule is arbitrary user code and a
    negative or non-finite lr would silently corrupt the parameters.
    """
    if type(lr) is float and 0.0 <= lr < math.inf:  # a constant: no schedule to ask
        return lr
    if callable(lr):
        value = lr(step)
    elif isinstance(lr, Real):
        value = lr
    else:
        raise TypeError(f"Invalid learning rate: {lr!r} (expected a number or a schedule step -> lr)")
    if not (is_number(value) and value >= 0):
        raise ValueError(f"Invalid learning rate at step {step}: {value!r} (lr must be a finite number >= 0)")
    return float(value)


@dataclass(frozen=True)
class Constant:
    r"""The same rate at every step: :math:`\eta_t = \eta`."""

    lr: float

    def __post_init__(self):
        _check_lr("lr", self.lr)

    def __call__(self, step: int) -> float:
        return float(self.lr)


@dataclass(frozen=True)
class StepDecay:
    r"""Step decay: :math:`\eta_t = \eta\,\gamma^{\lfloor t / \text{step\_size} \rfloor}`.

    ``torch.optim.lr_scheduler.StepLR``.
    """

    lr: float
    step_size: int
    gamma: float = 0.1

    def __post_init__(self):
        _check_lr("lr", self.lr)
        check_int(self.step_size, "step_size")
        _check_decay_factor("gamma", self.gamma)

    def __call__(self, step: int) -> float:
        return self.lr * self.gamma ** (step // self.step_size)


@dataclass(frozen=True)
class ExponentialDecay:
    r"""Exponential decay: :math:`\eta_t = \eta\,\gamma^t`.

    ``torch.optim.lr_scheduler.ExponentialLR``.
    """

    lr: float
    gamma: float

    def __post_init__(self):
        _check_lr("lr", self.lr)
        _check_decay_factor("gamma", self.gamma)

    def __call__(self, step: int) -> float:
        return self.lr * self.gamma**step


@dataclass(frozen=True)
class InverseTimeDecay:
    r"""Inverse-time ("1/t") annealing: :math:`\eta_t = \eta / (1 + \text{decay}\cdot t)^{p}`.

    ``power=1`` is the classic Robbins-Monro :math:`\eta_t \propto 1/t` rate for
    stochastic approximation; ``power=0.5`` gives the :math:`\sigma/\sqrt{t}`
    rate of the SSP regret bound (Ho et al., NIPS 2013).
    """

    lr: float
    decay: float
    power: float = 1.0

    def __post_init__(self):
        _check_lr("lr", self.lr)
        _check(is_number(self.decay) and self.decay >= 0, "decay", self.decay, "a finite number >= 0")
        _check(is_number(self.power) and self.power > 0, "power", self.power, "a finite number > 0")

    def __call__(self, step: int) -> float:
        return self.lr / (1 + self.decay * step) ** self.power


@dataclass(frozen=True)
class CosineAnnealing:
    r"""Cosine annealing without restarts (Loshchilov & Hutter, "SGDR", ICLR 2017):

    .. math::
        \eta_t = \eta_{min} + \tfrac12(\eta - \eta_{min})\left(1 + \cos\frac{\pi t}{T_{max}}\right)

    ``torch.optim.lr_scheduler.CosineAnnealingLR``. As there, the cosine is not
    clamped after :math:`T_{max}`: the rate climbs back towards :math:`\eta`
    over the next :math:`T_{max}` steps. Set ``T_max`` to the run length, or use
    :class:`SGDR` for deliberate restarts.
    """

    lr: float
    T_max: int
    eta_min: float = 0.0

    def __post_init__(self):
        _check_lr("lr", self.lr)
        check_int(self.T_max, "T_max")
        _check(is_number(self.eta_min) and 0 <= self.eta_min <= self.lr, "eta_min", self.eta_min, "in [0, lr]")

    def __call__(self, step: int) -> float:
        return self.eta_min + (self.lr - self.eta_min) * (1 + math.cos(math.pi * step / self.T_max)) / 2


@dataclass(frozen=True)
class SGDR:
    r"""Cosine annealing with warm restarts (Loshchilov & Hutter, "SGDR", ICLR 2017, eq. 5):

    .. math::
        \eta_t = \eta_{min} + \tfrac12(\eta - \eta_{min})\left(1 + \cos\frac{\pi T_{cur}}{T_i}\right),
        \qquad T_i = T_0\,T_{mult}^{\,i}

    where :math:`T_{cur}` counts steps since the last restart and period
    :math:`i` lasts :math:`T_i` steps. A restart only resets the rate, never the
    parameters. ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``.
    """

    lr: float
    T_0: int
    T_mult: int = 1
    eta_min: float = 0.0

    def __post_init__(self):
        _check_lr("lr", self.lr)
        check_int(self.T_0, "T_0")
        check_int(self.T_mult, "T_mult")
        _check(is_number(self.eta_min) and 0 <= self.eta_min <= self.lr, "eta_min", self.eta_min, "in [0, lr]")

    def period(self, step: int) -> tuple[int, int]:
        """``(T_cur, T_i)`` at ``step``.

        Walked in integers rather than through ``log(step, T_mult)``: the
        floating-point log lands just below an exact power and puts the restart
        one period late.
        """
        if self.T_mult == 1:
            return step % self.T_0, self.T_0
        T_cur, T_i = step, self.T_0
        while T_cur >= T_i:
            T_cur -= T_i
            T_i *= self.T_mult
        return T_cur, T_i

    def __call__(self, step: int) -> float:
        T_cur, T_i = self.period(step)
        return self.eta_min + (self.lr - self.eta_min) * (1 + math.cos(math.pi * T_cur / T_i)) / 2


@dataclass(frozen=True)
class Triangular:
    r"""Cyclical learning rate, triangular policy (Smith, "Cyclical Learning Rates
    for Training Neural Networks", WACV 2017):

    .. math::
        \text{cycle} = \lfloor 1 + \tfrac{t}{2s} \rfloor,\quad
        x = \left|\tfrac{t}{s} - 2\,\text{cycle} + 1\right|,\quad
        \eta_t = \eta_{base} + (\eta_{max} - \eta_{base})\max(0, 1 - x)

    with stepsize :math:`s`. Here the rise lasts ``step_size_up`` steps and
    the fall ``step_size_down`` (default: the same), as in
    ``torch.optim.lr_scheduler.CyclicLR(mode="triangular")``.
    """

    base_lr: float
    max_lr: float
    step_size_up: int = 2000
    step_size_down: int | None = None

    def __post_init__(self):
        _check_lr("base_lr", self.base_lr)
        _check(is_number(self.max_lr) and self.max_lr >= self.base_lr, "max_lr", self.max_lr, ">= base_lr")
        check_int(self.step_size_up, "step_size_up")
        if self.step_size_down is not None:
            check_int(self.step_size_down, "step_size_down")

    def __call__(self, step: int) -> float:
        up = self.step_size_up
        down = up if self.step_size_down is None else self.step_size_down
        # Integer position in the cycle, so peaks and troughs land exactly.
        position = step % (up + down)
        height = position / up if position < up else (up + down - position) / down
        return self.base_lr + (self.max_lr - self.base_lr) * height


@dataclass(frozen=True)
class Noam:
    r"""The Transformer's warm-up schedule (Vaswani et al., "Attention Is All You Need",
    NIPS 2017, eq. 3):

    .. math::
        \eta = \text{scale}\cdot d_{model}^{-0.5}\cdot
               \min(s^{-0.5},\; s\cdot \text{warmup\_steps}^{-1.5}),\qquad s = t + 1

    Linear rise for ``warmup_steps`` steps, then decay as :math:`1/\sqrt{s}`;
    the peak, at :math:`s = \text{warmup\_steps}`, is
    :math:`d_{model}^{-0.5}\,\text{warmup\_steps}^{-0.5}` (6.99e-4 for 512 and
    4000). The paper counts steps from 1 (step 0 would divide by zero), hence
    :math:`s = t + 1`. The value is the absolute rate: with
    ``torch.optim.lr_scheduler.LambdaLR`` it needs a base lr of 1.
    """

    d_model: int
    warmup_steps: int = 4000
    scale: float = 1.0

    def __post_init__(self):
        check_int(self.d_model, "d_model")
        check_int(self.warmup_steps, "warmup_steps")
        _check(is_number(self.scale) and self.scale > 0, "scale", self.scale, "a finite number > 0")

    def __call__(self, step: int) -> float:
        s = step + 1
        return self.scale * self.d_model**-0.5 * min(s**-0.5, s * self.warmup_steps**-1.5)


@dataclass(frozen=True)
class Warmup:
    r"""Linear warm-up in front of another schedule (or a constant lr):

    .. math::
        \eta_t = \left(f_0 + (1 - f_0)\,\frac{\min(t, W)}{W}\right)\,\eta^{inner}_t

    with ``start_factor`` :math:`f_0` and ``warmup_steps`` :math:`W`: the factor
    rises from :math:`f_0` at step 0 to 1 at step :math:`W` and stays there.
    This is ``torch.optim.lr_scheduler.LinearLR(start_factor, total_iters=W)``
    chained with the inner schedule's scheduler. Unlike ``LinearLR``, a
    ``start_factor`` of 0 is allowed: the closed form does not divide by it.
    """

    schedule: float | Schedule
    warmup_steps: int
    start_factor: float = 1.0 / 3

    def __post_init__(self):
        if not callable(self.schedule):
            _check_lr("schedule", self.schedule)
        check_int(self.warmup_steps, "warmup_steps")
        _check(is_number(self.start_factor) and 0 <= self.start_factor <= 1, "start_factor", self.start_factor,
               "in [0, 1]")

    def __call__(self, step: int) -> float:
        factor = self.start_factor + (1 - self.start_factor) * min(step, self.warmup_steps) / self.warmup_steps
        return factor * lr_at(self.schedule, step)

