"""InProcessClient: one worker's view of every shard, against single-tensor oracles."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import pytest
import torch

import optim
from ps import ApplyEach, InProcessClient, Layout, Pulled, Shard, make_shards

# 19 floats over 3 shards, cut at 6 and 12: "w" (15 floats) straddles all three.
DENSE = {"w": (3, 5), "b": (4,)}
SIZE, SHARDS, TABLE_ROWS, DIM = 19, 3, 11, 2


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def initial_flat():
    return randn(SIZE)


def initial_table():
    return randn(TABLE_ROWS, DIM, seed=1)


def build(opt=None, num_shards=SHARDS):
    layout = Layout(DENSE, {"emb": (TABLE_ROWS, DIM)}, num_shards=num_shards)
    shards = make_shards(layout, initial_flat(), {"emb": initial_table()}, ApplyEach(opt or optim.SGD(lr=0.1)))
    return layout, shards


def assert_same(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def states(shards):
    return [shard.state_dict() for shard in shards]


# -- dense ---------------------------------------------------------------------------------
def test_pull_returns_one_part_per_shard_and_flat_concatenates_them():
    layout, shards = build()
    client = InProcessClient(layout, shards, worker=0)
    pulled = asyncio.run(client.pull())
    assert len(pulled.parts) == SHARDS
    assert pulled.versions == [0] * SHARDS
    for shard, r, part in zip(shards, layout.ranges, pulled.parts):
        assert part is shard.pull(reader="probe")[0]  # the published snapshot itself
        assert torch.equal(part, initial_flat()[r.start:r.stop])
    assert torch.equal(pulled.flat(), initial_flat())
    assert torch.equal(layout.unflatten(pulled.flat())["w"], initial_flat()[:15].view(3, 5))


def test_flat_of_one_shard_is_the_part_and_out_receives_the_concatenation():
    one = Pulled([initial_flat()], [0])
    assert one.flat() is one.parts[0]
    out = torch.empty(SIZE)
    many = Pulled([initial_flat()[:6], initial_flat()[6:]], [0, 0])
    assert many.flat(out=out) is out
    assert torch.equal(out, initial_flat())


def test_push_splits_the_gradient_over_the_shards():
    layout, shards = build()
    client = InProcessClient(layout, shards, worker=5)
    opt = optim.SGD(lr=0.1)
    oracle = initial_flat()
    state = opt.init(oracle)
    grad = randn(SIZE, seed=2)
    pulled = asyncio.run(client.pull())
    pushes = asyncio.run(client.push(grad, pulled.versions))
    opt.step(oracle, grad, state)
    assert [(p.shard, p.worker, p.staleness, p.applied) for p in pushes] == [(s, 5, 0, True) for s in range(SHARDS)]
    assert torch.equal(asyncio.run(client.pull()).flat(), oracle)
    # Pushing again from the same (now stale) read: every shard has moved on by one.
    pushes = asyncio.run(client.push(grad, pulled.versions))
    assert [p.staleness for p in pushes] == [1] * SHARDS
    assert asyncio.run(client.pull()).versions == [2] * SHARDS


@pytest.mark.parametrize("grad, versions, message", [
    (torch.zeros(SIZE - 1), [0] * SHARDS,
     r"Invalid gradient: \(18,\) \(expected shape \(19,\), the model's flat dense vector\)"),
    (torch.zeros(1, SIZE), [0] * SHARDS,
     r"Invalid gradient: \(1, 19\) \(expected shape \(19,\), the model's flat dense vector\)"),
    ([0.0] * SIZE, [0] * SHARDS, r"Invalid gradient: list \(expected shape \(19,\)"),
    (torch.zeros(SIZE), [0] * (SHARDS - 1),
     r"Invalid versions: 2 given \(one per shard expected: 3\); pass back what pull returned"),
    (torch.zeros(SIZE), [0] * (SHARDS + 1), r"Invalid versions: 4 given \(one per shard expected: 3\)"),
], ids=["short", "2d", "list", "too_few_versions", "too_many_versions"])
def test_a_bad_push_says_what_is_wrong_and_changes_nothing(grad, versions, message):
    layout, shards = build(optim.Adam(lr=0.1))
    client = InProcessClient(layout, shards, worker=0)
    asyncio.run(client.push(randn(SIZE, seed=2), [0] * SHARDS))
    before = states(shards)
    with pytest.raises(ValueError, match=message):
        asyncio.run(client.push(grad, versions))
    assert_same(states(shards), before)


@pytest.mark.parametrize("bad, message", [
    ("nan_in_last_shard", r"Invalid gradient for shard 2: 1 non-finite values \(NaN or Inf\); nothing was applied"),
    ("future_version_of_last_shard", r"Invalid read_version for shard 2: 1 \(must be a version this shard has had"),
    ("float64", r"Invalid gradient dtype for shard 0: torch.float64 \(shards hold torch.float32\)"),
], ids=lambda v: v if " " not in v else "")
def test_a_push_refused_by_one_shard_changes_no_shard(bad, message):
    # A push is one gradient of the whole model: applying it on some shards and
    # not on others leaves a model no worker ever computed a gradient for. The
    # client scans a float32 gradient whole; the refusal is still the shard's own.
    layout, shards = build()
    client = InProcessClient(layout, shards, worker=0)
    grad, versions = randn(SIZE, seed=2), [0] * SHARDS
    if bad == "nan_in_last_shard":
        grad[-1] = float("nan")
    elif bad == "float64":
        grad = grad.double()
    else:
        versions[-1] = 1
    before = states(shards)
    with pytest.raises(ValueError, match=message):
        asyncio.run(client.push(grad, versions))
    assert_same(states(shards), before)


def test_close_releases_the_clients_holds():
    layout, shards = build()
    reader, pusher = InProcessClient(layout, shards, worker=0), InProcessClient(layout, shards, worker=1)
    held = asyncio.run(reader.pull()).parts
    reader.close()
    asyncio.run(pusher.push(torch.ones(SIZE), asyncio.run(pusher.pull()).versions))
    for shard, part in zip(shards, held):
        assert shard.pull(reader="probe")[0] is part  # nobody held it: updated in place
    assert torch.equal(torch.cat(held), initial_flat() - 0.1)


def test_without_close_the_clients_snapshot_stays_put():
    layout, shards = build()
    reader, pusher = InProcessClient(layout, shards, worker=0), InProcessClient(layout, shards, worker=1)
    held = asyncio.run(reader.pull()).parts
    asyncio.run(pusher.push(torch.ones(SIZE), asyncio.run(pusher.pull()).versions))
    for shard, part in zip(shards, held):
        assert shard.pull(reader="probe")[0] is not part  # copy-on-write
    assert torch.equal(torch.cat(held), initial_flat())
    assert torch.equal(asyncio.run(reader.pull()).flat(), initial_flat() - 0.1)


def test_two_workers_see_their_own_staleness():
    layout, shards = build()
    first, second = InProcessClient(layout, shards, worker=0), InProcessClient(layout, shards, worker=1)

    async def both_read_then_both_push():
        read_first, read_second = await first.pull(), await second.pull()
        return (await first.push(randn(SIZE, seed=3), read_first.versions),
                await second.push(randn(SIZE, seed=4), read_second.versions))

    pushes_first, pushes_second = asyncio.run(both_read_then_both_push())
    assert [(p.worker, p.staleness) for p in pushes_first] == [(0, 0)] * SHARDS
    assert [(p.worker, p.staleness) for p in pushes_second] == [(1, 1)] * SHARDS
    for shard in shards:
        assert dict(shard.staleness) == {0: Counter({0: 1}), 1: Counter({1: 1})}


def test_pull_waits_for_min_versions():
    layout, shards = build()
    waiter, pusher = InProcessClient(layout, shards, worker=0), InProcessClient(layout, shards, worker=1)
    asked, pulled = threading.Event(), {}

    def wait_for_version_1():
        asked.set()
        pulled["versions"] = asyncio.run(waiter.pull(min_versions=[1] * SHARDS)).versions

    thread = threading.Thread(target=wait_for_version_1, daemon=True)  # daemon: a failure must not hang pytest
    thread.start()
    asked.wait()
    asyncio.run(pusher.push(torch.ones(SIZE), [0] * SHARDS))
    thread.join(timeout=30)
    assert pulled["versions"] == [1] * SHARDS


def test_client_refuses_a_wrong_number_of_shards():
    layout, shards = build()
    with pytest.raises(ValueError, match=r"Invalid shards: 2 given for a layout of 3"):
        InProcessClient(layout, shards[:2], worker=0)


# -- sparse rows -------------------------------------------------------------------------------
# Row ids spread over all three shards, with duplicates within and across shards.
ROW_BATCHES = [
    torch.tensor([10, 0, 3, 3, 7, 1, 10, 5]),
    torch.tensor([2, 2, 2, 4, 9, 0]),
    torch.tensor([8, 1, 6, 6, 10, 3, 5]),
]
SKIPPING_A_SHARD = [torch.tensor([0, 9, 3, 3]), torch.tensor([1, 4, 7, 4])]  # only ids % 3 == 0, then == 1


@pytest.mark.parametrize("make_opt, batches", [
    (lambda: optim.SGD(lr=0.1), ROW_BATCHES + SKIPPING_A_SHARD),
    (lambda: optim.SGD(lr=0.1, momentum=0.9), ROW_BATCHES + SKIPPING_A_SHARD),
    # Each shard keeps its own Adam step count for its rows, so the bias
    # corrections agree with one whole table only while every push reaches every shard.
    (lambda: optim.Adam(lr=0.05), ROW_BATCHES),
], ids=["sgd", "momentum", "adam"])
def test_rows_over_shards_equal_one_whole_table(make_opt, batches):
    layout, shards = build(make_opt())
    client = InProcessClient(layout, shards, worker=0)
    whole = Shard(0, torch.zeros(0), {"emb": initial_table()}, ApplyEach(make_opt()))
    for step, rows in enumerate(batches):
        grad_rows = randn(rows.numel(), DIM, seed=10 + step)
        values, versions = asyncio.run(client.pull_rows("emb", rows))
        expected, _ = whole.pull_rows("emb", rows)
        assert torch.equal(values, expected)
        assert sorted(versions) == sorted(set((rows % SHARDS).tolist()))  # a version from each shard read
        pushes = asyncio.run(client.push_rows("emb", rows, grad_rows, versions))
        assert sorted(p.shard for p in pushes) == sorted(versions)
        whole.push_rows("emb", rows, grad_rows, whole.version)
        assert torch.equal(layout.join_table("emb", [s.tables["emb"] for s in shards]), whole.tables["emb"])


def test_pull_rows_of_no_rows():
    layout, shards = build()
    values, versions = asyncio.run(InProcessClient(layout, shards, worker=0).pull_rows("emb", torch.zeros(0).long()))
    assert values.shape == (0, DIM) and versions == {}


def test_push_rows_without_a_version_for_every_shard_reached_changes_nothing():
    layout, shards = build()
    client = InProcessClient(layout, shards, worker=0)
    rows = torch.tensor([0, 1, 2, 5])
    _, versions = asyncio.run(client.pull_rows("emb", rows))
    del versions[2]
    before = states(shards)
    message = r"Invalid versions: none for shards \[2\] \(pass back what pull_rows returned\)"
    with pytest.raises(ValueError, match=message):
        asyncio.run(client.push_rows("emb", rows, torch.ones(4, DIM), versions))
    assert_same(states(shards), before)


@pytest.mark.parametrize("num_grad_rows", [2, 5])
def test_push_rows_refuses_a_gradient_row_count_unlike_the_ids(num_grad_rows):
    # Shard 0 gets positions [0, 1], shard 1 positions [2, 3]: with two gradient
    # rows shard 0 would be updated before shard 1 failed; with five, the last
    # row would be dropped silently.
    layout, shards = build()
    client = InProcessClient(layout, shards, worker=0)
    rows = torch.tensor([0, 3, 1, 4])
    _, versions = asyncio.run(client.pull_rows("emb", rows))
    before = states(shards)
    with pytest.raises(ValueError, match=r"grad"):
        asyncio.run(client.push_rows("emb", rows, torch.ones(num_grad_rows, DIM), versions))
    assert_same(states(shards), before)


def test_rows_refuse_unknown_tables_and_ids_out_of_range():
    layout, shards = build()
    client = InProcessClient(layout, shards, worker=0)
    with pytest.raises(ValueError, match=r"Invalid table: 'nope' \(known tables are \['emb'\]\)"):
        asyncio.run(client.pull_rows("nope", torch.tensor([0])))
    with pytest.raises(ValueError, match=r"Invalid row ids of table 'emb': \(0, 11\) \(ids must be in \[0, 11\)\)"):
        asyncio.run(client.push_rows("emb", torch.tensor([0, 11]), torch.ones(2, DIM), {0: 0, 2: 0}))
