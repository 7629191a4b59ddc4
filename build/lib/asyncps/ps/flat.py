"""One float32 vector as a tensor and a numpy array over the same memory.

A shard's buffers, and each gradient once it has crossed a boundary, are made
as both at once: rules written in torch ops read ``.tensor``, the optimizers'
kernels ``.array``, and nothing is converted per update (for a slice of a few
hundred floats, making a tensor costs more than updating it).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from numba import njit

NUMBA_SCAN_BELOW = 1 << 16  # elements: below this, a loop in numba beats torch's per-op dispatch


class Flat(NamedTuple):
    tensor: torch.Tensor
    array: np.ndarray

    @classmethod
    def of(cls, tensor: torch.Tensor) -> Flat:
        """``tensor`` (contiguous, 1-D, not requiring grad) and its numpy view."""
        return cls(tensor, tensor.numpy())

    @classmethod
    def zeros(cls, size: int) -> Flat:
        return cls.of(torch.zeros(size))

    def part(self, start: int, stop: int) -> Flat:
        return Flat(self.tensor[start:stop], self.array[start:stop])


MAX_ABS = float(np.sqrt(np.finfo(np.float32).max))  # about 1.8e19: a larger value's square overflows float32


def all_usable(t: torch.Tensor) -> bool:
    """No NaN or Inf in ``t``, and no value beyond ±``MAX_ABS``, in one read.

    A value whose square overflows float32 is finite, yet it would freeze an
    optimizer that accumulates squared gradients (AdaGrad's sum becomes Inf,
    and every later step moves nothing): such a push is refused too. A small
    float32 tensor is scanned by a numba loop that stops at the first bad
    value (a shard checks thousands of small pushes a second); a large one by
    one ``aminmax``, whose NaN compares false.
    """
    if t.dtype == torch.float32 and t.numel() < NUMBA_SCAN_BELOW and t.is_contiguous():
        return _all_within(t.detach().numpy().reshape(-1), MAX_ABS)
    if not t.numel():
        return True
    low, high = torch.aminmax(t.detach())
    return bool(low >= -MAX_ABS) and bool(high <= MAX_ABS)


@njit(cache=True, nogil=True)
def _all_within(values, bound) -> bool:
    for x in values:
        if not abs(x) <= bound:  # NaN too
            return False
    return True
