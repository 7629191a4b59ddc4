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

from asyncps.optim.validation import check, check_int, is_int, is_number
from asyncps.workers.splits import DenseSplit, RatingsSplit, SparseSplit, Split

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


def _batch_size(examples: int, batch_size: int, growth: tuple[float, tuple[int, ...]], epoch: int) -> int:
    """The batch size of epoch ``epoch`` in a shard of ``examples``: ``batch_size`` times the growth
    factor once for each growth epoch reached, rounded, at most the shard."""
    factor, epochs = growth
    return min(examples, round(batch_size * factor ** sum(1 for e in epochs if e <= epoch)))


def _batch_length(examples: int, batch_size: int, growth: tuple[float, tuple[int, ...]], step: int) -> int:
    """The examples in batch ``step`` (counted over the epochs) of a shard of ``examples``."""
    epoch = 0
    while True:
        size = _batch_size(examples, batch_size, growth, epoch)
        per_epoch = math.ceil(examples / size)
        if step < per_epoch or not growth[1] or epoch >= growth[1][-1]:  # from here on every epoch is alike
            return min(size, examples - (step % per_epoch) * size)
        step -= per_epoch
        epoch += 1


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

    ``growth = (factor, epochs)`` grows the batch: from each epoch of
    ``epochs`` on, it is ``factor`` times larger again (rounded, at most the
    shard), as Smith et al. grow it in place of decaying the learning rate
    ("Don't Decay the Learning Rate, Increase the Batch Size", ICLR 2018).
    """

    def __init__(self, split: Split, worker: int, num_workers: int, *, batch_size: int | str, seed: int,
                 curriculum: str = "none", growth: tuple[float, tuple[int, ...]] = (1.0, ())):
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
        self.requested = batch_size  # before it is cut to this shard: other shards' batches start from it
        factor, epochs = growth
        check(is_number(factor) and factor >= 1, "growth factor", factor, "the batch's growth factor must be >= 1")
        check(all(is_int(e) for e in epochs) and list(epochs) == sorted(set(epochs)), "growth epochs", epochs,
              "the epochs the batch grows at must be increasing integers >= 1")
        self.growth = (float(factor), tuple(epochs))
        # Every worker's shard size, which the split's size decides alike for all.
        self.shard_sizes = [stop - start for start, stop in
                            (_part(len(split), w, num_workers) for w in range(num_workers))]
        self.score = difficulty(split)[self.indices.numpy()] if curriculum != "none" else None
        self.epoch = 0

    def __len__(self) -> int:
        """Examples in the shard."""
        return len(self.data)

    def batch_size_at(self, epoch: int) -> int:
        """The batch size of epoch ``epoch``: ``batch_size`` grown at each growth epoch passed."""
        return _batch_size(len(self.data), self.batch_size, self.growth, epoch)

    def batches_in(self, epoch: int) -> int:
        return math.ceil(len(self.data) / self.batch_size_at(epoch))

    @property
    def batches_per_epoch(self) -> int:
        """The batches of the first epoch (of every epoch, when the batch does not grow)."""
        return self.batches_in(0)

    def steps_for(self, epochs: float) -> int:
        """The batches of the first ``epochs`` epochs (a fraction of the last one's, rounded)."""
        whole = math.floor(epochs)
        return sum(self.batches_in(e) for e in range(whole)) + round((epochs - whole) * self.batches_in(whole))

    def batch_sizes(self, step: int) -> list[int]:
        """The examples in every worker's batch number ``step`` (0-based, counted
        over the epochs), worker by worker. Each worker counts them alone: the
        shards of a split are cut alike, and only an epoch's last batch is short."""
        check_int(step, "step", low=0)
        return [_batch_length(examples, examples if self.full else self.requested, self.growth, step)
                for examples in self.shard_sizes]

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
        size = self.batch_size_at(epoch)
        for start in range(0, len(order), size):
            yield self.data.subset(order[start:start + size])

    def __iter__(self) -> Iterator[Split]:
        for epoch in itertools.count():
            self.epoch = epoch
            yield from self.batches(epoch)
