"""Gradient noise and clipping; torch.nn.utils is the oracle for clipping."""

import math
import pickle
import re

import numpy as np
import pytest
import torch

from asyncps.optim.transforms import GradientNoise, clip_by_global_norm, clip_by_value


def noise_of(noise: GradientNoise, step: int, n: int = 1000, dtype=torch.float64) -> torch.Tensor:
    return noise.add_(torch.zeros(n, dtype=dtype), step)


# -- gradient noise -----------------------------------------------------------

def test_same_seed_same_noise_different_seed_different():
    a, b, c = GradientNoise(seed=1), GradientNoise(seed=1), GradientNoise(seed=2)
    for step in range(3):
        same, twin, other = noise_of(a, step), noise_of(b, step), noise_of(c, step)
        assert torch.equal(same, twin)
        assert not torch.equal(same, other)


def test_noise_ignores_the_global_rng():
    first = noise_of(GradientNoise(seed=5), 0)
    torch.manual_seed(123)
    torch.rand(10)
    assert torch.equal(noise_of(GradientNoise(seed=5), 0), first)


@pytest.mark.parametrize("eta, gamma", [(0.01, 0.55), (0.3, 0.55), (1.0, 0.55)])
@pytest.mark.parametrize("step", [0, 1000])
def test_noise_variance_is_eta_over_one_plus_t_to_the_gamma(eta, gamma, step):
    noise = noise_of(GradientNoise(eta, gamma, seed=0), step, n=1_000_000)
    # Sample variance of 10**6 normals has relative s.d. sqrt(2/n) = 0.14%, so
    # 2% is a wide margin — yet would catch using sigma_t^2 as the std (a
    # factor of 3 to 45 here).
    assert noise.var().item() == pytest.approx(eta / (1 + step) ** gamma, rel=0.02)
    assert abs(noise.mean().item()) < 5 * math.sqrt(eta / (1 + step) ** gamma / noise.numel())


def test_noise_is_added_to_the_gradient_in_place():
    grad = torch.arange(5.0)
    expected = grad + noise_of(GradientNoise(eta=0.3, seed=4), 2, n=5, dtype=torch.float32)
    returned = GradientNoise(eta=0.3, seed=4).add_(grad, 2)
    assert returned is grad
    assert torch.equal(grad, expected)


def test_noise_on_numpy_arrays_changes_the_array():
    array = np.zeros(7, dtype=np.float32)
    GradientNoise(seed=9).add_(array, 3)
    assert torch.equal(torch.from_numpy(array), noise_of(GradientNoise(seed=9), 3, n=7, dtype=torch.float32))


def test_noise_state_round_trip_resumes_the_stream():
    original = GradientNoise(seed=11)
    for step in range(3):
        noise_of(original, step)
    saved = original.state_dict()
    continued = [noise_of(original, step) for step in range(3, 6)]

    resumed = GradientNoise(seed=0)
    resumed.load_state_dict(saved)
    for step, expected in zip(range(3, 6), continued):
        assert torch.equal(noise_of(resumed, step), expected)


def test_pickled_noise_continues_the_stream():
    # How it travels to a Ray actor: the generator position goes with it.
    original = GradientNoise(seed=3)
    noise_of(original, 0)
    copy = pickle.loads(pickle.dumps(original))
    assert torch.equal(noise_of(copy, 1), noise_of(original, 1))


def test_state_dict_is_a_snapshot():
    noise = GradientNoise(seed=1)
    saved = noise.state_dict()
    first = noise_of(noise, 0)
    noise.load_state_dict(saved)
    assert torch.equal(noise_of(noise, 0), first)


def test_zero_eta_adds_nothing():
    assert torch.equal(noise_of(GradientNoise(eta=0.0), 0), torch.zeros(1000, dtype=torch.float64))


# -- clipping -----------------------------------------------------------------

def torch_clip_norm(grads, max_norm):
    params = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    total = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return [p.grad for p in params], total.item()


def gradients(dtype, scale):
    gen = torch.Generator().manual_seed(0)
    return [scale * torch.randn(shape, generator=gen, dtype=dtype) for shape in [(3, 4), (5,), (), (2, 2, 2)]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale, max_norm", [(1.0, 0.5), (10.0, 1.0), (0.01, 1.0), (1.0, 1e6)],
                         ids=["clipped", "clipped-hard", "unclipped", "far-below"])
def test_clip_by_global_norm_agrees_with_torch(dtype, scale, max_norm):
    grads = gradients(dtype, scale)
    expected, expected_norm = torch_clip_norm(grads, max_norm)
    norm = clip_by_global_norm(grads, max_norm)
    assert norm == pytest.approx(expected_norm, rel=1e-6 if dtype == torch.float32 else 1e-12)
    for ours, theirs in zip(grads, expected):
        torch.testing.assert_close(ours, theirs)
    after = math.sqrt(sum(g.double().pow(2).sum().item() for g in grads))
    assert after <= max_norm * (1 + 1e-6)


