"""Gradient transforms applied in place before an optimizer step.

Every function takes torch tensors or numpy arrays (wrapped with
``torch.from_numpy``, so the array itself changes) and modifies them in place.
"""

from __future__ import annotations

import math
from typing import Iterable, Union

import numpy as np
import torch

from asyncps.optim.validation import check, is_int, is_number

__all__ = ["GradientNoise", "clip_by_global_norm", "clip_by_value"]

Array = Union[torch.Tensor, np.ndarray]


def _in_place_view(grad: Array) -> torch.Tensor:
    """A torch tensor sharing ``grad``'s memory, safe to write through."""
    if isinstance(grad, np.ndarray):
        # torch.from_numpy would wrap a read-only array anyway and the write
        # would land in memory numpy promised not to change.
        if not grad.flags.writeable:
            raise ValueError("Invalid grad: a read-only numpy array (pass a writeable copy, e.g. arr.copy())")
        grad = torch.from_numpy(grad)
    if not isinstance(grad, torch.Tensor):
        raise TypeError(f"Invalid grad: expected a torch tensor or numpy array, got {type(grad).__name__}")
    if not grad.is_floating_point():
        raise ValueError(f"Invalid grad dtype: {grad.dtype} (expected a floating-point gradient)")
    # detach: a .grad tensor never needs autograd, and in-place writes on a
    # tensor that requires grad would raise.
    return grad.detach()


class GradientNoise:
    r"""Annealed Gaussian gradient noise (Neelakantan et al., "Adding Gradient Noise
    Improves Learning for Very Deep Networks", arXiv 1511.06807, 2015):

    .. math::
        g_t \leftarrow g_t + N(0, \sigma_t^2), \qquad \sigma_t^2 = \frac{\eta}{(1 + t)^{\gamma}}

    :math:`\sigma_t^2` is a *variance*: samples are scaled by
    :math:`\sqrt{\eta / (1+t)^\gamma}`. The paper uses
    :math:`\eta \in \{0.01, 0.3, 1.0\}` and :math:`\gamma = 0.55`; noise is
    drawn independently for every element at every step.

    The noise comes from this object's own ``torch.Generator``: runs are
    reproducible whatever else draws from the global RNG, and ``state_dict()``
    saves the generator so a resumed run continues the same stream.
    """

    def __init__(self, eta: float = 0.01, gamma: float = 0.55, seed: int = 0):
        check(is_number(eta) and eta >= 0, "eta", eta, "eta must be a finite number >= 0")
        check(is_number(gamma) and gamma >= 0, "gamma", gamma, "gamma must be a finite number >= 0")
        check(is_int(seed, 0) and seed < 2**64, "seed", seed, "seed must be an integer in [0, 2**64)")
        self.eta = eta
        self.gamma = gamma
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def variance(self, step: int) -> float:
        r""":math:`\sigma_t^2` at update ``step`` (0 for the first)."""
        return self.eta / (1 + step) ** self.gamma

    def add_(self, grad: Array, step: int) -> Array:
        r"""Add :math:`N(0, \sigma_{step}^2)` noise to ``grad`` in place; returns ``grad``."""
        g = _in_place_view(grad)
        noise = torch.randn(g.shape, generator=self.generator, dtype=g.dtype)
        g.add_(noise, alpha=math.sqrt(self.variance(step)))
        return grad

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def clip_by_global_norm(grads: Iterable[Array] | Array, max_norm: float, eps: float = 1e-6) -> float:
    r"""Rescale ``grads`` in place so that their joint L2 norm is at most ``max_norm``:

    .. math::
        g_i \leftarrow g_i \cdot \min\!\left(1, \frac{\text{max\_norm}}{\lVert g \rVert_2 + \epsilon}\right),
        \qquad \lVert g \rVert_2 = \sqrt{\textstyle\sum_i \lVert g_i \rVert_2^2}

    Returns :math:`\lVert g \rVert_2` before clipping. Computed as
    ``torch.nn.utils.clip_grad_norm_`` does (norm of the per-tensor norms, a
    clamped coefficient applied to every tensor), so results agree with it.
    A non-finite norm is returned, not raised, as torch does by default: the
    caller (a worker skipping a step, a shard rejecting a push) decides.
    """
    check(is_number(max_norm) and max_norm > 0, "max_norm", max_norm, "max_norm must be a finite number > 0")
    check(is_number(eps) and eps >= 0, "eps", eps, "eps must be a finite number >= 0")
    if isinstance(grads, (torch.Tensor, np.ndarray)):
        grads = [grads]
    tensors = [_in_place_view(g) for g in grads]
    if not tensors:
        return 0.0
    total_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in tensors]))
    clip_coef = (max_norm / (total_norm + eps)).clamp(max=1.0)
    for g in tensors:
        g.mul_(clip_coef)
    return float(total_norm)


def clip_by_value(grad: Array, clip_value: float) -> Array:
    """Clamp every element of ``grad`` into ``[-clip_value, clip_value]`` in place; returns ``grad``.

    As ``torch.nn.utils.clip_grad_value_``; NaN elements stay NaN.
    """
    check(is_number(clip_value) and clip_value > 0, "clip_value", clip_value,
          "clip_value must be a finite number > 0")
    _in_place_view(grad).clamp_(-clip_value, clip_value)
    return grad
