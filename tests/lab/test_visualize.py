"""What the ``asyncps visualize`` pictures claim, computed rather than looked at.

The claims are those of ``asyncps visualize --help``, the docstring of
``lab.visualize.trajectories`` and the README's section on it, and these tests
check each as stated there, step numbers included. Most are about the default
run: the recipes of ``lab.visualize.surfaces`` for ``DEFAULT_STEPS`` (300)
steps. The others say how much the outcome depends on the learning rates, which
are ours: what other rates do.
"""

import inspect
import json

import numpy as np
import pytest
import torch

from asyncps import optim
from asyncps.lab.visualize.surfaces import (BEALE, DEFAULT_STEPS, RECIPES, SADDLE, SADDLE_ESCAPE, SURFACES, Recipe, outcome,
                                    run, trajectory)
from asyncps.lab.visualize.trajectories import summary

ADAPTIVE = ["adagrad", "adadelta", "rmsprop", "adam", "adamw", "amsgrad", "adamax", "nadam"]
# The three adaptive methods of Ruder's Images 5 and 6.
RUDERS_ADAPTIVE = ["adagrad", "adadelta", "rmsprop"]


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


def reached_at(surface, optimizer: str, steps: int = DEFAULT_STEPS, **hparams) -> int | None:
    """The step at which ``optimizer`` with ``hparams`` first meets the surface's goal, if it does."""
    recipe = Recipe(optimizer, optimizer, {surface.name: hparams})
    return outcome(surface, trajectory(surface, recipe, steps)).reached_at


def test_the_claims_are_about_300_steps():
    assert DEFAULT_STEPS == 300


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


# -- the saddle: as in Ruder's Image 6, with these rates ----------------------------
def test_plain_sgd_slides_into_the_saddle_and_stays(saddle):
    # |y| reaches only 0.38 in 300 steps while x shrinks to 0.0023.
    path = saddle["sgd"].path
    assert len(path) - 1 == DEFAULT_STEPS
    assert saddle["sgd"].reached_at is None
    assert round(abs(path[-1, 1]), 2) == 0.38
    assert abs(path[-1, 0]) < 0.01


def test_every_other_optimizer_escapes_the_saddle(saddle):
    assert reached(saddle) == set(RECIPES) - {"sgd"}


def test_adaptive_methods_escape_before_momentum_and_nag(saddle):
    # Escape steps: Adagrad 17, Nadam 17, Adam/AdamW/AMSGrad 20, Adadelta 31,
    # AdaMax 31, RMSprop 54 -- then NAG 67, Momentum 72 ("eventually", as in Ruder).
    escapes = {key: result.reached_at for key, result in saddle.items()}
    slowest_adaptive = max(escapes[key] for key in ADAPTIVE)
    assert slowest_adaptive < min(escapes["momentum"], escapes["nag"])
    assert (escapes["momentum"], escapes["nag"]) == (72, 67)
    assert escapes["adagrad"] == escapes["nadam"] == min(escapes[key] for key in ADAPTIVE) == 17
    assert escapes["rmsprop"] == slowest_adaptive == 54


def test_the_saddles_outcome_depends_on_the_rates_too():
    assert reached_at(SADDLE, "sgd", lr=0.05) == 73  # ours is 0.01, and it does not escape
    assert reached_at(SADDLE, "adam", lr=1e-3) is None  # torch's default; ours is 0.05, out at step 20


# -- Beale's function: unlike Ruder's Image 5, with these rates ----------------------
def distance_to_optimum(result) -> float:
    return float(np.hypot(*(result.path[-1] - BEALE.optimum)))


def test_which_optimizers_reach_beales_minimum(beale):
    # Steps to within 0.1 of (3, 0.5): NAG 73, Momentum 77, Adam 253,
    # Nadam 261, AMSGrad 264. Not within 300: SGD (0.60 away), Adagrad (0.19),
    # Adadelta (1.73), RMSprop (0.70), AdamW (0.24), AdaMax (0.62).
    assert reached(beale) == {"momentum", "nag", "adam", "amsgrad", "nadam"}


def test_momentum_and_nag_arrive_first_where_sgd_at_their_lr_does_not(beale):
    assert (beale["momentum"].reached_at, beale["nag"].reached_at) == (77, 73)
    first = max(beale["momentum"].reached_at, beale["nag"].reached_at)
    others = {key: result.reached_at for key, result in beale.items() if key not in ("momentum", "nag")}
    assert all(step is None or step > 2 * first for step in others.values())
    assert min(step for step in others.values() if step is not None) == others["adam"] == 253
    assert beale["sgd"].reached_at is None


