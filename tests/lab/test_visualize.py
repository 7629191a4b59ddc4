"""What the ``asyncps visualize`` pictures claim, computed rather than looked at.

Every claim is about the default run: the recipes of ``lab.visualize.surfaces`` for
``DEFAULT_STEPS`` (300) steps. The numbers in the comments were measured with
those recipes; the assertions keep the margins the picture relies on.
"""

import json

import numpy as np
import pytest
import torch

import optim
from lab.visualize.surfaces import BEALE, DEFAULT_STEPS, RECIPES, SADDLE, SURFACES, run, trajectory
from lab.visualize.trajectories import summary

ADAPTIVE = ["adagrad", "adadelta", "rmsprop", "adam", "adamw", "amsgrad", "adamax", "nadam"]


@pytest.fixture(scope="module")
def beale():
    return run(BEALE, list(RECIPES), DEFAULT_STEPS)


@pytest.fixture(scope="module")
def saddle():
    return run(SADDLE, list(RECIPES), DEFAULT_STEPS)


def reached(outcomes) -> set[str]:
    return {key for key, result in outcomes.items() if result.reached_at is not None}


def travel(result, steps: int) -> float:
    """How far from the start the path is after ``steps`` steps."""
    return float(np.hypot(*(result.path[steps] - result.path[0])))


# -- the surfaces themselves -----------------------------------------------------
@pytest.mark.parametrize("surface", SURFACES.values(), ids=list(SURFACES))
def test_analytic_gradient_matches_autograd(surface):
    for point in [surface.start, (0.3, -1.2), (2.5, 0.7), (-1.0, 1.9)]:
        xy = torch.tensor(point, dtype=torch.float64, requires_grad=True)
        surface.f(xy[0], xy[1]).backward()
        assert surface.grad(*point) == pytest.approx(xy.grad.tolist(), rel=1e-12, abs=1e-12)


def test_beale_minimum_is_zero_at_its_optimum():
    assert BEALE.f(*BEALE.optimum) == 0.0
    assert BEALE.grad(*BEALE.optimum) == (0.0, 0.0)


def test_paths_are_the_real_optimizer_steps():
    # Plain SGD on x^2 - y^2 has a closed form: x_t = x0 (1 - 2 lr)^t, y_t = y0 (1 + 2 lr)^t.
    lr = RECIPES["sgd"].hparams["saddle"]["lr"]
    path = trajectory(SADDLE, RECIPES["sgd"], 50)
    t = np.arange(51)
    x0, y0 = SADDLE.start
    np.testing.assert_allclose(path[:, 0], x0 * (1 - 2 * lr) ** t, rtol=1e-12)
    np.testing.assert_allclose(path[:, 1], y0 * (1 + 2 * lr) ** t, rtol=1e-12)


def test_a_path_that_leaves_the_picture_stops_there(saddle):
    # Momentum runs off to |y| ~ 1e10 by step 300 if not stopped; it stops at step 87.
    path = saddle["momentum"].path
    assert len(path) - 1 < DEFAULT_STEPS
    assert SADDLE.contains(path[-2]) and not SADDLE.contains(path[-1])
    assert all(np.isfinite(result.path).all() for result in saddle.values())


# -- Image 6: the saddle ---------------------------------------------------------
def test_plain_sgd_slides_into_the_saddle_and_stays(saddle):
    # Measured: |y| reaches only 0.38 in 300 steps while x shrinks to 0.0023.
    path = saddle["sgd"].path
    assert len(path) - 1 == DEFAULT_STEPS
    assert saddle["sgd"].reached_at is None
    assert abs(path[-1, 0]) < 0.01


def test_every_other_optimizer_escapes_the_saddle(saddle):
    assert reached(saddle) == set(RECIPES) - {"sgd"}


def test_adaptive_methods_escape_before_momentum_and_nag(saddle):
    # Measured escape steps: Adagrad 17, Nadam 17, Adam/AdamW/AMSGrad 20, Adadelta 31,
    # AdaMax 31, RMSprop 54 -- then NAG 67, Momentum 72 ("eventually", as in Ruder).
    slowest_adaptive = max(saddle[key].reached_at for key in ADAPTIVE)
    assert slowest_adaptive < min(saddle["momentum"].reached_at, saddle["nag"].reached_at)


# -- Image 5: Beale's function ---------------------------------------------------
def test_which_optimizers_reach_beales_minimum(beale):
    # Measured steps to within 0.1 of (3, 0.5): NAG 73, Momentum 77, Adam 253,
    # Nadam 261, AMSGrad 264. Not within 300: SGD (0.60 away), Adagrad (0.19),
    # Adadelta (1.73), RMSprop (0.70), AdamW (0.24), AdaMax (0.62).
    assert reached(beale) == {"momentum", "nag", "adam", "amsgrad", "nadam"}


def test_momentum_and_nag_arrive_first_where_sgd_at_their_lr_does_not(beale):
    first = max(beale["momentum"].reached_at, beale["nag"].reached_at)
    others = [result.reached_at for key, result in beale.items() if key not in ("momentum", "nag")]
    assert all(step is None or step > 2 * first for step in others)
    assert beale["sgd"].reached_at is None


def test_momentum_rolls_off_track_and_nag_corrects_sooner(beale):
    # The valley floor is at y ~ 0..0.5; Momentum dips to y = -1.55, NAG to -1.11.
    momentum_low, nag_low = beale["momentum"].path[:, 1].min(), beale["nag"].path[:, 1].min()
    assert momentum_low < nag_low < -1.0


def test_adadelta_is_slowest_to_start(beale, saddle):
    # Distance from the start after 10 steps. Beale: Adadelta 0.05, next RMSprop
    # 0.49. Saddle: Adadelta 0.08, next SGD 0.18 -- yet it escapes at step 31.
    for outcomes in (beale, saddle):
        others = min(travel(result, 10) for key, result in outcomes.items() if key != "adadelta")
        assert travel(outcomes["adadelta"], 10) < others / 2


def test_adamw_weight_decay_holds_it_back_from_adams_minimum(beale):
    # Same lr as Adam; torch's weight_decay=1e-2 leaves it 0.24 away at step 300, Adam 0.06.
    def distance(key):
        return float(np.hypot(*(beale[key].path[-1] - BEALE.optimum)))

    assert distance("adamw") > 2 * distance("adam")


def test_every_optimizer_descends_on_beale(beale):
    # Start loss 41.25; final losses 8e-6 (NAG) .. 0.16 (RMSprop), and 6.35 for Adadelta.
    start_loss = BEALE.f(*BEALE.start)
    assert all(result.loss < start_loss for result in beale.values())
    assert all(result.loss < 0.01 * start_loss for key, result in beale.items() if key != "adadelta")


# -- the text ----------------------------------------------------------------------
def test_summary_names_every_optimizer_and_its_result(saddle):
    text = summary(SADDLE, saddle, DEFAULT_STEPS)
    for key, result in saddle.items():
        row = next(line for line in text.splitlines() if line.split()[0] == RECIPES[key].label)
        assert ("yes, at step" in row) == (result.reached_at is not None)


def test_every_recipe_has_valid_hyperparameters_for_every_surface():
    for recipe in RECIPES.values():
        assert set(recipe.hparams) == set(SURFACES)
        for hparams in recipe.hparams.values():
            optim.create(recipe.optimizer, **hparams)
            json.dumps(hparams)  # they are written to trajectories.json
