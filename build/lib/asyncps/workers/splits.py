"""Examples as tensors: the three kinds of :class:`Split` and seeded train/val/test splitting.

A split is a frozen bundle of equally long tensors, one row per example, and
a batch is simply a smaller split (``split.subset(index)``), so models,
shards and the parameter server handle one type from loading to gradient.

- :class:`DenseSplit` -- ``x`` float32 ``[n, ...]`` and class labels ``y`` int64 ``[n]``.
- :class:`SparseSplit` -- CSR rows: example ``i`` has feature ids
  ``indices[offsets[i]:offsets[i+1]]`` (int64, sorted, distinct within a row)
  with ``values`` (float32) at the same positions; binary labels ``y`` float32
  in {0, 1}. ``offsets`` has ``n + 1`` entries and starts at 0.
- :class:`RatingsSplit` -- observed entries ``(user, item) -> rating`` of a
  matrix: ``user``, ``item`` int64 and ``rating`` float32, each ``[n]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from asyncps.optim.validation import check, is_number

__all__ = ["Split", "DenseSplit", "SparseSplit", "RatingsSplit", "split_indices"]


def as_index(index) -> torch.Tensor:
    """A 1-D int64 tensor from a tensor, numpy array, range or list of example positions."""
    if isinstance(index, np.ndarray):
        index = torch.from_numpy(index)
    index = torch.as_tensor(index, dtype=torch.int64)
    check(index.dim() == 1, "index", tuple(index.shape), "subset takes a 1-D vector of example positions")
    return index


class Split:
    """A set of examples; ``len(split)`` examples, ``split.subset(index)`` a new split of the chosen ones."""

    kind: ClassVar[str]

    def __len__(self) -> int:
        raise NotImplementedError

    def subset(self, index) -> "Split":
        raise NotImplementedError

    def _check_lengths(self, **tensors: torch.Tensor) -> None:
        sizes = {name: t.shape[0] for name, t in tensors.items()}
        check(len(set(sizes.values())) == 1, f"{self.kind} split", sizes, "every tensor needs one row per example")


@dataclass(frozen=True, eq=False)
class DenseSplit(Split):
    x: torch.Tensor  # float32 [n, ...]
    y: torch.Tensor  # int64 [n] class labels

    kind: ClassVar[str] = "dense"

    def __post_init__(self):
        self._check_lengths(x=self.x, y=self.y)

    def __len__(self) -> int:
        return self.y.shape[0]

    def subset(self, index) -> "DenseSplit":
        index = as_index(index)
        return DenseSplit(self.x.index_select(0, index), self.y.index_select(0, index))


@dataclass(frozen=True, eq=False)
class SparseSplit(Split):
    indices: torch.Tensor  # int64 [nnz] feature ids, row by row
    offsets: torch.Tensor  # int64 [n + 1] CSR row pointers
    values: torch.Tensor   # float32 [nnz]
    y: torch.Tensor        # float32 [n] in {0, 1}

    kind: ClassVar[str] = "sparse"

    def __post_init__(self):
        check(self.offsets.dim() == 1 and self.offsets.numel() >= 1 and int(self.offsets[0]) == 0, "offsets",
              tuple(self.offsets.shape), "CSR row pointers: n + 1 entries starting at 0")
        check(int(self.offsets[-1]) == self.indices.numel() == self.values.numel(), "sparse split",
              {"offsets[-1]": int(self.offsets[-1]), "indices": self.indices.numel(), "values": self.values.numel()},
              "offsets[-1] must equal the number of indices and of values")
        self._check_lengths(offsets=self.offsets[1:], y=self.y)

    def __len__(self) -> int:
        return self.y.shape[0]

    def nnz(self) -> torch.Tensor:
        """Non-zeros per example, int64 ``[n]``."""
        return self.offsets.diff()

    def example_ids(self) -> torch.Tensor:
        """The example each non-zero belongs to, int64 ``[nnz]`` (for segment sums)."""
        return torch.repeat_interleave(torch.arange(len(self)), self.nnz())

    def subset(self, index) -> "SparseSplit":
        index = as_index(index)
        starts = self.offsets.index_select(0, index)
        lengths = self.offsets.index_select(0, index + 1) - starts
        offsets = torch.zeros(index.numel() + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
        # position of the k-th chosen non-zero in the source: its row's start + its rank within the row
        rank = torch.arange(int(offsets[-1])) - torch.repeat_interleave(offsets[:-1], lengths)
        source = torch.repeat_interleave(starts, lengths) + rank
        return SparseSplit(self.indices.index_select(0, source), offsets, self.values.index_select(0, source),
                           self.y.index_select(0, index))


@dataclass(frozen=True, eq=False)
class RatingsSplit(Split):
    user: torch.Tensor    # int64 [n]
    item: torch.Tensor    # int64 [n]
    rating: torch.Tensor  # float32 [n]

    kind: ClassVar[str] = "ratings"

    def __post_init__(self):
        self._check_lengths(user=self.user, item=self.item, rating=self.rating)

    def __len__(self) -> int:
        return self.rating.shape[0]

    def subset(self, index) -> "RatingsSplit":
        index = as_index(index)
        return RatingsSplit(self.user.index_select(0, index), self.item.index_select(0, index),
                            self.rating.index_select(0, index))


def split_indices(n: int, rng: np.random.Generator, val_fraction: float, test_fraction: float,
                  labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train/val/test positions of ``n`` examples, stratified by ``labels`` when given.

    Within each class (or over all examples without labels) a random
    ``round(n_c * test_fraction)`` go to test and ``round(n_c * val_fraction)``
    to val, the rest to train; each part is then shuffled, so no split is
    ordered by class.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        check(is_number(value) and 0 <= value < 1, name, value, f"{name} must be in [0, 1)")
    check(val_fraction + test_fraction < 1, "fractions", (val_fraction, test_fraction),
          "val_fraction + test_fraction must be < 1, leaving examples to train on")
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    parts: tuple[list, list, list] = ([], [], [])
    for members in groups:
        members = rng.permutation(members)
        n_test = round(members.size * test_fraction)
        n_val = round(members.size * val_fraction)
        parts[2].append(members[:n_test])
        parts[1].append(members[n_test:n_test + n_val])
        parts[0].append(members[n_test + n_val:])
    return tuple(rng.permutation(np.concatenate(p).astype(np.int64)) for p in parts)
