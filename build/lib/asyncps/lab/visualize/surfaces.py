"""Two-dimensional test surfaces and every optimizer's path across them.

The two surfaces of Ruder's Images 5 and 6 ("An overview of gradient descent
optimization algorithms", 2016): Beale's function, a long curved valley whose
floor is nearly flat, and the saddle ``z = x^2 - y^2``, where a start on the
ridge ``y ~ 0`` tests whether an optimizer can break the symmetry.

Each surface carries its loss (written with plain arithmetic, so it evaluates
floats, numpy grids and torch tensors alike), its analytic gradient, the start
point every optimizer shares, the goal that decides whether a path succeeded,
and the window it is drawn in. A path is the real ``optim`` optimizer stepping
a 2-element float64 tensor fed that gradient. This module only computes;
``lab.visualize.trajectories`` draws.

Which optimizer wins on a surface depends on the learning rates, and Ruder's
overview does not give the rates of its animations (they are Alec Radford's).
The start points, the goals, the step count and the learning rates below are
our choices, save Adadelta's lr, which keeps torch's 1 (Zeiler's rule has
none); RMSprop's 1e-2 on Beale happens to be torch's default too. Every other
hyperparameter is torch's default, save momentum 0.9 (the value Ruder's
overview quotes) and the switches that make a variant (``nesterov``,
``amsgrad``). ``RECIPES`` says why each rate is what it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from asyncps import optim

Point = tuple[float, float]


@dataclass(frozen=True)
class Surface:
    """A loss ``f(x, y)`` with its gradient, a start point and a goal.

    ``reached(path)`` marks, for each point of an ``(n, 2)`` path, whether the
    goal holds there (near the minimum; off the saddle). ``xlim``/``ylim`` are
    the drawing window; ``log_levels`` asks for log-spaced contours, for losses
    that span several orders of magnitude.
    """

    name: str
    formula: str  # matplotlib mathtext, for the plot title
    f: Callable
    grad: Callable[[float, float], Point]
    start: Point
    optimum: Point | None  # None when the surface is unbounded below
    goal: str  # what ``reached`` means, in words
    reached: Callable[[np.ndarray], np.ndarray]
    xlim: Point
    ylim: Point
    log_levels: bool

    def contains(self, point) -> bool:
        """Whether ``point`` is finite and within one window-width of the window.

        A path that leaves this box has left the picture for good (on the
        saddle it would otherwise run to infinity), so it stops there.
        """
        x, y = point
        width, height = self.xlim[1] - self.xlim[0], self.ylim[1] - self.ylim[0]
        return bool(self.xlim[0] - width <= x <= self.xlim[1] + width
                    and self.ylim[0] - height <= y <= self.ylim[1] + height)


def beale(x, y):
    """Beale's function; its global minimum is 0 at (3, 0.5)."""
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def beale_grad(x: float, y: float) -> Point:
    r1, r2, r3 = 1.5 - x + x * y, 2.25 - x + x * y**2, 2.625 - x + x * y**3
    d_dx = 2 * r1 * (y - 1) + 2 * r2 * (y**2 - 1) + 2 * r3 * (y**3 - 1)
    d_dy = 2 * r1 * x + 4 * r2 * x * y + 6 * r3 * x * y**2
    return d_dx, d_dy


def saddle(x, y):
    """``x^2 - y^2``: a minimum along x, a maximum along y, a saddle point at the origin."""
    return x**2 - y**2


def saddle_grad(x: float, y: float) -> Point:
    return 2 * x, -2 * y


BEALE_TOLERANCE = 0.1
SADDLE_ESCAPE = 1.0

BEALE = Surface(
    "beale", r"Beale: $(1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2$", beale, beale_grad,
    start=(1.0, 1.5), optimum=(3.0, 0.5), goal=f"came within {BEALE_TOLERANCE:g} of (3, 0.5)",
    reached=lambda path: np.hypot(path[:, 0] - 3.0, path[:, 1] - 0.5) < BEALE_TOLERANCE,
    xlim=(-0.5, 4.0), ylim=(-2.0, 2.0), log_levels=True)

SADDLE = Surface(
    "saddle", r"Saddle: $x^2 - y^2$", saddle, saddle_grad,
    # On the ridge but for a nudge: the gradient's y-part, -2y, is a thousand
    # times smaller than its x-part, which is what stalls plain SGD.
    start=(1.0, 1e-3), optimum=None, goal=f"escaped the saddle (|y| > {SADDLE_ESCAPE:g})",
    reached=lambda path: np.abs(path[:, 1]) > SADDLE_ESCAPE, xlim=(-1.5, 1.5), ylim=(-1.5, 1.5), log_levels=False)

SURFACES: dict[str, Surface] = {s.name: s for s in (BEALE, SADDLE)}

# The hyperparameters below are chosen for this many steps (see SGD on the saddle).
DEFAULT_STEPS = 300


@dataclass(frozen=True)
class Recipe:
    """An ``optim`` optimizer and its hyperparameters on each surface (by surface name)."""

    label: str  # the name Ruder's overview uses
    optimizer: str  # an ``optim.OPTIMIZERS`` name
    hparams: dict[str, dict]


def _lr(on_beale: float, on_saddle: float, **hparams) -> dict[str, dict]:
    return {"beale": dict(lr=on_beale, **hparams), "saddle": dict(lr=on_saddle, **hparams)}


