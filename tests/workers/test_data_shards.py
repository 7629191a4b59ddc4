"""Data shards: disjoint and covering, reshuffled by epoch yet deterministic,
batch sizes full/1/n, the epoch counter, curricula and their difficulty scores,
and every refusal's message."""

from __future__ import annotations

import re
from itertools import islice

import numpy as np
import pytest
import torch

from asyncps.workers import CURRICULA, DataShard, DenseSplit, RatingsSplit, SparseSplit, difficulty, shard_indices
from asyncps.workers.data_shards import MIXED_RANDOM_FRACTION, interleave


def numbered(n: int) -> DenseSplit:
    """Examples that carry their own position: x[i] = i, three classes."""
    return DenseSplit(torch.arange(n, dtype=torch.float32).view(n, 1), torch.arange(n) % 3)


def ids(batch: DenseSplit) -> list[int]:
    return batch.x.view(-1).long().tolist()


def first_epochs(shard: DataShard, epochs: int) -> list:
    """The batches of the shard's first ``epochs`` epochs (a shard iterates forever)."""
    return list(islice(shard, epochs * shard.batches_per_epoch))


def epoch_ids(shard: DataShard, epoch: int) -> list[int]:
    """Positions in the split, in the order the shard presents them in ``epoch``."""
    return shard.indices[torch.from_numpy(shard.epoch_order(epoch))].tolist()


# -- shard_indices ------------------------------------------------------------------

@pytest.mark.parametrize("n", [10, 11, 100])
@pytest.mark.parametrize("num_workers", [1, 2, 3, 7])
def test_shards_are_disjoint_cover_the_split_and_balance(n, num_workers):
    shards = [shard_indices(n, w, num_workers, seed=5) for w in range(num_workers)]
    joined = torch.cat(shards)
    assert sorted(joined.tolist()) == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert all(s.dtype == torch.int64 and torch.equal(s, s.sort().values) for s in shards)


def test_shard_indices_refuses_a_negative_size():
    with pytest.raises(ValueError, match=r"Invalid n: -1 \(n must be an integer >= 0\)"):
        shard_indices(-1, 0, 1, seed=0)


def test_shards_are_seeded():
    assert torch.equal(shard_indices(100, 1, 4, seed=5), shard_indices(100, 1, 4, seed=5))
    assert not torch.equal(shard_indices(100, 1, 4, seed=5), shard_indices(100, 1, 4, seed=6))


