"""Learning-rate schedules against torch.optim.lr_scheduler as the oracle."""

import dataclasses
import math
import pickle
import re

import pytest
import torch
from torch.optim import lr_scheduler

from asyncps.optim.schedules import (
    SGDR,
    Constant,
    CosineAnnealing,
    ExponentialDecay,
    InverseTimeDecay,
    Noam,
    StepDecay,
    Triangular,
    Warmup,
    lr_at,
)

STEPS = 1000


def torch_lrs(make_scheduler, base_lr: float) -> list[float]:
    """The lr torch leaves in ``param_groups`` before each of STEPS updates,
    with ``opt.step(); sched.step()`` alternating as torch prescribes."""
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=base_lr)
    scheduler = make_scheduler(opt)
    lrs = []
    for _ in range(STEPS):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return lrs


def noam_lambda(d_model, warmup_steps, scale):
    # The paper's formula written out independently, step counted from 1.
    return lambda t: scale * d_model**-0.5 * min((t + 1) ** -0.5, (t + 1) * warmup_steps**-1.5)


# (schedule, torch scheduler factory, the optimizer's base lr)
ORACLE = {
    "constant": (Constant(0.1), lambda o: lr_scheduler.LambdaLR(o, lambda t: 1.0), 0.1),
    "step": (StepDecay(0.1, 30, 0.5), lambda o: lr_scheduler.StepLR(o, 30, 0.5), 0.1),
    "step-default-gamma": (StepDecay(0.1, 100), lambda o: lr_scheduler.StepLR(o, 100), 0.1),
    "exponential": (ExponentialDecay(0.1, 0.99), lambda o: lr_scheduler.ExponentialLR(o, 0.99), 0.1),
    "inverse-time": (InverseTimeDecay(0.1, 0.05),
                     lambda o: lr_scheduler.LambdaLR(o, lambda t: 1 / (1 + 0.05 * t)), 0.1),
    "inverse-sqrt-time": (InverseTimeDecay(0.1, 0.05, power=0.5),
                          lambda o: lr_scheduler.LambdaLR(o, lambda t: (1 + 0.05 * t) ** -0.5), 0.1),
    "cosine": (CosineAnnealing(0.1, 1000), lambda o: lr_scheduler.CosineAnnealingLR(o, 1000), 0.1),
    # T_max < STEPS: past T_max torch's cosine climbs back, and so does ours.
    "cosine-eta-min": (CosineAnnealing(0.1, 300, 1e-3), lambda o: lr_scheduler.CosineAnnealingLR(o, 300, 1e-3), 0.1),
    "cosine-short-period": (CosineAnnealing(0.1, 7), lambda o: lr_scheduler.CosineAnnealingLR(o, 7), 0.1),
    "sgdr": (SGDR(0.1, 50), lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, 50), 0.1),
    "sgdr-t-mult-2": (SGDR(0.1, 10, 2, 1e-3),
                      lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, 10, 2, 1e-3), 0.1),
    "sgdr-t-mult-3": (SGDR(0.1, 1, 3), lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, 1, 3), 0.1),
    "triangular": (Triangular(0.01, 0.1, 50),
                   lambda o: lr_scheduler.CyclicLR(o, 0.01, 0.1, 50, cycle_momentum=False), 0.1),
    "triangular-asymmetric": (Triangular(0.0, 0.1, 7, 3),
                              lambda o: lr_scheduler.CyclicLR(o, 0.0, 0.1, 7, 3, cycle_momentum=False), 0.1),
    "noam": (Noam(512), lambda o: lr_scheduler.LambdaLR(o, noam_lambda(512, 4000, 1.0)), 1.0),
    "noam-past-warmup": (Noam(64, 100, scale=2.0), lambda o: lr_scheduler.LambdaLR(o, noam_lambda(64, 100, 2.0)), 1.0),
    "warmup-constant": (Warmup(0.1, 100), lambda o: lr_scheduler.LinearLR(o, 1 / 3, total_iters=100), 0.1),
    "warmup-step": (Warmup(StepDecay(0.1, 100, 0.5), 50, start_factor=0.1),
                    lambda o: lr_scheduler.ChainedScheduler([lr_scheduler.LinearLR(o, 0.1, total_iters=50),
                                                             lr_scheduler.StepLR(o, 100, 0.5)]), 0.1),
    "warmup-exponential": (Warmup(ExponentialDecay(0.1, 0.995), 200, start_factor=0.01),
                           lambda o: lr_scheduler.ChainedScheduler([lr_scheduler.LinearLR(o, 0.01, total_iters=200),
                                                                    lr_scheduler.ExponentialLR(o, 0.995)]), 0.1),
}


