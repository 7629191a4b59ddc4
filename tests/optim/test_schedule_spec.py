"""Schedules from config tables (optim.schedule_spec), and the plateau watcher against torch's."""

from __future__ import annotations

import math

import pytest
import torch

from asyncps import optim
from asyncps.optim.schedule_spec import KINDS, from_spec, plateau_of


@pytest.mark.parametrize("spec, expected", [
    ({}, 0.1),
    ({"kind": "constant"}, optim.Constant(0.1)),
    ({"kind": "step", "step_size": 10}, optim.StepDecay(0.1, 10)),
    ({"kind": "exponential", "gamma": 0.9}, optim.ExponentialDecay(0.1, 0.9)),
    ({"kind": "inverse_time", "decay": 0.5, "power": 0.5}, optim.InverseTimeDecay(0.1, 0.5, 0.5)),
    ({"kind": "cosine", "T_max": 50, "eta_min": 0.01}, optim.CosineAnnealing(0.1, 50, 0.01)),
    ({"kind": "sgdr", "T_0": 10, "T_mult": 2}, optim.SGDR(0.1, 10, 2)),
    ({"kind": "triangular", "max_lr": 0.5, "step_size_up": 20}, optim.Triangular(0.1, 0.5, 20)),
    ({"kind": "noam", "d_model": 512, "warmup_steps": 40}, optim.Noam(512, 40, scale=0.1)),
    ({"kind": "step", "step_size": 10, "warmup_steps": 5}, optim.Warmup(optim.StepDecay(0.1, 10), 5)),
    ({"kind": "cosine", "T_max": 9, "warmup_steps": 3, "warmup_start_factor": 0.0},
     optim.Warmup(optim.CosineAnnealing(0.1, 9), 3, 0.0)),
])
def test_each_kind_is_its_schedule_around_the_options_lr(spec, expected):
    assert from_spec(spec, 0.1) == expected


def test_every_kind_of_the_table_is_built():
    assert sorted(KINDS) == ["constant", "cosine", "exponential", "inverse_time", "noam", "plateau", "sgdr", "step",
                             "triangular"]


def test_a_plateau_is_the_constant_rate_times_a_factor_its_owner_sets():
    scaled = from_spec({"kind": "plateau", "factor": 0.5, "warmup_steps": 4}, 0.2)
    assert isinstance(scaled, optim.Scaled) and scaled(0) == pytest.approx(0.2 / 3) and scaled(4) == 0.2
    scaled.factor = 0.25
    assert scaled(10) == 0.05
    assert plateau_of({"kind": "plateau", "factor": 0.5}).cut == 0.5 and plateau_of({"kind": "step"}) is None


@pytest.mark.parametrize("spec, message", [
    ({"step_size": 3}, "Invalid schedule: {'step_size': 3} (name its kind, one of: constant, step, exponential, "
                       "inverse_time, cosine, sgdr, triangular, noam, plateau)"),
    ({"kind": "linear"}, "Invalid schedule kind: 'linear' (choose one of ['constant', 'cosine', 'exponential', "
                         "'inverse_time', 'noam', 'plateau', 'sgdr', 'step', 'triangular'])"),
    ({"kind": "sgdr"}, "Invalid schedule: {'kind': 'sgdr'} (kind 'sgdr' needs T_0)"),
    ({"kind": "step", "step_size": 3, "gama": 0.5},
     "Invalid option for schedule kind 'step': 'gama' (allowed options: ['gamma', 'step_size'])"),
    ({"kind": "step", "step_size": 0}, "Invalid step_size: 0 (step_size must be an integer >= 1)"),
    ({"kind": "step", "step_size": 3, "warmup_start_factor": 0.5},
     "Invalid schedule: {'kind': 'step', 'step_size': 3, 'warmup_start_factor': 0.5} "
     "(warmup_start_factor needs warmup_steps)"),
    ({"kind": "plateau", "factor": 1.5}, "Invalid factor: 1.5 (factor must be a number in (0, 1))"),
    ({"kind": "plateau", "patient": 3},
     "Invalid option for schedule kind 'plateau': 'patient' (allowed options: ['cooldown', 'factor', 'min_lr', "
     "'patience', 'threshold'])"),
])
def test_a_bad_table_says_what_to_fix(spec, message):
    with pytest.raises(ValueError) as refused:
        from_spec(spec, 0.1)
    assert str(refused.value) == message


def test_create_puts_the_lr_or_the_default_lr_on_the_schedule():
    assert optim.create("sgd", schedule={"kind": "exponential", "gamma": 0.5}, lr=0.2).lr == \
        optim.ExponentialDecay(0.2, 0.5)
    assert optim.create("adam", schedule={"kind": "step", "step_size": 7}).lr == optim.StepDecay(1e-3, 7)


def test_a_local_rate_refuses_a_plateau():
    with pytest.raises(ValueError, match="a plateau schedule anneals the server optimizer"):
        optim.local_schedule({"kind": "plateau"}, 0.1)


LOSSES = [1.0, 0.9, 0.95, 0.91, 0.9, 0.899995, 0.8, 0.81, 0.82, 0.83, 0.84, float("nan"), 0.7, 0.71, 0.72, 0.73]


@pytest.mark.parametrize("options", [
    {}, {"factor": 0.5, "patience": 0}, {"factor": 0.5, "patience": 1, "cooldown": 2},
    {"factor": 0.1, "patience": 1, "min_lr": 0.004}, {"factor": 0.5, "patience": 2, "threshold": 0.1},
])
def test_the_plateau_watcher_cuts_as_torchs_reduce_lr_on_plateau(options):
    lr = 0.2
    watcher = optim.Plateau(**options)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    torch_options = {"factor": 0.1, "patience": 5, "threshold": 1e-4, "cooldown": 0, "min_lr": 0.0, **options}
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", threshold_mode="rel", **torch_options)
    for loss in LOSSES:
        before = watcher.factor
        changed = watcher.update(loss, lr)
        scheduler.step(loss)
        assert lr * watcher.factor == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        assert changed == (watcher.factor != before)
    assert not math.isnan(watcher.best)
    assert (watcher.factor < 1) == bool(options)  # every setting but the default cuts on these losses
