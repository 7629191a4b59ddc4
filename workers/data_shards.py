"""Each worker's share of the training data, and the order it sees it in.

Worker ``w`` of ``W`` owns a fixed, seeded, disjoint shard of the training
split (the shards together cover it: :func:`shard_indices`). Every epoch it
walks its shard in a fresh order, seeded by ``(seed, worker, epoch)``, so a
run is reproducible and two workers never see the same example.

Curricula (Bengio et al., ICML 2009; Zaremba & Sutskever 2014, as cited
in Ruder's overview, Sec. 5.1) order an epoch by a difficulty score
(:func:`difficulty`):

- ``"none"`` -- uniformly shuffled.
- ``"easy_to_hard"`` -- sorted from easy to hard, ties in random order.
- ``"mixed"`` -- Zaremba & Sutskever's *combined* strategy: every batch
  holds curriculum examples and uniformly random ones, half and half. Each
  epoch a random half of the shard (``MIXED_RANDOM_FRACTION``) forms the
  random stream, shuffled; the other half, sorted easy to hard, forms the
  curriculum stream. The two streams are interleaved in proportion (element
  ``j`` of a stream of length ``m`` is placed at ``(j + 1/2) / m``), so each
  batch takes ``b/2`` (up to rounding) from each, both run out together,
  and each example is still seen exactly once per epoch.
"""

from __future__ import annotations

import itertools
import math
from typing import Iterator

import numpy as np
import torch

from optim.validation import check, check_int, is_int
from workers.splits import DenseSplit, RatingsSplit, SparseSplit, Split

__all__ = ["DataShard", "shard_indices", "difficulty", "CURRICULA", "MIXED_RANDOM_FRACTION"]

CURRICULA = ("none", "easy_to_hard", "mixed")
MIXED_RANDOM_FRACTION = 0.5

# Distinct seed streams, so that the shard partition and the epoch orders of one seed are independent.
_PARTITION_STREAM, _ORDER_STREAM = 0, 1


def _check_worker(worker: int, num_workers: int) -> None:
    check_int(num_workers, "num_workers")
    check_int(worker, "worker", low=0)
    check(worker < num_workers, "worker", worker, f"worker must be in [0, num_workers={num_workers})")


def _part(n: int, worker: int, num_workers: int) -> tuple[int, int]:
    """Where worker ``worker``'s part of a permutation of ``n`` starts and stops."""
    return worker * n // num_workers, (worker + 1) * n // num_workers


def shard_indices(n: int, worker: int, num_workers: int, seed: int) -> torch.Tensor:
    """The sorted example positions (int64) worker ``worker`` owns among ``n``: a seeded permutation
    of ``range(n)`` cut into ``num_workers`` contiguous parts whose sizes differ by at most one."""
    _check_worker(worker, num_workers)
    check_int(n, "n", low=0)
    check_int(seed, "seed", low=0)
    permutation = np.random.default_rng([seed, _PARTITION_STREAM]).permutation(n)
    start, stop = _part(n, worker, num_workers)
    return torch.from_numpy(np.sort(permutation[start:stop]).astype(np.int64))


def _batch_length(examples: int, batch_size: int, step: int) -> int:
    """The examples in batch ``step`` (counted over the epochs) of a shard of ``examples``."""
    per_epoch = math.ceil(examples / batch_size)
    return min(batch_size, examples - (step % per_epoch) * batch_size)


def difficulty(split: Split) -> np.ndarray:
    """A difficulty score per example (float64, higher is harder), from the split's own statistics.

    - dense: distance of ``x`` to its class mean, divided by the class's mean
      distance (so no class is "hard" merely for being spread out);
    - sparse: the mean inverse document frequency :math:`\\log(N / d_f)` of the
      example's features -- an example made of frequent features is easy (their
      weights are well estimated), one with rare features hard. (The count of
      non-zeros would tie every example of ``sparse_synthetic``.) An example
      without features scores 0;
    - ratings: :math:`|r - \\bar r|`, how far a rating is from the mean rating.
    """
    if isinstance(split, DenseSplit):
        x, y = split.x.reshape(len(split), -1).double().numpy(), split.y.numpy()
        score = np.zeros(len(split))
        for c in np.unique(y):
            members = y == c
            distance = np.linalg.norm(x[members] - x[members].mean(axis=0), axis=1)
            spread = distance.mean()
            score[members] = distance / spread if spread > 0 else 0.0
        return score
    if isinstance(split, SparseSplit):
        indices, nnz = split.indices.numpy(), split.nnz().numpy()
        df = np.bincount(indices)
        idf = np.log(len(split) / np.maximum(df[indices], 1))
        return np.bincount(split.example_ids().numpy(), weights=idf, minlength=len(split)) / np.maximum(nnz, 1)
    if isinstance(split, RatingsSplit):
        rating = split.rating.double().numpy()
        return np.abs(rating - rating.mean()) if rating.size else rating
    raise TypeError(f"Invalid split: {type(split).__name__} (expected a DenseSplit, SparseSplit or RatingsSplit)")