@pytest.mark.parametrize("schedule, make_scheduler, base_lr", ORACLE.values(), ids=ORACLE.keys())
def test_agrees_with_torch(schedule, make_scheduler, base_lr):
    expected = torch_lrs(make_scheduler, base_lr)
    ours = [schedule(t) for t in range(STEPS)]
    # We evaluate closed forms; StepLR, ExponentialLR, LinearLR and above all
    # CosineAnnealingLR update the lr recursively, one rounding per step. The
    # worst drift measured over these rows is 3.2e-13 relative (cosine with
    # T_max=7, ~140 half-periods). rel=1e-9 leaves that room yet still catches
    # an off-by-one step, which moves the lr by far more. abs=1e-15 covers
    # rates that reach exactly 0 (cosine minima, a zero base_lr) in one form
    # and a rounding residue in the other.
    assert ours == pytest.approx(expected, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("schedule", [s for s, _, _ in ORACLE.values()], ids=ORACLE.keys())
def test_frozen_and_picklable(schedule):
    copy = pickle.loads(pickle.dumps(schedule))
    assert copy == schedule
    assert [copy(t) for t in (0, 1, 999)] == [schedule(t) for t in (0, 1, 999)]
    field = dataclasses.fields(schedule)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(schedule, field, 1.0)


def test_sgdr_restarts_at_exact_powers_of_t_mult():
    # Restarts of T_0=1, T_mult=3 fall at 0, 1, 4, 13, 40, 121, 364. torch's
    # closed-form path, CosineAnnealingWarmRestarts.step(epoch), finds the period
    # with int(math.log(243, 3)) == 4 and misses the restart at 121.
    sgdr = SGDR(0.1, 1, 3)
    restarts = [(0, 1), (1, 3), (4, 9), (13, 27), (40, 81), (121, 243), (364, 729)]
    for restart, T_i in restarts:
        assert sgdr.period(restart) == (0, T_i)
        assert sgdr(restart) == 0.1
    for restart, T_i in restarts[1:]:
        assert sgdr.period(restart - 1) == (T_i // 3 - 1, T_i // 3)


def test_noam_peaks_at_warmup():
    noam = Noam(512, 4000)
    assert noam(3999) == pytest.approx(512**-0.5 * 4000**-0.5)
    assert noam(3999) == pytest.approx(6.99e-4, abs=5e-7)
    assert noam(3998) < noam(3999) > noam(4000)


def test_triangular_hits_its_bounds():
    cyclic = Triangular(0.01, 0.1, 30, 70)
    assert [cyclic(t) for t in (0, 30, 100, 130, 200)] == [0.01, 0.1, 0.01, 0.1, 0.01]


def test_warmup_may_start_from_zero():
    warmup = Warmup(Constant(0.1), 10, start_factor=0.0)
    assert [warmup(t) for t in (0, 5, 10, 11)] == [0.0, pytest.approx(0.05), 0.1, 0.1]


def test_lr_at_reads_numbers_and_schedules():
    assert lr_at(0.1, 7) == 0.1
    assert lr_at(StepDecay(0.1, 5, 0.5), 7) == 0.05


@pytest.mark.parametrize("lr, message", [
    (-1.0, "Invalid learning rate at step 3: -1.0 (lr must be a finite number >= 0)"),
    (math.inf, "Invalid learning rate at step 3: inf (lr must be a finite number >= 0)"),
    (lambda step: math.nan, "Invalid learning rate at step 3: nan (lr must be a finite number >= 0)"),
    (lambda step: -0.5, "Invalid learning rate at step 3: -0.5 (lr must be a finite number >= 0)"),
])
def test_lr_at_rejects_bad_values(lr, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        lr_at(lr, 3)


def test_lr_at_rejects_non_numbers():
    with pytest.raises(TypeError, match=re.escape("Invalid learning rate: '0.1' (expected a number or a schedule")):
        lr_at("0.1", 0)


INVALID = {
    "constant-lr-negative": (lambda: Constant(-1.0), "Invalid lr: -1.0 (lr must be a finite number >= 0)"),
    "constant-lr-nan": (lambda: Constant(math.nan), "Invalid lr: nan (lr must be a finite number >= 0)"),
    "constant-lr-string": (lambda: Constant("0.1"), "Invalid lr: '0.1' (lr must be a finite number >= 0)"),
    "step-lr": (lambda: StepDecay(-0.1, 10), "Invalid lr: -0.1 (lr must be a finite number >= 0)"),
    "step-size-zero": (lambda: StepDecay(0.1, 0), "Invalid step_size: 0 (step_size must be an integer >= 1)"),
    "step-size-float": (lambda: StepDecay(0.1, 2.5), "Invalid step_size: 2.5 (step_size must be an integer >= 1)"),
    "step-size-bool": (lambda: StepDecay(0.1, True), "Invalid step_size: True (step_size must be an integer >= 1)"),
    "step-gamma-zero": (lambda: StepDecay(0.1, 10, 0.0), "Invalid gamma: 0.0 (gamma must be in (0, 1])"),
    "step-gamma-above-one": (lambda: StepDecay(0.1, 10, 1.5), "Invalid gamma: 1.5 (gamma must be in (0, 1])"),
    "exponential-lr": (lambda: ExponentialDecay(math.inf, 0.9), "Invalid lr: inf (lr must be a finite number >= 0)"),
    "exponential-gamma": (lambda: ExponentialDecay(0.1, -0.5), "Invalid gamma: -0.5 (gamma must be in (0, 1])"),
    "exponential-gamma-nan": (lambda: ExponentialDecay(0.1, math.nan), "Invalid gamma: nan (gamma must be in (0, 1])"),
    "inverse-lr": (lambda: InverseTimeDecay(-1, 0.1), "Invalid lr: -1 (lr must be a finite number >= 0)"),
    "inverse-decay": (lambda: InverseTimeDecay(0.1, -0.1), "Invalid decay: -0.1 (decay must be a finite number >= 0)"),
    "inverse-power": (lambda: InverseTimeDecay(0.1, 0.1, 0.0), "Invalid power: 0.0 (power must be a finite number > 0)"),
    "cosine-lr": (lambda: CosineAnnealing(-0.1, 10), "Invalid lr: -0.1 (lr must be a finite number >= 0)"),
    "cosine-t-max": (lambda: CosineAnnealing(0.1, 0), "Invalid T_max: 0 (T_max must be an integer >= 1)"),
    "cosine-t-max-float": (lambda: CosineAnnealing(0.1, 10.0), "Invalid T_max: 10.0 (T_max must be an integer >= 1)"),
    "cosine-eta-min-negative": (lambda: CosineAnnealing(0.1, 10, -1e-3), "Invalid eta_min: -0.001 (eta_min must be in [0, lr])"),
    "cosine-eta-min-above-lr": (lambda: CosineAnnealing(0.1, 10, 0.2), "Invalid eta_min: 0.2 (eta_min must be in [0, lr])"),
    "sgdr-lr": (lambda: SGDR(math.nan, 10), "Invalid lr: nan (lr must be a finite number >= 0)"),
    "sgdr-t-0": (lambda: SGDR(0.1, 0), "Invalid T_0: 0 (T_0 must be an integer >= 1)"),
    "sgdr-t-0-float": (lambda: SGDR(0.1, 1.5), "Invalid T_0: 1.5 (T_0 must be an integer >= 1)"),
    "sgdr-t-mult": (lambda: SGDR(0.1, 10, 0), "Invalid T_mult: 0 (T_mult must be an integer >= 1)"),
    "sgdr-t-mult-float": (lambda: SGDR(0.1, 10, 1.5), "Invalid T_mult: 1.5 (T_mult must be an integer >= 1)"),
    "sgdr-eta-min": (lambda: SGDR(0.1, 10, 2, 0.5), "Invalid eta_min: 0.5 (eta_min must be in [0, lr])"),
    "triangular-base-lr": (lambda: Triangular(-0.1, 0.1), "Invalid base_lr: -0.1 (base_lr must be a finite number >= 0)"),
    "triangular-max-lr": (lambda: Triangular(0.1, 0.01), "Invalid max_lr: 0.01 (max_lr must be >= base_lr)"),
    "triangular-max-lr-inf": (lambda: Triangular(0.1, math.inf), "Invalid max_lr: inf (max_lr must be >= base_lr)"),
    "triangular-up": (lambda: Triangular(0.01, 0.1, 0), "Invalid step_size_up: 0 (step_size_up must be an integer >= 1)"),
    "triangular-down": (lambda: Triangular(0.01, 0.1, 10, -5),
                        "Invalid step_size_down: -5 (step_size_down must be an integer >= 1)"),
    "noam-d-model": (lambda: Noam(0), "Invalid d_model: 0 (d_model must be an integer >= 1)"),
    "noam-warmup": (lambda: Noam(512, 0), "Invalid warmup_steps: 0 (warmup_steps must be an integer >= 1)"),
    "noam-scale": (lambda: Noam(512, 4000, 0.0), "Invalid scale: 0.0 (scale must be a finite number > 0)"),
    "warmup-schedule": (lambda: Warmup(-0.1, 10), "Invalid schedule: -0.1 (schedule must be a finite number >= 0)"),
    "warmup-steps": (lambda: Warmup(0.1, 0), "Invalid warmup_steps: 0 (warmup_steps must be an integer >= 1)"),
    "warmup-start-negative": (lambda: Warmup(0.1, 10, -0.1), "Invalid start_factor: -0.1 (start_factor must be in [0, 1])"),
    "warmup-start-above-one": (lambda: Warmup(0.1, 10, 1.5), "Invalid start_factor: 1.5 (start_factor must be in [0, 1])"),
}


@pytest.mark.parametrize("make, message", INVALID.values(), ids=INVALID.keys())
def test_invalid_parameters(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()
