"""Early stopping on a monitored metric (validation loss, accuracy, ...)."""

from __future__ import annotations

import math

from asyncps.optim.validation import check, check_int, is_number

__all__ = ["EarlyStopping"]


class EarlyStopping:
    r"""Stop when the metric has not improved for ``patience`` consecutive updates.

    A value improves on the best so far when

    .. math::
        v < \text{best} - \text{min\_delta} \ (\text{mode "min"}), \qquad
        v > \text{best} + \text{min\_delta} \ (\text{mode "max"}),

    the rule of Keras' and Lightning's ``EarlyStopping``. NaN never improves
    (a diverged run must not look like a plateau that resets the count).

    Attributes: ``best`` (the best value, ±inf before the first improvement),
    ``best_step`` (the index of the ``update`` call that produced it, ``None``
    before), ``bad_steps`` (updates since the last improvement) and ``steps``
    (updates seen).
    """

    def __init__(self, patience: int = 10, min_delta: float = 0.0, mode: str = "min"):
        check_int(patience, "patience", low=0)
        check(is_number(min_delta) and min_delta >= 0, "min_delta", min_delta, "min_delta must be a finite number >= 0")
        check(mode in ("min", "max"), "mode", mode, "mode must be 'min' or 'max'")
        self.patience = patience
        self.min_delta = min_delta
        self.mode = mode
        self.best = math.inf if mode == "min" else -math.inf
        self.best_step: int | None = None
        self.bad_steps = 0
        self.steps = 0

    def improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value: float) -> bool:
        """Record one value of the metric; True when training should stop."""
        value = float(value)
        step = self.steps
        self.steps += 1
        if self.improves(value):
            self.best = value
            self.best_step = step
            self.bad_steps = 0
            return False
        self.bad_steps += 1
        return self.bad_steps >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "bad_steps": self.bad_steps, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        expected = {"best", "best_step", "bad_steps", "steps"}
        if set(state) != expected:
            raise ValueError(f"Invalid state dict: keys {sorted(state)} (expected {sorted(expected)})")
        self.best = float(state["best"])
        self.best_step = state["best_step"]
        self.bad_steps = int(state["bad_steps"])
        self.steps = int(state["steps"])