# Hyperparameters, per surface: the learning rates are ours (torch's default
# rate only where noted); the rest is torch's default except momentum = 0.9,
# the value Ruder's overview quotes (torch's default is 0), and the switches
# nesterov and amsgrad that make NAG and AMSGrad. Beale starts at (1, 1.5)
# where |g| ~ 100; the saddle starts at (1, 0.001) where g = (2, -0.002).
# - SGD, Momentum and NAG share one lr, so the picture shows what momentum
#   adds. On Beale Momentum diverges from lr = 8e-3 (its first steps meet
#   |g| ~ 100); 3e-3 keeps a margin and its overshoot in view. On the saddle y
#   grows by (1 + 2 lr) per plain SGD step: at 0.01 it needs ~350 steps to
#   reach |y| = 1, more than DEFAULT_STEPS, while momentum's ~10x larger
#   effective step gets out in ~70. (At lr 0.05 plain SGD escapes at step 73.)
# - The Adam family moves about lr per coordinate per step whatever the
#   gradient's scale, so their lr is a distance: 0.1 crosses Beale's valley in a
#   few hundred steps, 0.05 suits the smaller saddle (Adam at torch's default
#   1e-3 would not escape the saddle in 300 steps). They share it, so their
#   differences are the rules' own: AdaMax's denominator max(beta2 u, |g|)
#   remembers the start's |g| ~ 100 for thousands of steps and crawls; AdamW
#   keeps torch's weight_decay=1e-2, whose decoupled pull towards the origin
#   works against its crawl along Beale's flat valley floor.
# - Adagrad's first step is lr per coordinate (g / |g|) and later ones shrink
#   like lr / sqrt(t) as squared gradients pile up; it gets the largest lr
#   whose first step is still a step rather than a jump across the picture.
# - torch's RMSprop has no bias correction: its first steps are up to
#   1 / sqrt(1 - alpha) = 10x lr, so it gets a tenth of Adam's lr on each
#   surface (on Beale, 1e-2 is also torch's default).
# - Adadelta has no learning rate in Zeiler's rule (torch's lr=1, kept). Its
#   first steps are ~sqrt(eps) = 1e-3 (torch's eps=1e-6) and grow only as its
#   accumulated updates do: famously slow to start.
# With these rates Adagrad, Adadelta and RMSprop do not reach Beale's minimum
# in DEFAULT_STEPS, unlike in Ruder's Image 5; with other hyperparameters they
# do (Adagrad at lr 2 by step 124, Adadelta at eps 0.1 by step 47, RMSprop at
# lr 0.1 by step 150). We did not tune them to match the image: tests/lab/test_visualize.py
# pins what these rates show, and what those others do.
RECIPES: dict[str, Recipe] = {
    "sgd": Recipe("SGD", "sgd", _lr(3e-3, 1e-2)),
    "momentum": Recipe("Momentum", "sgd", _lr(3e-3, 1e-2, momentum=0.9)),
    "nag": Recipe("NAG", "sgd", _lr(3e-3, 1e-2, momentum=0.9, nesterov=True)),
    "adagrad": Recipe("Adagrad", "adagrad", _lr(0.5, 0.1)),
    "adadelta": Recipe("Adadelta", "adadelta", _lr(1.0, 1.0)),
    "rmsprop": Recipe("RMSprop", "rmsprop", _lr(1e-2, 5e-3)),
    "adam": Recipe("Adam", "adam", _lr(0.1, 0.05)),
    "adamw": Recipe("AdamW", "adamw", _lr(0.1, 0.05)),
    "amsgrad": Recipe("AMSGrad", "adam", _lr(0.1, 0.05, amsgrad=True)),
    "adamax": Recipe("AdaMax", "adamax", _lr(0.1, 0.05)),
    "nadam": Recipe("Nadam", "nadam", _lr(0.1, 0.05)),
}


def trajectory(surface: Surface, recipe: Recipe, steps: int) -> np.ndarray:
    """The ``(n + 1, 2)`` points visited in ``n <= steps`` steps from the start.

    The path stops early once it leaves the picture for good
    (:meth:`Surface.contains`).
    """
    opt = optim.create(recipe.optimizer, **recipe.hparams[surface.name])
    theta = torch.tensor(surface.start, dtype=torch.float64)
    state = opt.init(theta)
    path = [surface.start]
    for _ in range(steps):
        grad = torch.tensor(surface.grad(*path[-1]), dtype=torch.float64)
        opt.step(theta, grad, state)
        path.append(tuple(theta.tolist()))
        if not surface.contains(path[-1]):
            break
    return np.array(path)


@dataclass(frozen=True)
class Outcome:
    """One optimizer's path on one surface and what became of it."""

    path: np.ndarray
    loss: float  # at the last point
    reached_at: int | None  # first step at which the surface's goal held


def outcome(surface: Surface, path: np.ndarray) -> Outcome:
    hits = np.flatnonzero(surface.reached(path))
    return Outcome(path, float(surface.f(*path[-1])), int(hits[0]) if hits.size else None)


def run(surface: Surface, keys: Sequence[str], steps: int) -> dict[str, Outcome]:
    """Every named optimizer's outcome on ``surface``, by recipe key."""
    return {key: outcome(surface, trajectory(surface, RECIPES[key], steps)) for key in keys}
