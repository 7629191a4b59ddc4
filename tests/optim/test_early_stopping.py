"""Early stopping: improvement rule, patience, min_delta, NaN, state."""

import math
import re

import numpy as np
import pytest
import torch

from asyncps.optim.early_stopping import EarlyStopping

# (constructor kwargs, values fed one per update, the update's return values)
SEQUENCES = {
    "min-improving": ({"patience": 2}, [5.0, 4.0, 3.0, 2.0], [False, False, False, False]),
    "min-plateau": ({"patience": 2}, [5.0, 4.0, 4.0, 4.5], [False, False, False, True]),
    "min-recovers": ({"patience": 2}, [5.0, 6.0, 4.0, 6.0, 6.0], [False, False, False, False, True]),
    "max-improving": ({"patience": 2, "mode": "max"}, [0.1, 0.2, 0.3], [False, False, False]),
    "max-plateau": ({"patience": 2, "mode": "max"}, [0.5, 0.4, 0.5], [False, False, True]),
    # Gains smaller than min_delta=0.1 do not count.
    "min-delta": ({"patience": 2, "min_delta": 0.1}, [1.0, 0.95, 0.92, 0.7], [False, False, True, False]),
    "max-delta": ({"patience": 2, "min_delta": 0.1, "mode": "max"}, [0.5, 0.55, 0.58, 0.7], [False, False, True, False]),
    "nan-is-not-improving": ({"patience": 2}, [1.0, math.nan, math.nan], [False, False, True]),
    "nan-first": ({"patience": 3}, [math.nan, 2.0], [False, False]),
    "patience-zero": ({"patience": 0}, [1.0, 0.5, 0.5], [False, False, True]),
}


@pytest.mark.parametrize("kwargs, values, stops", SEQUENCES.values(), ids=SEQUENCES.keys())
def test_stops_after_patience_updates_without_improvement(kwargs, values, stops):
    stopper = EarlyStopping(**kwargs)
    assert [stopper.update(v) for v in values] == stops


def test_tracks_best_and_when():
    stopper = EarlyStopping(patience=5, mode="max")
    for accuracy in [0.5, 0.7, 0.6, math.nan, 0.65]:
        stopper.update(accuracy)
    assert (stopper.best, stopper.best_step, stopper.bad_steps, stopper.steps) == (0.7, 1, 3, 5)


def test_nan_never_becomes_best():
    stopper = EarlyStopping()
    stopper.update(math.nan)
    assert (stopper.best, stopper.best_step, stopper.bad_steps) == (math.inf, None, 1)
    stopper.update(3.0)
    assert (stopper.best, stopper.best_step, stopper.bad_steps) == (3.0, 1, 0)


def test_accepts_numpy_and_torch_scalars():
    stopper = EarlyStopping()
    stopper.update(np.float32(2.0))
    stopper.update(torch.tensor(1.0))
    assert stopper.best == 1.0 and isinstance(stopper.best, float)


def test_state_round_trip_resumes_the_same_decisions():
    values = [3.0, 2.0, 2.5, 2.4, 1.0, 1.5, 1.6, 1.7]
    original = EarlyStopping(patience=3, min_delta=0.05)
    for v in values[:4]:
        original.update(v)
    resumed = EarlyStopping(patience=3, min_delta=0.05)
    resumed.load_state_dict(original.state_dict())
    assert resumed.state_dict() == original.state_dict()
    assert [resumed.update(v) for v in values[4:]] == [original.update(v) for v in values[4:]]


def test_load_state_dict_rejects_other_keys():
    with pytest.raises(ValueError, match=re.escape(
            "Invalid state dict: keys ['best'] (expected ['bad_steps', 'best', 'best_step', 'steps'])")):
        EarlyStopping().load_state_dict({"best": 1.0})


INVALID = {
    "patience-negative": ({"patience": -1}, "Invalid patience: -1 (patience must be an integer >= 0)"),
    "patience-float": ({"patience": 2.5}, "Invalid patience: 2.5 (patience must be an integer >= 0)"),
    "patience-bool": ({"patience": False}, "Invalid patience: False (patience must be an integer >= 0)"),
    "min-delta-negative": ({"min_delta": -0.1}, "Invalid min_delta: -0.1 (min_delta must be a finite number >= 0)"),
    "min-delta-nan": ({"min_delta": math.nan}, "Invalid min_delta: nan (min_delta must be a finite number >= 0)"),
    "mode": ({"mode": "mean"}, "Invalid mode: 'mean' (mode must be 'min' or 'max')"),
}


@pytest.mark.parametrize("kwargs, message", INVALID.values(), ids=INVALID.keys())
def test_invalid_parameters(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        EarlyStopping(**kwargs)
