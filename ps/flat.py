"""One float32 vector as a tensor and a numpy array over the same memory.

A shard's buffers, and each gradient once it has crossed a boundary, are made
as both at once: rules written in torch ops read ``.tensor``, the optimizers'
kernels ``.array``, and nothing is converted per update (for a slice of a few
hundred floats, making a tensor costs more than updating it).
"""

from __future__ import annotations

import math
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


def all_finite(t: torch.Tensor) -> bool:
    """No NaN or Inf in ``t``, in one read.

    A small float32 one is scanned by a numba loop that stops at the first
    bad value: a shard checks thousands of small pushes a second. Otherwise a
    finite sum means every element is finite. NaN or Inf always makes the sum
    non-finite, but so does an overflow of large finite values; only in that
    case is the exact elementwise test run.
    """
    if t.dtype == torch.float32 and t.numel() < NUMBA_SCAN_BELOW and t.is_contiguous():
        return _all_finite(t.detach().numpy().reshape(-1))
    return math.isfinite(t.sum().item()) or bool(torch.isfinite(t).all())


@njit(cache=True, nogil=True)
def _all_finite(values) -> bool:
    for x in values:
        if not np.isfinite(x):
            return False
    return True
