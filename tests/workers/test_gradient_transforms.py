"""What a worker does to its gradients before its protocol sees them: clipping, then annealed noise."""

from __future__ import annotations

import math

import pytest
import torch

from asyncps.protocols import Gradient
from asyncps.workers.gradient_transforms import GradientTransform


def gradient(seed=0) -> Gradient:
    g = torch.Generator().manual_seed(seed)
    return Gradient(1.0, torch.randn(50, generator=g) * 3, {"emb": torch.randn(4, 5, generator=g) * 3})


def test_all_off_leaves_gradients_alone():
    assert GradientTransform().for_worker(0) is None


def test_norm_clipping_is_torchs_over_dense_and_rows_together():
    grad, expected = gradient(), gradient()
    GradientTransform(clip_norm=1.0).for_worker(0)(grad, 0)
    params = [torch.nn.Parameter(torch.zeros_like(t)) for t in (expected.dense, expected.rows["emb"])]
    for p, t in zip(params, (expected.dense, expected.rows["emb"])):
        p.grad = t.clone()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    assert torch.equal(grad.dense, params[0].grad) and torch.equal(grad.rows["emb"], params[1].grad)
    assert math.isclose(math.hypot(grad.dense.norm(), grad.rows["emb"].norm()), 1.0, rel_tol=1e-5)


def test_value_clipping_bounds_every_element():
    grad = gradient()
    GradientTransform(clip_value=0.5).for_worker(0)(grad, 0)
    assert grad.dense.abs().max() == 0.5 and grad.rows["emb"].abs().max() == 0.5


def test_noise_has_the_annealed_variance_is_seeded_per_worker_and_comes_after_clipping():
    transform = GradientTransform(clip_value=1e-9, noise_eta=0.3, noise_gamma=0.55, seed=7)
    draws = {}
    for worker in (0, 0, 1):
        apply = transform.for_worker(worker)
        grad = Gradient(0.0, torch.zeros(20000), {})
        apply(grad, 0)
        later = Gradient(0.0, torch.zeros(20000), {})
        apply(later, 99)
        draws.setdefault(worker, []).append((grad.dense, later.dense))
    (first, later), (again, _) = draws[0]
    assert torch.equal(first, again) and not torch.equal(first, draws[1][0][0])
    assert first.var().item() == pytest.approx(0.3, rel=0.05)
    assert later.var().item() == pytest.approx(0.3 / 100**0.55, rel=0.05)  # noise is not clipped away