def interleave(*streams: np.ndarray) -> np.ndarray:
    """The streams merged in proportion: element ``j`` of a stream of length ``m`` goes to
    ``(j + 1/2) / m``, ties to the earlier stream, so every stretch of the result holds
    each stream in (nearly) its overall share and all streams end together."""
    place = np.concatenate([(np.arange(s.size) + 0.5) / max(s.size, 1) for s in streams])
    return np.concatenate(streams)[np.argsort(place, kind="stable")]


class DataShard:
    """Batches of worker ``worker``'s shard, epoch after epoch.

    ``batch_size``: an int ``n`` (mini-batches; the last, partial batch of an
    epoch is kept), 1 (stochastic) or ``"full"`` (the whole shard each step:
    batch gradient descent). It iterates forever (the worker counts its
    steps); ``epoch`` is the epoch the last batch yielded belongs to (0-based).
    """

    def __init__(self, split: Split, worker: int, num_workers: int, *, batch_size: int | str, seed: int,
                 curriculum: str = "none"):
        _check_worker(worker, num_workers)
        check(num_workers <= len(split), "num_workers", num_workers,
              f"each worker needs at least one example: num_workers must be <= len(split) = {len(split)}")
        check(batch_size == "full" or is_int(batch_size), "batch_size", batch_size,
              "batch_size must be an integer >= 1 or 'full'")
        check(curriculum in CURRICULA, "curriculum", curriculum, f"choose one of {list(CURRICULA)}")
        self.worker, self.num_workers, self.seed = worker, num_workers, seed
        self.curriculum = curriculum
        self.indices = shard_indices(len(split), worker, num_workers, seed)  # positions in `split`
        self.data = split.subset(self.indices)
        self.batch_size = len(self.data) if batch_size == "full" else min(batch_size, len(self.data))
        self.full = batch_size == "full"
        # Every worker's shard size and batch size, which the split's size decides alike for all.
        sizes = [stop - start for start, stop in (_part(len(split), w, num_workers) for w in range(num_workers))]
        self.shard_batches = [(size, size if self.full else min(batch_size, size)) for size in sizes]
        self.score = difficulty(split)[self.indices.numpy()] if curriculum != "none" else None
        self.epoch = 0

    def __len__(self) -> int:
        """Examples in the shard."""
        return len(self.data)

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)

    def batch_sizes(self, step: int) -> list[int]:
        """The examples in every worker's batch number ``step`` (0-based, counted
        over the epochs), worker by worker. Each worker counts them alone: the
        shards of a split are cut alike, and only an epoch's last batch is short."""
        check_int(step, "step", low=0)
        return [_batch_length(examples, batch_size, step) for examples, batch_size in self.shard_batches]

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Positions into ``self.data`` in the order epoch ``epoch`` presents them."""
        rng = np.random.default_rng([self.seed, _ORDER_STREAM, self.worker, epoch])
        n = len(self.data)
        if self.curriculum == "none":
            return rng.permutation(n)
        easy_to_hard = np.lexsort((rng.random(n), self.score))  # by score, ties by a random key
        if self.curriculum == "easy_to_hard":
            return easy_to_hard
        in_random = np.zeros(n, dtype=bool)
        in_random[rng.choice(n, size=round(n * MIXED_RANDOM_FRACTION), replace=False)] = True
        curriculum_stream = easy_to_hard[~in_random[easy_to_hard]]
        random_stream = rng.permutation(np.flatnonzero(in_random))
        return interleave(curriculum_stream, random_stream)

    def batches(self, epoch: int) -> Iterator[Split]:
        """The batches of epoch ``epoch``."""
        if self.full:
            yield self.data  # order is irrelevant to the full gradient: no copy
            return
        order = torch.from_numpy(self.epoch_order(epoch))
        for start in range(0, len(order), self.batch_size):
            yield self.data.subset(order[start:start + self.batch_size])

    def __iter__(self) -> Iterator[Split]:
        for epoch in itertools.count():
            self.epoch = epoch
            yield from self.batches(epoch)
