"""Invalid hyperparameters and inputs: refused at once, with a message that says the fix."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from asyncps import optim
from asyncps.optim.validation import check_int, check_options, is_int

INVALID_HPARAMS = [
    ("sgd", {"lr": -1.0}, r"Invalid learning rate: -1.0 \(lr must be a finite number >= 0"),
    ("adam", {"lr": math.nan}, r"Invalid learning rate: nan"),
    ("adam", {"lr": "0.1"}, r"Invalid learning rate: '0.1'"),
    ("sgd", {"momentum": -0.5}, r"Invalid momentum value: -0.5 \(momentum must be >= 0\)"),
    ("sgd", {"dampening": -0.1}, r"Invalid dampening value: -0.1 \(dampening must be >= 0\)"),
    ("sgd", {"weight_decay": -1e-4}, r"Invalid weight_decay value: -0.0001 \(weight_decay must be >= 0\)"),
    ("sgd", {"nesterov": True}, r"Invalid nesterov: True \(Nesterov momentum requires momentum > 0 and dampening = 0\)"),
    ("sgd", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, r"Invalid nesterov: True"),
    ("adagrad", {"lr_decay": -1.0}, r"Invalid lr_decay value: -1.0 \(lr_decay must be >= 0\)"),
    ("adagrad", {"initial_accumulator_value": -0.1},
     r"Invalid initial_accumulator_value: -0.1 \(initial_accumulator_value must be >= 0\)"),
    ("adagrad", {"eps": -1e-10}, r"Invalid epsilon value: -1e-10 \(eps must be >= 0\)"),
    ("adagrad", {"weight_decay": -1.0}, r"Invalid weight_decay value: -1.0"),
    ("adadelta", {"rho": 1.5}, r"Invalid rho value: 1.5 \(rho must be in \[0.0, 1.0\]\)"),
    ("adadelta", {"eps": -1.0}, r"Invalid epsilon value: -1.0"),
    ("adadelta", {"weight_decay": -1.0}, r"Invalid weight_decay value: -1.0"),
    ("rmsprop", {"alpha": -0.1}, r"Invalid alpha value: -0.1 \(alpha must be in \[0.0, 1.0\]\)"),
    ("rmsprop", {"momentum": -0.1}, r"Invalid momentum value: -0.1"),
    ("rmsprop", {"eps": -1.0}, r"Invalid epsilon value: -1.0"),
    ("rmsprop", {"weight_decay": -1.0}, r"Invalid weight_decay value: -1.0"),
    ("adam", {"betas": (1.0, 0.999)}, r"Invalid beta parameter at index 0: 1.0 \(betas\[0\] must be in \[0.0, 1.0\)\)"),
    ("adam", {"betas": (0.9, -0.1)}, r"Invalid beta parameter at index 1: -0.1"),
    ("adam", {"betas": 0.9}, r"Invalid betas: 0.9 \(betas must be a pair \(beta1, beta2\)\)"),
    ("adam", {"eps": -1e-8}, r"Invalid epsilon value: -1e-08"),
    ("adam", {"weight_decay": -0.1}, r"Invalid weight_decay value: -0.1"),
    ("adamw", {"betas": (0.9, 1.0)}, r"Invalid beta parameter at index 1: 1.0"),
    ("adamw", {"weight_decay": -0.1}, r"Invalid weight_decay value: -0.1"),
    ("adamax", {"betas": (-0.1, 0.9)}, r"Invalid beta parameter at index 0: -0.1"),
    ("adamax", {"eps": -1.0}, r"Invalid epsilon value: -1.0"),
    ("adamax", {"weight_decay": -1.0}, r"Invalid weight_decay value: -1.0"),
    ("nadam", {"momentum_decay": -4e-3}, r"Invalid momentum_decay value: -0.004 \(momentum_decay must be >= 0\)"),
    ("nadam", {"betas": (0.9, 1.5)}, r"Invalid beta parameter at index 1: 1.5"),
    ("nadam", {"eps": -1.0}, r"Invalid epsilon value: -1.0"),
    ("nadam", {"weight_decay": -1.0}, r"Invalid weight_decay value: -1.0"),
]


@pytest.mark.parametrize("name, hparams, message", INVALID_HPARAMS)
def test_invalid_hyperparameter_is_refused_at_construction(name, hparams, message):
    with pytest.raises(ValueError, match=message):
        optim.create(name, **hparams)


def test_every_optimizer_has_validation_rows():
    assert {name for name, _, _ in INVALID_HPARAMS} == set(optim.OPTIMIZERS)


def test_unknown_optimizer_name_lists_the_choices():
    with pytest.raises(ValueError, match=r"Invalid optimizer name: 'adamm' \(choose one of \['adadelta', "):
        optim.create("adamm")


def test_unknown_hyperparameter_is_refused_naming_the_allowed_ones():
    with pytest.raises(ValueError, match=re.escape("Invalid option for optimizer 'sgd': 'betas' (allowed options: "
                                                   "['dampening', 'lr', 'momentum', 'nesterov', 'weight_decay'])")):
        optim.create("sgd", betas=(0.9, 0.99))


def test_schedule_that_goes_negative_is_refused_at_the_step_it_does():
    opt = optim.SGD(lr=lambda step: 0.1 - 0.06 * step)
    param = torch.zeros(2)
    state = opt.init(param)
    opt.step(param, torch.ones(2), state)
    opt.step(param, torch.ones(2), state)
    with pytest.raises(ValueError, match="step 2"):
        opt.step(param, torch.ones(2), state)
    assert state.step == 2


BAD_STEP_INPUT = [
    (torch.zeros(3), torch.zeros(4), ValueError, r"Invalid grad shape: \(4,\) \(param has shape \(3,\)\)"),
    (torch.zeros(3), torch.zeros(3, dtype=torch.float64), ValueError,
     r"Invalid grad dtype: torch.float64 \(param is torch.float32; pass a gradient of the same dtype\)"),
    (torch.zeros(3, dtype=torch.int64), torch.zeros(3, dtype=torch.int64), ValueError,
     r"Invalid param dtype: torch.int64 \(expected torch.float32 or torch.float64\)"),
    (torch.zeros(3), [0.0, 0.0, 0.0], TypeError, r"Invalid grad: expected a torch tensor, got list"),
    (np.zeros(3, dtype=np.float32), torch.zeros(3), TypeError,
     r"Invalid param: expected a torch tensor, got ndarray \(torch.from_numpy\(array\) shares the array's memory\)"),
    (torch.zeros(3), np.zeros(3, dtype=np.float32), TypeError, r"Invalid grad: expected a torch tensor, got ndarray"),
]


@pytest.mark.parametrize("param, grad, error, message", BAD_STEP_INPUT)
def test_bad_step_input_is_refused_and_changes_nothing(param, grad, error, message):
    opt = optim.Adam()
    state = opt.init(torch.zeros(3))
    for step in (opt.step, opt.reference_step):
        with pytest.raises(error, match=message):
            step(param, grad, state)
    assert state.step == 0 and torch.equal(state["exp_avg"], torch.zeros(3))


def test_numpy_arrays_are_refused_by_the_tensor_verbs():
    # update() is the way in for flat numpy arrays; the checked verbs take tensors.
    opt = optim.Adam()
    with pytest.raises(TypeError, match="Invalid param: expected a torch tensor, got ndarray"):
        opt.init(np.zeros(3))
    state = opt.init(torch.zeros(4, 2))
    with pytest.raises(TypeError, match="Invalid out: expected a torch tensor, got ndarray"):
        opt.step(torch.zeros(4, 2), torch.zeros(4, 2), state, out=np.zeros((4, 2), dtype=np.float32))
    with pytest.raises(TypeError, match="Invalid table: expected a torch tensor, got ndarray"):
        opt.step_rows(np.zeros((4, 2), dtype=np.float32), torch.tensor([1]), torch.zeros(1, 2), state)
    with pytest.raises(TypeError, match="Invalid rows: expected a torch tensor, got ndarray"):
        opt.step_rows(torch.zeros(4, 2), np.array([1]), torch.zeros(1, 2), state)
    assert state.step == 0


def test_state_made_for_another_tensor_is_refused():
    opt = optim.Adam()
    state = opt.init(torch.zeros(5))
    with pytest.raises(ValueError, match=r"slot 'exp_avg' has shape \(5,\), param has shape \(3,\)"):
        opt.step(torch.zeros(3), torch.zeros(3), state)


def test_state_of_another_optimizer_is_refused():
    state = optim.SGD().init(torch.zeros(3))
    with pytest.raises(ValueError, match=r"missing slots \['exp_avg', 'exp_avg_sq'\] for adam"):
        optim.Adam().step(torch.zeros(3), torch.zeros(3), state)


def test_malformed_state_dict_is_refused():
    with pytest.raises(ValueError, match=r"Invalid state dict: keys \['exp_avg'\]"):
        optim.State.from_state_dict({"exp_avg": torch.zeros(2)})


# -- the shared checks: one rule for "an integer >= k", one for an unknown option ------------------
@pytest.mark.parametrize("value, low, ok", [
    (1, 1, True), (0, 0, True), (np.int64(3), 1, True), (0, 1, False), (-1, 0, False),
    (2.0, 1, False), ("2", 1, False), (None, 0, False), (True, 1, False), (False, 0, False),
])
def test_is_int_refuses_bools_and_floats(value, low, ok):
    assert is_int(value, low) == ok


@pytest.mark.parametrize("value, low, message", [
    (0, 1, "Invalid steps: 0 (steps must be an integer >= 1)"),
    (True, 1, "Invalid steps: True (steps must be an integer >= 1)"),
    (-1, 0, "Invalid steps: -1 (steps must be an integer >= 0)"),
])
def test_check_int_says_the_bound(value, low, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_int(value, "steps", low=low)


def test_check_options_takes_any_keyword_parameter_but_the_factorys_own():
    def factory(given, lr=0.1, *, momentum=0.0):
        pass

    check_options(factory, {"lr": 1.0, "momentum": 0.9}, "factory", skip=("given",))
    with pytest.raises(ValueError, match=re.escape(
            "Invalid option for factory: 'given' (allowed options: ['lr', 'momentum'])")):
        check_options(factory, {"given": 1}, "factory", skip=("given",))
