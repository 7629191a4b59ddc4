"""The table every generic optimizer test runs over: one row per configuration.

A new optimizer, or a new hyperparameter worth checking, is one new row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from asyncps.optim.schedules import CosineAnnealing, ExponentialDecay, StepDecay


@dataclass(frozen=True)
class Case:
    name: str  # optim.create name
    hparams: dict = field(default_factory=dict)
    torch_cls: type = None
    # The torch scheduler that reproduces hparams["lr"] when it is a schedule.
    torch_scheduler: tuple | None = None

    @property
    def id(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in self.hparams.items() if k != "lr" or not callable(v))
        sched = type(self.hparams["lr"]).__name__ if callable(self.hparams.get("lr")) else ""
        return f"{self.name}({args}{',' if args and sched else ''}{sched})"

    def torch_optimizer(self, param: torch.Tensor):
        hparams = dict(self.hparams)
        if callable(hparams.get("lr")):
            hparams["lr"] = hparams["lr"](0)
        opt = self.torch_cls([param], foreach=False, **hparams)
        scheduler = None
        if self.torch_scheduler is not None:
            cls, kwargs = self.torch_scheduler
            scheduler = cls(opt, **kwargs)
        return opt, scheduler


O = torch.optim
S = torch.optim.lr_scheduler

CASES = [
    Case("sgd", {"lr": 0.05}, O.SGD),
    Case("sgd", {"lr": 0.05, "momentum": 0.9}, O.SGD),
    Case("sgd", {"lr": 0.02, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2}, O.SGD),
    Case("sgd", {"lr": 0.05, "momentum": 0.8, "dampening": 0.3}, O.SGD),
    Case("sgd", {"lr": StepDecay(0.1, step_size=50, gamma=0.5), "momentum": 0.9}, O.SGD,
         (S.StepLR, {"step_size": 50, "gamma": 0.5})),
    Case("adagrad", {}, O.Adagrad),
    Case("adagrad", {"lr": 0.1, "lr_decay": 1e-3, "weight_decay": 1e-2, "initial_accumulator_value": 0.1,
                     "eps": 1e-8}, O.Adagrad),
    Case("adadelta", {}, O.Adadelta),
    Case("adadelta", {"lr": 0.5, "rho": 0.95, "eps": 1e-5, "weight_decay": 1e-2}, O.Adadelta),
    Case("rmsprop", {}, O.RMSprop),
    Case("rmsprop", {"centered": True}, O.RMSprop),
    Case("rmsprop", {"lr": 1e-3, "momentum": 0.9, "centered": True, "alpha": 0.9, "weight_decay": 1e-2}, O.RMSprop),
    Case("rmsprop", {"lr": 1e-3, "momentum": 0.5, "alpha": 0.3}, O.RMSprop),
    Case("adam", {}, O.Adam),
    Case("adam", {"amsgrad": True, "weight_decay": 1e-2, "betas": (0.8, 0.99)}, O.Adam),
    Case("adam", {"betas": (0.3, 0.9), "eps": 1e-6}, O.Adam),
    Case("adam", {"lr": ExponentialDecay(1e-2, gamma=0.99)}, O.Adam, (S.ExponentialLR, {"gamma": 0.99})),
    Case("adamw", {}, O.AdamW),
    Case("adamw", {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.1}, O.AdamW),
    Case("adamw", {"lr": CosineAnnealing(1e-2, T_max=100, eta_min=1e-4)}, O.AdamW,
         (S.CosineAnnealingLR, {"T_max": 100, "eta_min": 1e-4})),
    Case("adamax", {}, O.Adamax),
    Case("adamax", {"weight_decay": 1e-2, "betas": (0.4, 0.99)}, O.Adamax),
    Case("nadam", {}, O.NAdam),
    Case("nadam", {"weight_decay": 1e-2, "momentum_decay": 8e-3}, O.NAdam),
    Case("nadam", {"weight_decay": 1e-2, "decoupled_weight_decay": True}, O.NAdam),
]

NAMES = sorted({case.name for case in CASES})
