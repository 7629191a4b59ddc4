"""Every optimizer against torch.optim, the numerical oracle, from one table."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

from asyncps import optim
from asyncps.optim import State
from asyncps.optim.schedules import CosineAnnealing

from cases import CASES, NAMES

STEPS = 300
SHAPES = [(7,), (5, 3), (2, 3, 4)]
# Relative agreement asked of every optimizer: max |ours - torch| / max |torch|.
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


def relative_error(ours: torch.Tensor, oracle: torch.Tensor) -> float:
    return ((ours - oracle).abs().max() / oracle.abs().max()).item()


def gradient_stream(shape, dtype, seed=0, steps=STEPS):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=dtype) for _ in range(steps)]


@pytest.fixture
def default_dtype():
    """torch keeps NAdam's mu_product in the default dtype; set it to the
    parameter's so the float64 oracle is float64 throughout."""
    saved = torch.get_default_dtype()
    yield torch.set_default_dtype
    torch.set_default_dtype(saved)


def test_the_table_has_a_row_for_every_registered_optimizer():
    # A new optimizer is one new row in cases.CASES: registering one without it fails here.
    assert set(NAMES) == set(optim.OPTIMIZERS)
    for case in CASES:
        assert isinstance(optim.create(case.name, **case.hparams), optim.OPTIMIZERS[case.name])
        assert issubclass(case.torch_cls, torch.optim.Optimizer), case.id


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kernel", ["fast", "reference"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_matches_torch(case, kernel, shape, dtype, default_dtype):
    default_dtype(dtype)
    p0 = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    ours, theirs = p0.clone(), p0.clone().requires_grad_()
    opt = optim.create(case.name, **case.hparams)
    state = opt.init(ours)
    step = opt.step if kernel == "fast" else opt.reference_step
    torch_opt, scheduler = case.torch_optimizer(theirs)
    for g in gradient_stream(shape, dtype):
        g = g + 0.1 * ours  # a gradient that depends on where we are, like a real loss
        step(ours, g, state)
        theirs.grad = g.clone()
        torch_opt.step()
        if scheduler is not None:
            scheduler.step()
    assert state.step == STEPS
    if kernel == "reference" and (case.id, dtype) not in LAST_BITS_DIFFER:
        assert torch.equal(ours, theirs.detach())  # torch's order of operations: bit for bit
    else:
        assert relative_error(ours, theirs.detach()) <= TOLERANCE[dtype]


# Where the reference kernel rounds differently from torch in the last bits
# (as the README's optim section says): NAdam's momentum schedule in float32, and a
# learning rate a schedule computes in Python floats, in float64.
LAST_BITS_DIFFER = {("nadam(weight_decay=0.01,momentum_decay=0.008)", torch.float32),
                    ("adam(ExponentialDecay)", torch.float64), ("adamw(CosineAnnealing)", torch.float64)}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_non_contiguous_param_takes_reference_kernel_and_matches(case):
    table = torch.randn(6, 4, dtype=torch.float64)
    ours = table.t()  # a strided view: the fast kernel cannot walk it
    expected = ours.contiguous()
    opt = optim.create(case.name, **case.hparams)
    s_view, s_copy = opt.init(ours), opt.init(expected)
    for g in gradient_stream(ours.shape, torch.float64, steps=20):
        opt.step(ours, g, s_view)
        opt.step(expected, g, s_copy)
    assert relative_error(ours, expected) <= 1e-12
    assert relative_error(table.t(), expected) <= 1e-12  # the update went through the view


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_fast_kernel_equals_reference(case, dtype):
    shape = (1000,)
    p_fast = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    p_ref = p_fast.clone()
    opt = optim.create(case.name, **case.hparams)
    s_fast, s_ref = opt.init(p_fast), opt.init(p_ref)
    for g in gradient_stream(shape, dtype, steps=50):
        opt.step(p_fast, g, s_fast)
        opt.reference_step(p_ref, g, s_ref)
    tol = {torch.float32: 1e-6, torch.float64: 1e-13}[dtype]
    assert relative_error(p_fast, p_ref) <= tol
    for slot in opt.slots:
        assert relative_error(s_fast[slot], s_ref[slot]) <= tol, slot


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_update_on_flat_numpy_arrays_equals_step(case):
    # A shard updates flat numpy views of its buffers with update(), the fast
    # kernel unchecked: in place, or into a spare buffer it then publishes.
    opt = optim.create(case.name, **case.hparams)
    param = torch.randn(24, dtype=torch.float32)
    values, spare = param.numpy().copy(), np.empty(24, dtype=np.float32)
    s_step, s_update = opt.init(param), opt.init(torch.from_numpy(values))
    for t, g in enumerate(gradient_stream((24,), torch.float32, steps=10)):
        opt.step(param, g, s_step)
        if t % 2:
            opt.update(values, g.numpy(), s_update, spare)
            values, spare = spare, values
        else:
            opt.update(values, g.numpy(), s_update)
    np.testing.assert_array_equal(values, param.numpy())
    assert s_update.step == s_step.step
    for slot, tensor in s_step.tensors.items():
        assert torch.equal(s_update[slot], tensor), slot