def test_ruders_adaptive_methods_do_not_reach_beales_minimum_in_300_steps(beale):
    # In Image 5 they converge quickly; with our rates they do not arrive in time.
    assert [beale[key].reached_at for key in RUDERS_ADAPTIVE] == [None, None, None]
    assert [round(distance_to_optimum(beale[key]), 2) for key in RUDERS_ADAPTIVE] == [0.19, 1.73, 0.70]
    longer = run(BEALE, RUDERS_ADAPTIVE, 3000)
    assert [longer[key].reached_at for key in RUDERS_ADAPTIVE] == [454, None, 670]


def test_with_other_hyperparameters_ruders_adaptive_methods_arrive(beale):
    # Which optimizer wins Beale is a choice of hyperparameters: these reach the
    # minimum in 300 steps, Adadelta before NAG does with ours.
    assert reached_at(BEALE, "adadelta", lr=1.0, eps=0.1) == 47 < beale["nag"].reached_at
    assert reached_at(BEALE, "adagrad", lr=2.0) == 124
    assert reached_at(BEALE, "rmsprop", lr=0.1) == 150


def test_momentum_diverges_on_beale_from_lr_8e_3_above_the_shared_rate():
    assert RECIPES["momentum"].hparams["beale"]["lr"] < 8e-3
    hparams = {**RECIPES["momentum"].hparams["beale"], "lr": 8e-3}
    path = trajectory(BEALE, Recipe("Momentum", "sgd", {"beale": hparams}), DEFAULT_STEPS)
    assert len(path) - 1 < 20 and not BEALE.contains(path[-1])


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
    assert distance_to_optimum(beale["adamw"]) > 2 * distance_to_optimum(beale["adam"])


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


# -- where the hyperparameters come from -------------------------------------------
TORCH_OPTIMIZERS = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta,
                    "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
                    "adamax": torch.optim.Adamax, "nadam": torch.optim.NAdam}


def defaults(cls) -> dict:
    return {name: p.default for name, p in inspect.signature(cls).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_what_the_recipes_leave_unset_is_torchs_default():
    for recipe in RECIPES.values():
        ours, torchs = defaults(optim.OPTIMIZERS[recipe.optimizer]), defaults(TORCH_OPTIMIZERS[recipe.optimizer])
        assert {name: torchs[name] for name in ours} == ours


def test_first_steps_that_set_adagrads_and_rmsprops_rates(beale):
    # Adagrad's first step is lr in each coordinate; torch's RMSprop's, without bias
    # correction, is lr / sqrt(1 - alpha) = 10 lr in each.
    for key, factor in [("adagrad", 1.0), ("rmsprop", 10.0)]:
        first_step = np.abs(beale[key].path[1] - beale[key].path[0])
        np.testing.assert_allclose(first_step, factor * RECIPES[key].hparams["beale"]["lr"], rtol=1e-6)


def test_plain_sgd_would_need_about_350_steps_to_escape_the_saddle():
    # y grows by (1 + 2 lr) a step from 0.001 to 1 (the closed form is checked above).
    lr = RECIPES["sgd"].hparams["saddle"]["lr"]
    assert np.log(SADDLE_ESCAPE / SADDLE.start[1]) / np.log(1 + 2 * lr) == pytest.approx(350, abs=2)


def test_the_recipes_set_only_rates_momentum_and_variant_switches():
    # As the README's table says: every lr is ours but Adadelta's and RMSprop's on
    # Beale, which are torch's; momentum 0.9 is ours; nesterov and amsgrad make variants.
    torchs_own = set()
    for key, recipe in RECIPES.items():
        for surface, hparams in recipe.hparams.items():
            assert set(hparams) <= {"lr", "momentum", "nesterov", "amsgrad"}
            torch_defaults = defaults(TORCH_OPTIMIZERS[recipe.optimizer])
            torchs_own |= {(key, surface, name) for name, value in hparams.items() if torch_defaults[name] == value}
    assert torchs_own == {("adadelta", "beale", "lr"), ("adadelta", "saddle", "lr"), ("rmsprop", "beale", "lr")}
