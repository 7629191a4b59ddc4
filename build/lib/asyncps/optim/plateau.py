r"""Annealing on a plateau: cut the learning rate when the monitored loss stops improving.

Ruder's overview (Sec. 2) lists "threshold" annealing beside the fixed
schedules: lower the rate once the objective changes by less than a threshold
between evaluations. Unlike a schedule, it cannot be computed from the step
alone, so it comes in two halves:

- ``Plateau`` watches the loss (``update(loss)`` after each evaluation) and
  says what factor of the base rate to use from now on, with the rule of
  ``torch.optim.lr_scheduler.ReduceLROnPlateau`` (mode "min", relative
  threshold): a loss improves on the best so far when
  :math:`v < \text{best}\,(1 - \text{threshold})`; after more than
  ``patience`` evaluations without improvement the rate is multiplied by
  ``factor`` (not below ``min_lr``), then ``cooldown`` evaluations pass
  before counting again.
- ``Scaled`` is the schedule an optimizer holds: its inner schedule times a
  factor that whoever runs the optimizer sets (a shard, told by the evaluator).
"""

from __future__ import annotations

import math

from asyncps.optim.schedules import Schedule, lr_at
from asyncps.optim.validation import check, check_int, is_number

__all__ = ["Plateau", "Scaled"]


class Plateau:
    """The watcher: ``update(loss)`` -> True when the factor changed; ``factor`` the rate's multiplier."""

    def __init__(self, factor: float = 0.1, patience: int = 5, threshold: float = 1e-4, cooldown: int = 0,
                 min_lr: float = 0.0):
        check(is_number(factor) and 0 < factor < 1, "factor", factor, "factor must be a number in (0, 1)")
        check_int(patience, "patience", low=0)
        check(is_number(threshold) and 0 <= threshold < 1, "threshold", threshold, "threshold must be in [0, 1)")
        check_int(cooldown, "cooldown", low=0)
        check(is_number(min_lr) and min_lr >= 0, "min_lr", min_lr, "min_lr must be a number >= 0")
        self.cut, self.patience, self.threshold, self.cooldown, self.min_lr = factor, patience, threshold, cooldown, \
            min_lr
        self.factor = 1.0
        self.best = math.inf
        self.bad = 0
        self.cooling = 0

    def update(self, loss: float, lr: float) -> bool:
        """Record one evaluation's loss, for an optimizer of base rate ``lr``; True when ``factor``
        changed. A NaN loss never improves."""
        loss = float(loss)
        if loss < self.best * (1 - self.threshold):
            self.best, self.bad = loss, 0
        else:
            self.bad += 1
        if self.cooling:
            self.cooling -= 1
            self.bad = 0
        if self.bad <= self.patience:
            return False
        self.bad, self.cooling = 0, self.cooldown
        old = lr * self.factor
        new = max(old * self.cut, self.min_lr)
        if old - new <= 1e-8:  # at min_lr already: torch's eps
            return False
        self.factor = new / lr if lr else self.factor * self.cut
        return True


class Scaled:
    """A schedule (or constant) times ``factor``, which its owner changes: ``lr_at(inner, t) * factor``."""

    def __init__(self, inner: float | Schedule, factor: float = 1.0):
        self.inner = inner
        self.factor = factor

    def __call__(self, step: int) -> float:
        return lr_at(self.inner, step) * self.factor

    def __repr__(self) -> str:
        return f"Scaled({self.inner!r}, factor={self.factor!r})"