@pytest.mark.parametrize("name", NAMES)
def test_lr_scale_scales_the_learning_rate(name):
    """``update(..., lr_scale=s)`` is the update at ``s`` times the rate (a
    staleness-aware server divides it by the push's staleness)."""
    scaled, at_half = optim.create(name, lr=0.1), optim.create(name, lr=0.05)
    p_scaled = np.random.default_rng(0).standard_normal(16)
    p_half = p_scaled.copy()
    s_scaled, s_half = scaled.init(torch.from_numpy(p_scaled)), at_half.init(torch.from_numpy(p_half))
    for g in gradient_stream((16,), torch.float64, steps=5):
        scaled.update(p_scaled, g.numpy(), s_scaled, lr_scale=0.5)
        at_half.update(p_half, g.numpy(), s_half)
    np.testing.assert_array_equal(p_scaled, p_half)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_state_round_trip_resumes_exactly(case):
    opt = optim.create(case.name, **case.hparams)
    grads = gradient_stream((50,), torch.float32, steps=40)
    param = torch.randn(50)
    state = opt.init(param)
    for g in grads[:20]:
        opt.step(param, g, state)
    saved_param, saved = param.clone(), state.state_dict()
    for g in grads[20:]:
        opt.step(param, g, state)

    resumed_param, resumed = saved_param.clone(), State.from_state_dict(saved)
    assert resumed.step == 20
    for g in grads[20:]:
        opt.step(resumed_param, g, resumed)
    assert torch.equal(resumed_param, param)
    assert resumed.step == state.step
    for name, tensor in state.tensors.items():
        assert torch.equal(resumed[name], tensor), name


def test_state_dict_is_a_copy():
    opt = optim.Adam()
    param = torch.zeros(3)
    state = opt.init(param)
    saved = state.state_dict()
    opt.step(param, torch.ones(3), state)
    assert saved["step"] == 0
    assert torch.equal(saved["tensors"]["exp_avg"], torch.zeros(3))


