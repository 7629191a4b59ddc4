"""A learning-rate schedule from a config table: ``{kind = "sgdr", T_0 = 100}`` -> a ``Schedule``.

``from_spec(spec, lr)`` builds what an experiment's ``schedule`` table names,
around the optimizer's own ``lr``:

=============  ==========================================  ======================================
kind           the schedule                                 its keys (``lr`` is the options' lr)
=============  ==========================================  ======================================
constant       ``Constant``: lr at every step               (none)
step           ``StepDecay``                                step_size, gamma = 0.1
exponential    ``ExponentialDecay``                         gamma
inverse_time   ``InverseTimeDecay`` (1/t annealing)         decay, power = 1
cosine         ``CosineAnnealing``                          T_max, eta_min = 0
sgdr           ``SGDR`` (warm restarts)                     T_0, T_mult = 1, eta_min = 0
triangular     ``Triangular`` (cyclical, base_lr = lr)      max_lr, step_size_up = 2000, step_size_down
noam           ``Noam`` (the Transformer's, scale = lr)     d_model, warmup_steps = 4000
plateau        lr, times ``factor`` each time the           factor = 0.1, patience = 5, threshold = 1e-4,
               validation loss stops improving              cooldown = 0, min_lr = 0
=============  ==========================================  ======================================

Any kind but noam (whose own ``warmup_steps`` is its rise) takes
``warmup_steps`` (and ``warmup_start_factor``, default 1/3): a linear warm-up
in front of it (``Warmup``). ``{}`` is no schedule: the constant lr.
Steps count the optimizer's updates: a shard's for the server optimizer, a
worker's local steps for a local one.
"""

from __future__ import annotations

import inspect

from asyncps.optim.plateau import Plateau, Scaled
from asyncps.optim.schedules import (SGDR, Constant, CosineAnnealing, ExponentialDecay, InverseTimeDecay, Noam, Schedule,
                              StepDecay, Triangular, Warmup)
from asyncps.optim.validation import check, check_options, choose

__all__ = ["KINDS", "from_spec", "plateau_of"]

# kind -> (the schedule, the name it gives the options' lr)
KINDS: dict[str, tuple[type, str]] = {
    "constant": (Constant, "lr"), "step": (StepDecay, "lr"), "exponential": (ExponentialDecay, "lr"),
    "inverse_time": (InverseTimeDecay, "lr"), "cosine": (CosineAnnealing, "lr"), "sgdr": (SGDR, "lr"),
    "triangular": (Triangular, "base_lr"), "noam": (Noam, "scale"), "plateau": (Constant, "lr"),
}
WARMUP_KEYS = {"warmup_steps": "warmup_steps", "warmup_start_factor": "start_factor"}


def from_spec(spec: dict, lr: float) -> float | Schedule:
    """The schedule ``spec`` names, at base rate ``lr``; ``lr`` itself for ``{}``. A plateau schedule
    is a ``Scaled`` constant (whoever watches the validation loss sets its factor; see ``plateau_of``)."""
    check(isinstance(spec, dict), "schedule", spec, 'a schedule is a table, e.g. {kind = "step", step_size = 100}')
    if not spec:
        return lr
    check("kind" in spec, "schedule", spec, f"name its kind, one of: {', '.join(KINDS)}")
    kind = spec["kind"]
    cls, lr_name = choose(KINDS, kind, "schedule kind")
    options = {k: v for k, v in spec.items() if k != "kind" and (k not in WARMUP_KEYS or kind == "noam")}
    if kind == "plateau":
        check_options(Plateau, options, "schedule kind 'plateau'")
        Plateau(**options)  # its keys are the watcher's: checked here, used by plateau_of
        options = {}
    check_options(cls, options, f"schedule kind {kind!r}", skip=(lr_name,))
    needed = [name for name, p in inspect.signature(cls).parameters.items()
              if p.default is inspect.Parameter.empty and name != lr_name and name not in options]
    check(not needed, "schedule", spec, f"kind {kind!r} needs {', '.join(needed)}")
    schedule = cls(**{lr_name: lr}, **options)
    warmup = {WARMUP_KEYS[k]: v for k, v in spec.items() if k in WARMUP_KEYS and kind != "noam"}
    if warmup:
        check("warmup_steps" in warmup, "schedule", spec, "warmup_start_factor needs warmup_steps")
        schedule = Warmup(schedule, **warmup)
    return Scaled(schedule) if kind == "plateau" else schedule


def plateau_of(spec: dict) -> Plateau | None:
    """The watcher of a plateau schedule (None for any other kind): it says when to cut the rate."""
    if spec.get("kind") != "plateau":
        return None
    return Plateau(**{k: v for k, v in spec.items() if k != "kind" and k not in WARMUP_KEYS})