def test_clip_by_global_norm_of_mixed_dtypes_agrees_with_torch():
    grads = gradients(torch.float32, 3.0)[:2] + gradients(torch.float64, 3.0)[2:]
    expected, expected_norm = torch_clip_norm(grads, 1.0)
    assert clip_by_global_norm(grads, 1.0) == pytest.approx(expected_norm, rel=1e-6)
    for ours, theirs in zip(grads, expected):
        torch.testing.assert_close(ours, theirs)


def test_clip_by_global_norm_on_numpy_and_a_single_tensor():
    arrays = [np.full(4, 3.0), np.full(4, 4.0)]
    assert clip_by_global_norm(arrays, 1.0) == pytest.approx(10.0)
    np.testing.assert_allclose(arrays[0], np.full(4, 0.3), rtol=1e-6)

    single = torch.tensor([3.0, 4.0])
    assert clip_by_global_norm(single, 1.0) == pytest.approx(5.0)
    torch.testing.assert_close(single, torch.tensor([0.6, 0.8]))


def test_clip_by_global_norm_of_nothing():
    assert clip_by_global_norm([], 1.0) == 0.0


def test_clip_by_global_norm_non_finite_matches_torch():
    grads = [torch.tensor([1.0, math.inf]), torch.tensor([2.0])]
    expected, expected_norm = torch_clip_norm(grads, 1.0)
    assert clip_by_global_norm(grads, 1.0) == expected_norm == math.inf
    for ours, theirs in zip(grads, expected):
        torch.testing.assert_close(ours, theirs, equal_nan=True)


@pytest.mark.parametrize("clip_value", [0.5, 2.0, 100.0])
def test_clip_by_value_agrees_with_torch(clip_value):
    grad = torch.tensor([-3.0, -0.4, 0.0, 0.4, 1.5, 3.0, math.nan, math.inf, -math.inf])
    param = torch.zeros_like(grad, requires_grad=True)
    param.grad = grad.clone()
    torch.nn.utils.clip_grad_value_([param], clip_value)
    assert clip_by_value(grad, clip_value) is grad
    torch.testing.assert_close(grad, param.grad, equal_nan=True)


def test_clip_by_value_on_numpy():
    array = np.array([-2.0, 0.1, 2.0])
    clip_by_value(array, 1.0)
    np.testing.assert_array_equal(array, [-1.0, 0.1, 1.0])


# -- validation ---------------------------------------------------------------

INVALID = {
    "eta-negative": (lambda: GradientNoise(eta=-0.1), "Invalid eta: -0.1 (eta must be a finite number >= 0)"),
    "eta-nan": (lambda: GradientNoise(eta=math.nan), "Invalid eta: nan (eta must be a finite number >= 0)"),
    "gamma": (lambda: GradientNoise(gamma=-1.0), "Invalid gamma: -1.0 (gamma must be a finite number >= 0)"),
    "seed-negative": (lambda: GradientNoise(seed=-1), "Invalid seed: -1 (seed must be an integer in [0, 2**64))"),
    "seed-float": (lambda: GradientNoise(seed=1.5), "Invalid seed: 1.5 (seed must be an integer in [0, 2**64))"),
    "max-norm-zero": (lambda: clip_by_global_norm([torch.ones(2)], 0.0),
                      "Invalid max_norm: 0.0 (max_norm must be a finite number > 0)"),
    "max-norm-inf": (lambda: clip_by_global_norm([torch.ones(2)], math.inf),
                     "Invalid max_norm: inf (max_norm must be a finite number > 0)"),
    "eps": (lambda: clip_by_global_norm([torch.ones(2)], 1.0, eps=-1e-6),
            "Invalid eps: -1e-06 (eps must be a finite number >= 0)"),
    "clip-value-negative": (lambda: clip_by_value(torch.ones(2), -1.0),
                            "Invalid clip_value: -1.0 (clip_value must be a finite number > 0)"),
    "clip-value-nan": (lambda: clip_by_value(torch.ones(2), math.nan),
                       "Invalid clip_value: nan (clip_value must be a finite number > 0)"),
    "integer-grad": (lambda: clip_by_value(torch.ones(2, dtype=torch.int64), 1.0),
                     "Invalid grad dtype: torch.int64 (expected a floating-point gradient)"),
}


@pytest.mark.parametrize("make, message", INVALID.values(), ids=INVALID.keys())
def test_invalid_parameters(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_read_only_numpy_array_is_rejected():
    array = np.zeros(3)
    array.setflags(write=False)
    with pytest.raises(ValueError, match=re.escape("Invalid grad: a read-only numpy array (pass a writeable copy")):
        GradientNoise().add_(array, 0)


def test_non_array_gradient_is_rejected():
    with pytest.raises(TypeError, match=re.escape("Invalid grad: expected a torch tensor or numpy array, got list")):
        clip_by_value([1.0, 2.0], 1.0)
