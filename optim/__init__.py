"""asyncps's core single-node optimizer library.

Every optimizer of Ruder's overview ("An overview of gradient descent
optimization algorithms", 2016) with ``torch.optim``'s names, defaults and
numbers: ``state = opt.init(param)``, ``opt.step(param, grad, state)`` and
lazy sparse ``opt.step_rows(table, rows, grad_rows, state)`` on torch tensors;
``opt.update(p, g, state)``, the fast kernel unchecked, on flat numpy arrays.
Learning-rate schedules, gradient noise, clipping and early stopping live
beside them.
"""

import inspect

from asyncps.optim.adadelta import Adadelta
from asyncps.optim.adagrad import Adagrad
from asyncps.optim.adam import Adam, AdamW
from asyncps.optim.adamax import Adamax
from asyncps.optim.base import Optimizer, State
from asyncps.optim.early_stopping import EarlyStopping
from asyncps.optim.nadam import NAdam
from asyncps.optim.rmsprop import RMSprop
from asyncps.optim.schedules import (SGDR, Constant, CosineAnnealing, ExponentialDecay, InverseTimeDecay, Noam, Schedule,
                              StepDecay, Triangular, Warmup, lr_at)
from asyncps.optim.plateau import Plateau, Scaled
from asyncps.optim.plugins import Interface, Registry
from asyncps.optim.schedule_spec import from_spec, plateau_of
from asyncps.optim.sgd import SGD
from asyncps.optim.validation import check, check_options, choose
from asyncps.optim.transforms import GradientNoise, clip_by_global_norm, clip_by_value

# A plugin optimizer (``server.optimizer = "mypkg.optim:Lion"``): see optim.base.Optimizer.
OPTIMIZER = Interface("an optim.Optimizer subclass", Optimizer, defines=("name", "reference"), takes=("lr",),
                      call="cls(lr, **hyperparameters)")
OPTIMIZERS: dict[str, type[Optimizer]] = Registry(OPTIMIZER, {
    cls.name: cls for cls in (SGD, Adagrad, Adadelta, RMSprop, Adam, AdamW, Adamax, NAdam)
})


def base_lr(name: str, hparams: dict) -> float:
    """The learning rate ``hparams`` give optimizer ``name`` (its default when they give none)."""
    return _base_lr(choose(OPTIMIZERS, name, "optimizer name"), hparams)


def _base_lr(cls: type, hparams: dict) -> float:
    return hparams.get("lr", inspect.signature(cls).parameters["lr"].default)


def local_schedule(spec: dict, lr: float):
    """A worker-side rate on the schedule ``spec`` (``from_spec``): every kind but plateau,
    whose cuts come from the evaluator to the shards."""
    check(spec.get("kind") != "plateau", "schedule", spec, "a plateau schedule anneals the server optimizer "
          "([server] schedule), which the evaluator's validation loss reaches; a local rate needs a fixed schedule")
    return from_spec(spec, lr)


def create(name: str, schedule: dict | None = None, **hparams) -> Optimizer:
    """An optimizer by its name (``"adam"``, ``"sgd"``, ...) and hyperparameters; ``schedule``, a
    config table (``optim.schedule_spec``), turns its ``lr`` (or its default lr) into a schedule."""
    cls = choose(OPTIMIZERS, name, "optimizer name")
    check_options(cls, hparams, f"optimizer {name!r}")
    if schedule:
        hparams = {**hparams, "lr": from_spec(schedule, _base_lr(cls, hparams))}
    return cls(**hparams)


__all__ = [
    "OPTIMIZERS", "Optimizer", "State", "create", "base_lr", "local_schedule",
    "SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam",
    "Schedule", "lr_at", "Constant", "StepDecay", "ExponentialDecay", "InverseTimeDecay", "CosineAnnealing", "SGDR",
    "Triangular", "Noam", "Warmup", "from_spec", "plateau_of", "Plateau", "Scaled",
    "GradientNoise", "clip_by_global_norm", "clip_by_value", "EarlyStopping",
]