def example_ids(batch) -> list[int]:
    """The example numbers the splits below encode: y, the first feature // 2, or the user."""
    if isinstance(batch, DenseSplit):
        return batch.y.tolist()
    if isinstance(batch, SparseSplit):
        return (batch.indices[batch.offsets[:-1]] // 2).tolist()
    return batch.user.tolist()


@pytest.mark.parametrize("split", [
    DenseSplit(torch.zeros(50, 2), torch.arange(50)),
    SparseSplit(torch.arange(100), torch.arange(0, 101, 2), torch.ones(100), (torch.arange(50) % 2).float()),
    RatingsSplit(torch.arange(50), torch.arange(50) % 7, torch.arange(50.0)),
], ids=["dense", "sparse", "ratings"])
def test_workers_together_see_every_example_once_per_epoch(split):
    seen = [i for w in range(3) for batch in DataShard(split, w, 3, batch_size=4, seed=0).batches(0)
            for i in example_ids(batch)]
    assert sorted(seen) == list(range(50))


# -- order ----------------------------------------------------------------------------

def test_each_epoch_is_a_fresh_permutation_of_the_shard():
    shard = DataShard(numbered(60), 1, 2, batch_size=7, seed=3)
    batches = first_epochs(shard, 3)
    per_epoch = shard.batches_per_epoch
    epochs = [sum((ids(b) for b in batches[e * per_epoch:(e + 1) * per_epoch]), []) for e in range(3)]
    assert all(sorted(e) == shard.indices.tolist() for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]


def test_order_is_deterministic_by_seed_worker_and_epoch():
    split = numbered(60)
    first = [ids(b) for b in first_epochs(DataShard(split, 0, 2, batch_size=5, seed=3), 2)]
    again = [ids(b) for b in first_epochs(DataShard(split, 0, 2, batch_size=5, seed=3), 2)]
    other_seed = [ids(b) for b in first_epochs(DataShard(split, 0, 2, batch_size=5, seed=4), 2)]
    assert first == again and first != other_seed
    a, b = DataShard(split, 0, 1, batch_size=5, seed=3), DataShard(split, 0, 2, batch_size=5, seed=3)
    assert a.epoch_order(0).tolist() != a.epoch_order(1).tolist()
    assert b.epoch_order(0).tolist() == b.epoch_order(0).tolist()


# -- batch sizes and the epoch counter -------------------------------------------------------------

def test_batch_size_n_keeps_the_last_partial_batch():
    shard = DataShard(numbered(23), 0, 1, batch_size=5, seed=0)
    assert [len(b) for b in shard.batches(0)] == [5, 5, 5, 5, 3]
    assert shard.batches_per_epoch == 5 and len(shard) == 23


def test_batch_size_one_is_stochastic_gradient_descent():
    batches = first_epochs(DataShard(numbered(9), 0, 1, batch_size=1, seed=0), 2)
    assert len(batches) == 18 and all(len(b) == 1 for b in batches)


def test_batch_size_full_is_the_whole_shard_every_step():
    shard = DataShard(numbered(30), 2, 3, batch_size="full", seed=0)
    batches = first_epochs(shard, 3)
    assert len(batches) == 3 and all(sorted(ids(b)) == shard.indices.tolist() for b in batches)
    assert all(b is shard.data for b in batches)  # no copy per step


def test_batch_size_larger_than_the_shard_is_one_batch():
    assert [len(b) for b in first_epochs(DataShard(numbered(10), 0, 2, batch_size=64, seed=0), 2)] == [5, 5]


@pytest.mark.parametrize("n, num_workers, batch_size", [
    (23, 1, 5), (65, 2, 16), (100, 3, 32), (10, 3, 3), (10, 4, 64), (31, 3, 1), (31, 3, "full")])
def test_every_worker_counts_every_workers_batches_as_they_come(n, num_workers, batch_size):
    # What synchronous SGD weighs a round's gradients by: shards of 32 and 33 in batches of 16 make
    # epochs of 2 and 3 batches, so the workers' short batches drift apart over the epochs.
    shards = [DataShard(numbered(n), w, num_workers, batch_size=batch_size, seed=0) for w in range(num_workers)]
    steps = 3 * max(shard.batches_per_epoch for shard in shards)
    lengths = list(zip(*([len(b) for b in islice(iter(shard), steps)] for shard in shards)))
    for shard in shards:
        assert [shard.batch_sizes(step) for step in range(steps)] == [list(step) for step in lengths]
    with pytest.raises(ValueError, match=re.escape("Invalid step: -1 (step must be an integer >= 0)")):
        shards[0].batch_sizes(-1)


def test_the_epoch_counter():
    shard = DataShard(numbered(20), 0, 1, batch_size=6, seed=0)  # 4 batches an epoch
    epochs = [shard.epoch for _ in islice(shard, 10)]
    assert epochs == [0] * 4 + [1] * 4 + [2] * 2
    forever = DataShard(numbered(20), 0, 1, batch_size=6, seed=0)
    assert len(list(islice(forever, 1000))) == 1000 and forever.epoch == 249


# -- curricula -------------------------------------------------------------------------

def test_dense_difficulty_is_normalized_distance_to_the_class_mean():
    x = torch.tensor([[0.0], [2.0], [1.0], [10.0], [30.0], [20.0]]).view(6, 1, 1)
    score = difficulty(DenseSplit(x, torch.tensor([0, 0, 0, 1, 1, 1])))
    # class 0: mean 1, distances 1 1 0 (mean 2/3); class 1: mean 20, distances 10 10 0 (mean 20/3)
    assert np.allclose(score, [1.5, 1.5, 0, 1.5, 1.5, 0])


def test_sparse_difficulty_is_the_mean_rarity_of_the_features():
    # feature 0 in every example, feature 1 in two, feature 2 in one
    split = SparseSplit(torch.tensor([0, 0, 1, 0, 1, 2]), torch.tensor([0, 1, 3, 6]), torch.ones(6), torch.zeros(3))
    score = difficulty(split)
    assert np.allclose(score, [0, np.log(1.5) / 2, (np.log(1.5) + np.log(3)) / 3])
    assert difficulty(SparseSplit(torch.tensor([0]), torch.tensor([0, 0, 1]), torch.ones(1), torch.zeros(2)))[0] == 0


def test_ratings_difficulty_is_the_distance_to_the_mean_rating():
    split = RatingsSplit(torch.arange(4), torch.arange(4), torch.tensor([1.0, 2.0, 3.0, 6.0]))
    assert np.allclose(difficulty(split), [2, 1, 0, 3])


def test_difficulty_refuses_other_types():
    with pytest.raises(TypeError, match=r"Invalid split: list \(expected a DenseSplit, SparseSplit or RatingsSplit\)"):
        difficulty([1, 2])


def test_easy_to_hard_presents_each_epoch_sorted_by_difficulty():
    split = DenseSplit(torch.randn(90, 1, 4, generator=torch.Generator().manual_seed(0)), torch.arange(90) % 3)
    score = difficulty(split)
    shard = DataShard(split, 1, 2, batch_size=8, seed=0, curriculum="easy_to_hard")
    order = torch.cat([shard.indices[torch.from_numpy(shard.epoch_order(e))] for e in range(2)])
    presented = [x for b in first_epochs(shard, 2) for x in b.x.view(len(b), -1)]
    assert all(torch.equal(p, split.x[i].view(-1)) for p, i in zip(presented, order))
    for e in range(2):
        assert (np.diff(score[epoch_ids(shard, e)]) >= 0).all()


def test_easy_to_hard_shuffles_ties_by_epoch():
    split = RatingsSplit(torch.arange(40), torch.arange(40), torch.tensor([1.0, -1.0] * 20))  # all |r - 0| = 1
    shard = DataShard(split, 0, 1, batch_size=4, seed=0, curriculum="easy_to_hard")
    assert epoch_ids(shard, 0) != epoch_ids(shard, 1)


def test_mixed_interleaves_a_sorted_half_with_a_random_half():
    rating = torch.randn(80, generator=torch.Generator().manual_seed(1))
    split = RatingsSplit(torch.arange(80), torch.arange(80), rating)
    score = difficulty(split)
    shard = DataShard(split, 0, 1, batch_size=4, seed=0, curriculum="mixed")
    for epoch in range(3):
        order = epoch_ids(shard, epoch)
        assert sorted(order) == list(range(80))
        curriculum, random = order[0::2], order[1::2]  # equal halves alternate: C R C R ...
        assert (np.diff(score[curriculum]) >= 0).all()
        assert not (np.diff(score[random]) >= 0).all()
    assert MIXED_RANDOM_FRACTION == 0.5
    assert epoch_ids(shard, 0)[1::2] != epoch_ids(shard, 1)[1::2]


def test_interleave_keeps_each_stream_at_its_share_in_every_batch():
    curriculum, random = np.arange(15), 100 + np.arange(16)
    order = interleave(curriculum, random)
    assert sorted(order) == sorted(np.concatenate([curriculum, random]))
    assert (np.diff(order[order < 100]) > 0).all() and (np.diff(order[order >= 100]) > 0).all()  # stream order kept
    for start in range(0, 31, 6):
        from_curriculum = (order[start:start + 6] < 100).sum()
        assert abs(from_curriculum - len(order[start:start + 6]) / 2) <= 1


def test_mixed_with_an_odd_shard_still_presents_every_example_once():
    split = RatingsSplit(torch.arange(31), torch.arange(31), torch.arange(31.0))
    shard = DataShard(split, 0, 1, batch_size=6, seed=2, curriculum="mixed")
    batches = list(shard.batches(0))
    assert sorted(sum((b.user.tolist() for b in batches), [])) == list(range(31))
    assert [len(b) for b in batches] == [6, 6, 6, 6, 6, 1]


# -- refusals ----------------------------------------------------------------------------

INVALID = [
    ({"batch_size": 0}, r"Invalid batch_size: 0 \(batch_size must be an integer >= 1 or 'full'\)"),
    ({"batch_size": 2.5}, r"Invalid batch_size: 2.5 \(batch_size must be an integer >= 1 or 'full'\)"),
    ({"batch_size": True}, r"Invalid batch_size: True"),
    ({"batch_size": "all"}, r"Invalid batch_size: 'all'"),
    ({"curriculum": "hard_first"}, r"Invalid curriculum: 'hard_first' \(choose one of \['none', 'easy_to_hard', "
                                   r"'mixed'\]\)"),
    ({"worker": -1}, r"Invalid worker: -1 \(worker must be an integer >= 0\)"),
    ({"worker": 4}, r"Invalid worker: 4 \(worker must be in \[0, num_workers=4\)\)"),
    ({"num_workers": 0, "worker": 0}, r"Invalid num_workers: 0 \(num_workers must be an integer >= 1\)"),
    ({"num_workers": 11, "worker": 0}, r"Invalid num_workers: 11 \(each worker needs at least one example: "
                                       r"num_workers must be <= len\(split\) = 10\)"),
    ({"seed": -2}, r"Invalid seed: -2 \(seed must be an integer >= 0\)"),
]


@pytest.mark.parametrize("override, message", INVALID, ids=[str(o) for o, _ in INVALID])
def test_invalid_shard_request_is_refused_with_the_fix(override, message):
    args = {"worker": 1, "num_workers": 4, "batch_size": 2, "seed": 0, **override}
    with pytest.raises(ValueError, match=message):
        DataShard(numbered(10), args.pop("worker"), args.pop("num_workers"), **args)


def test_every_curriculum_runs():
    for curriculum in CURRICULA:
        assert len(list(DataShard(numbered(12), 0, 2, batch_size=4, seed=0, curriculum=curriculum).batches(0))) == 2


def test_a_growing_batch_grows_by_its_factor_at_each_epoch_given_and_the_steps_count_it():
    from asyncps.workers.splits import DenseSplit

    split = DenseSplit(torch.zeros(100, 2), torch.zeros(100, dtype=torch.int64))
    shard = DataShard(split, 0, 1, batch_size=10, seed=0, growth=(2.0, (1, 3)))
    assert [shard.batch_size_at(e) for e in range(5)] == [10, 20, 20, 40, 40]
    assert [shard.batches_in(e) for e in range(4)] == [10, 5, 5, 3]
    assert shard.steps_for(3.5) == 10 + 5 + 5 + 2
    sizes = [len(batch) for _, batch in zip(range(23), shard)]
    assert sizes == [10] * 10 + [20] * 10 + [40, 40, 20]
    assert DataShard(split, 0, 1, batch_size=60, seed=0, growth=(2.0, (1,))).batch_size_at(1) == 100  # the shard


def test_every_workers_batch_sizes_follow_a_growing_batch_as_its_own_shard_yields_them():
    from asyncps.workers.splits import DenseSplit

    split = DenseSplit(torch.zeros(103, 2), torch.zeros(103, dtype=torch.int64))
    shards = [DataShard(split, w, 3, batch_size=6, seed=0, growth=(2.0, (1, 2))) for w in range(3)]
    yielded = [[len(batch) for _, batch in zip(range(40), shard)] for shard in shards]
    for step in range(40):
        assert shards[0].batch_sizes(step) == [sizes[step] for sizes in yielded]
