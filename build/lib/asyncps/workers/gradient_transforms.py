"""What a worker does to each gradient before its protocol sees it: clipping, then noise.

``GradientTransform`` holds the ``[train]`` keys that ask for it; ``for_worker(w)``
gives worker ``w`` its own callable (its own seeded noise stream), which
``WorkerRuntime`` applies to every gradient, dense and rows together, in place:

1. clipping by the joint L2 norm (``clip_norm``, as ``torch.nn.utils.clip_grad_norm_``)
   and/or element-wise (``clip_value``, as ``clip_grad_value_``);
2. annealed Gaussian noise (Neelakantan et al. 2015, ``optim.GradientNoise``):
   variance ``noise_eta / (1 + t)^noise_gamma`` at the worker's step ``t``
   (0 for its first gradient). The paper's ``t`` is the training step; here
   each worker counts its own.

Zeros switch each off; with all off a worker's gradients are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from asyncps import optim
from asyncps.protocols import Gradient

__all__ = ["GradientTransform"]

_NOISE_STREAM = 2  # distinct from the data shards' seed streams


@dataclass(frozen=True)
class GradientTransform:
    clip_norm: float = 0.0     # 0: no norm clipping
    clip_value: float = 0.0    # 0: no value clipping
    noise_eta: float = 0.0     # 0: no noise
    noise_gamma: float = 0.55
    seed: int = 0

    @property
    def active(self) -> bool:
        return bool(self.clip_norm or self.clip_value or self.noise_eta)

    def for_worker(self, worker: int) -> Callable[[Gradient, int], None] | None:
        """Worker ``worker``'s transform, ``(gradient, step) -> None`` in place; None when nothing is on."""
        if not self.active:
            return None
        noise = None
        if self.noise_eta:
            seed = int(np.random.SeedSequence([self.seed, _NOISE_STREAM, worker]).generate_state(1, np.uint64)[0])
            noise = optim.GradientNoise(self.noise_eta, self.noise_gamma, seed)

        def transform(grad: Gradient, step: int) -> None:
            tensors = [grad.dense, *grad.rows.values()]
            if self.clip_norm:
                optim.clip_by_global_norm(tensors, self.clip_norm)
            if self.clip_value:
                for t in tensors:
                    optim.clip_by_value(t, self.clip_value)
            if noise is not None:
                for t in tensors:
                    noise.add_(t, step)

        return transform