def test_state_arrays_are_flat_views_made_with_it():
    state = optim.Adam(amsgrad=True).init(torch.zeros(3, 4))
    assert set(state.arrays) == set(state.tensors) == {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    for slot, tensor in state.tensors.items():
        assert state.arrays[slot].shape == (12,)
        tensor.add_(1.0)  # the array and the tensor are one buffer
        assert (state.arrays[slot] == 1.0).all(), slot


def test_state_is_plain_data():
    state = optim.State(2, {"sum": torch.ones(3), "strided": torch.ones(3, 2).t()})
    assert state.arrays["strided"] is None  # a non-contiguous tensor has no flat view
    assert state == optim.State(2, {"sum": state["sum"], "strided": state["strided"]})
    assert repr(state).startswith("State(step=2, tensors={") and "arrays" not in repr(state)


@pytest.mark.parametrize("copy_state", [copy.deepcopy, lambda s: pickle.loads(pickle.dumps(s))],
                         ids=["deepcopy", "pickle"])
def test_a_copied_state_has_views_of_its_own_tensors(copy_state):
    opt = optim.Adagrad()
    param = torch.zeros(4)
    state = copy_state(opt.init(param))
    opt.step(param, torch.ones(4), state)
    assert (state["sum"] == 1.0).all() and state.arrays["sum"] is not None
    state["sum"].add_(1.0)
    assert (state.arrays["sum"] == 2.0).all()


def test_state_from_a_state_dict_has_contiguous_slots_and_their_views():
    opt = optim.Adagrad()
    saved = {"step": 3, "tensors": {"sum": torch.ones(4, 3).t()}}  # a strided tensor, as a file could hold
    state = State.from_state_dict(saved)
    assert state["sum"].is_contiguous() and torch.equal(state["sum"], saved["tensors"]["sum"])
    param = torch.zeros(3, 4)
    opt.step(param, torch.ones(3, 4), state)
    assert state.arrays["sum"] is not None and (state.arrays["sum"] == 2.0).all()


def test_state_dict_loads_with_weights_only(tmp_path):
    opt = optim.NAdam()
    param = torch.randn(5)
    state = opt.init(param)
    opt.step(param, torch.randn(5), state)
    torch.save(state.state_dict(), tmp_path / "state.pt")
    resumed = State.from_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert resumed.step == 1 and set(resumed.tensors) == set(state.tensors)
    for slot, tensor in state.tensors.items():
        assert torch.equal(resumed[slot], tensor), slot


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_hparams_rebuild_the_same_optimizer(case):
    opt = optim.create(case.name, **case.hparams)
    before = opt.hparams()
    param = torch.zeros(4)
    opt.step(param, torch.ones(4), opt.init(param))  # what a step remembers is not a hyperparameter
    again = optim.create(opt.name, **opt.hparams())
    assert type(again) is type(opt) and again.hparams() == opt.hparams() == before


# A convex quadratic f(x) = 1/2 x'Ax - b'x with condition number 10. Each
# optimizer starts at the rate that suits it and is annealed to zero: at a
# constant rate the normalized methods (RMSprop, NAdam, Adadelta) only settle
# into a ball around the minimum whose size is set by the rate.
QUADRATIC_STEPS = 3000
QUADRATIC_LR = {"sgd": 0.1, "adagrad": 0.5, "adadelta": 1.0, "rmsprop": 0.01, "adam": 0.05, "adamw": 0.05,
                "adamax": 0.05, "nadam": 0.05}


@pytest.mark.parametrize("name", NAMES)
def test_minimizes_a_convex_quadratic(name):
    gen = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=gen, dtype=torch.float64))
    a = q @ torch.diag(torch.linspace(1, 10, 10, dtype=torch.float64)) @ q.t()
    b = torch.randn(10, generator=gen, dtype=torch.float64)
    x_star = torch.linalg.solve(a, b)

    def f(x):
        return 0.5 * x @ a @ x - b @ x

    hparams = {"lr": CosineAnnealing(QUADRATIC_LR[name], T_max=QUADRATIC_STEPS)}
    if name == "adamw":
        hparams["weight_decay"] = 0.0  # decay would move the minimizer
    opt = optim.create(name, **hparams)
    x = torch.zeros(10, dtype=torch.float64)
    state = opt.init(x)
    gap0 = (f(x) - f(x_star)).item()
    for _ in range(QUADRATIC_STEPS):
        opt.step(x, a @ x - b, state)
    assert (f(x) - f(x_star)).item() <= 1e-8 * gap0


@pytest.mark.parametrize("contiguous", [True, False], ids=["fast", "reference"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_out_receives_the_update_and_param_keeps_its_values(case, contiguous):
    opt = optim.create(case.name, **case.hparams)
    in_place = torch.randn(6, 4, dtype=torch.float64)
    param = in_place.clone() if contiguous else in_place.clone().t().contiguous().t()
    before = param.clone()
    s_in_place, s_out = opt.init(in_place), opt.init(param)
    for g in gradient_stream((6, 4), torch.float64, steps=5):
        out = torch.empty_like(param)
        opt.step(in_place, g, s_in_place)
        opt.step(param, g, s_out, out=out)
        assert torch.equal(param, before)
        param.copy_(out)
        before = param.clone()
    assert relative_error(param, in_place) <= 1e-13
