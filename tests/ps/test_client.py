"""InProcessClient: one worker's view of every shard, against single-tensor
oracles; its refusals; version waits on threads and through an injected wait."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
import torch

from asyncps import optim
from asyncps.ps import ApplyEach, InProcessClient, Layout, Shard, ShardClosed, Versions, make_shards

# 19 floats over 3 shards, cut at 6 and 12: "w" (15 floats) straddles all three.
DENSE = {"w": (3, 5), "b": (4,)}
SIZE, SHARDS, TABLE_ROWS, DIM = 19, 3, 11, 2
START = Versions((0,) * SHARDS)


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


def pull(client, at_least=0) -> tuple[torch.Tensor, Versions]:
    out = torch.full((SIZE,), float("nan"))
    return out, asyncio.run(client.pull(out, at_least))


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


def watch_waits(shard: Shard) -> threading.Event:
    """Set once a read of ``shard`` found its version not reached. The read
    asks under its publication's lock and keeps it until it waits, so a push that
    starts after the event is set finds the read waiting (no sleeps needed)."""
    waiting = threading.Event()
    reached = shard.dense.reached

    def spy(at_least: int) -> bool:
        answer = reached(at_least)
        if not answer:
            waiting.set()
        return answer

    shard.dense.reached = spy
    return waiting


@contextmanager
def pulling_thread(shards):
    """A thread for a pull that waits; the shards close on the way out, so a
    failing test ends that pull instead of hanging on it."""
    with ThreadPoolExecutor(1) as pool:
        try:
            yield pool
        finally:
            for shard in shards:
                shard.close()


# -- Versions ---------------------------------------------------------------------------------
def test_versions_are_one_per_shard_and_read_as_the_oldest():
    versions = Versions((3, 1, 2))
    assert int(versions) == 1
    assert versions.next() == Versions((4, 2, 3))
    assert versions == Versions((3, 1, 2)) and versions != Versions((3, 1, 3)) and versions != (3, 1, 2)
    assert repr(versions) == "Versions(3, 1, 2)"


# -- dense ---------------------------------------------------------------------------------
def test_pull_copies_every_shard_into_the_callers_vector():
    layout, shards = build()
    client = InProcessClient(layout, shards, worker=0)
    out = torch.full((SIZE,), float("nan"))
    read = asyncio.run(client.pull(out))
    assert read == START
    assert torch.equal(out, initial_flat())
    assert torch.equal(layout.unflatten(out)["w"], initial_flat()[:15].view(3, 5))
    out.fill_(7.0)  # the worker's own copy: the shards are untouched
    assert torch.equal(pull(client)[0], initial_flat())
    asyncio.run(client.push(torch.ones(SIZE), read))
    assert torch.equal(out, torch.full((SIZE,), 7.0))  # and a push leaves the worker's copy alone


def test_push_splits_the_gradient_over_the_shards():
    layout, shards = build()
    client = InProcessClient(layout, shards, worker=5)
    opt = optim.SGD(lr=0.1)
    oracle = initial_flat()
    state = opt.init(oracle)
    grad = randn(SIZE, seed=2)
    _, read = pull(client)
    pushes = asyncio.run(client.push(grad, read))
    opt.step(oracle, grad, state)
    assert [(p.shard, p.worker, p.staleness, p.applied) for p in pushes] == [(s, 5, 0, True) for s in range(SHARDS)]
    assert torch.equal(pull(client)[0], oracle)
    # Pushing again from the same (now stale) read: every shard has moved on by one.
    pushes = asyncio.run(client.push(grad, read))
    assert [p.staleness for p in pushes] == [1] * SHARDS
    assert pull(client)[1] == Versions((2,) * SHARDS)


def test_a_strided_gradient_or_one_that_requires_grad_is_pushed_as_its_values():
    layout, shards = build()
    _, expected = build()
    grad = randn(SIZE, seed=2)
    strided = torch.stack([grad, grad], dim=1)[:, 0]
    assert not strided.is_contiguous()
    asyncio.run(InProcessClient(layout, shards, worker=0).push(strided, START))
    asyncio.run(InProcessClient(layout, shards, worker=0).push(grad.clone().requires_grad_(), START))
    client = InProcessClient(layout, expected, worker=0)
    asyncio.run(client.push(grad, START))
    asyncio.run(client.push(grad, START))
    assert_same(states(shards), states(expected))


def with_value(value: float, position: int) -> torch.Tensor:
    grad = randn(SIZE, seed=3)
    grad[position] = value
    return grad


NON_FINITE = "1 non-finite values (NaN or Inf); nothing was applied"
VERSIONS_HINT = "(pass back the Versions that pull returned)"
BAD_PUSHES = {
    "short": (torch.zeros(SIZE - 1), START, "Invalid gradient shape for the model: (18,) (expected (19,))"),
    "2d": (torch.zeros(1, SIZE), START, "Invalid gradient shape for the model: (1, 19) (expected (19,))"),
    "list": ([0.0] * SIZE, START, "Invalid gradient for the model: expected a torch tensor, got list"),
    "float64": (torch.zeros(SIZE, dtype=torch.float64), START,
                "Invalid gradient dtype for the model: torch.float64 (shards hold torch.float32)"),
    "nan_in_the_last_shard": (with_value(float("nan"), -1), START, f"Invalid gradient for the model: {NON_FINITE}"),
    "inf_in_the_first_shard": (with_value(float("inf"), 0), START, f"Invalid gradient for the model: {NON_FINITE}"),
    "too_few_versions": (torch.zeros(SIZE), Versions((0,) * (SHARDS - 1)),
                         f"Invalid versions: Versions(0, 0) {VERSIONS_HINT}"),
    "too_many_versions": (torch.zeros(SIZE), Versions((0,) * (SHARDS + 1)),
                          f"Invalid versions: Versions(0, 0, 0, 0) {VERSIONS_HINT}"),
    "a_list_of_versions": (torch.zeros(SIZE), [0] * SHARDS, f"Invalid versions: [0, 0, 0] {VERSIONS_HINT}"),
    "an_int_version": (torch.zeros(SIZE), 0, f"Invalid versions: 0 {VERSIONS_HINT}"),
    "a_future_version_of_the_last_shard": (torch.zeros(SIZE), Versions((1, 1, 2)),
                                           "Invalid read_version for shard 2: 2 "
                                           "(must be a version this shard has had, 0..1)"),
}


@pytest.mark.parametrize("case", BAD_PUSHES)
def test_a_bad_push_says_what_is_wrong_and_changes_no_shard(case):
    # A push is one gradient of the whole model: applying it on some shards and
    # not on others leaves a model no worker ever computed a gradient for.
    grad, read, message = BAD_PUSHES[case]
    layout, shards = build(optim.Adam(lr=0.1))
    client = InProcessClient(layout, shards, worker=0)
    asyncio.run(client.push(randn(SIZE, seed=2), START))
    before = states(shards)
    with pytest.raises(ValueError) as refused:
        asyncio.run(client.push(grad, read))
    assert str(refused.value) == message
    assert_same(states(shards), before)


BUFFER_HINT = "(expected a contiguous float32 vector of 19, the model's flat dense size, not requiring grad)"
AT_LEAST_HINT = "(wait for a number of updates, an integer >= 0, or for the Versions a pull returned)"
BAD_PULLS = {
    "short": (torch.empty(SIZE - 1), 0, f"Invalid pull buffer: torch.float32 (18,) {BUFFER_HINT}"),
    "2d": (torch.empty(1, SIZE), 0, f"Invalid pull buffer: torch.float32 (1, 19) {BUFFER_HINT}"),
    "float64": (torch.empty(SIZE, dtype=torch.float64), 0, f"Invalid pull buffer: torch.float64 (19,) {BUFFER_HINT}"),
    "strided": (torch.empty(2 * SIZE)[::2], 0, f"Invalid pull buffer: torch.float32 (19,) {BUFFER_HINT}"),
    "list": ([0.0] * SIZE, 0, f"Invalid pull buffer: list {BUFFER_HINT}"),
    "too_few_versions": (torch.empty(SIZE), Versions((0, 0)), f"Invalid versions: Versions(0, 0) {VERSIONS_HINT}"),
    "requires_grad": (torch.empty(SIZE, requires_grad=True), 0,
                      f"Invalid pull buffer: torch.float32 (19,) {BUFFER_HINT}"),
    "at_least_list": (torch.empty(SIZE), [0, 0, 0], f"Invalid at_least: [0, 0, 0] {AT_LEAST_HINT}"),
    "at_least_bool": (torch.empty(SIZE), True, f"Invalid at_least: True {AT_LEAST_HINT}"),
    "at_least_float": (torch.empty(SIZE), 0.5, f"Invalid at_least: 0.5 {AT_LEAST_HINT}"),
    "at_least_negative": (torch.empty(SIZE), -1, f"Invalid at_least: -1 {AT_LEAST_HINT}"),
}


@pytest.mark.parametrize("case", BAD_PULLS)
def test_a_bad_pull_says_what_is_wrong(case):
    out, at_least, message = BAD_PULLS[case]
    layout, shards = build()
    with pytest.raises(ValueError) as refused:
        asyncio.run(InProcessClient(layout, shards, worker=0).pull(out, at_least))
    assert str(refused.value) == message


def test_two_workers_see_their_own_staleness():
    layout, shards = build()
    first, second = InProcessClient(layout, shards, worker=0), InProcessClient(layout, shards, worker=1)

    async def both_read_then_both_push():
        read_first, read_second = await first.pull(torch.empty(SIZE)), await second.pull(torch.empty(SIZE))
        return (await first.push(randn(SIZE, seed=3), read_first),
                await second.push(randn(SIZE, seed=4), read_second))

    pushes_first, pushes_second = asyncio.run(both_read_then_both_push())
    assert [(p.worker, p.staleness) for p in pushes_first] == [(0, 0)] * SHARDS
    assert [(p.worker, p.staleness) for p in pushes_second] == [(1, 1)] * SHARDS
    for shard in shards:
        assert dict(shard.staleness) == {0: Counter({0: 1}), 1: Counter({1: 1})}


# -- version waits -------------------------------------------------------------------------------
def test_pull_waits_until_every_shard_reached_the_version():
    layout, shards = build()
    waiter, pusher = InProcessClient(layout, shards, worker=0), InProcessClient(layout, shards, worker=1)
    waiting = watch_waits(shards[0])
    with pulling_thread(shards) as pool:
        pulled = pool.submit(pull, waiter, 1)
        assert waiting.wait(timeout=30)
        asyncio.run(pusher.push(torch.ones(SIZE), START))
        out, read = pulled.result(timeout=30)
    assert read == Versions((1,) * SHARDS)
    assert torch.equal(out, initial_flat() - 0.1)


def test_each_shard_waits_for_its_own_version_when_given_versions():
    layout, shards = build()
    waiter, pusher = InProcessClient(layout, shards, worker=0), InProcessClient(layout, shards, worker=1)
    rows = torch.tensor([0, 3, 9])  # all on shard 0: only it moves on
    _, versions = asyncio.run(pusher.pull_rows("emb", rows))
    asyncio.run(pusher.push_rows("emb", rows, torch.ones(3, DIM), versions))
    out, read = pull(waiter, Versions((1, 0, 0)))  # reached: answers at once
    assert read == Versions((1, 0, 0)) and int(read) == 0
    assert torch.equal(out, initial_flat())
    waiting = watch_waits(shards[0])
    with pulling_thread(shards) as pool:
        pulled = pool.submit(pull, waiter, read.next())  # every shard one past what was read
        assert waiting.wait(timeout=30)
        asyncio.run(pusher.push(torch.ones(SIZE), read))
        out, later = pulled.result(timeout=30)
    assert later == Versions((2, 1, 1)) == read.next()
    assert torch.equal(out, initial_flat() - 0.1)


def test_closing_the_shards_ends_a_waiting_pull_with_shard_closed():
    layout, shards = build()
    waiter = InProcessClient(layout, shards, worker=0)
    waiting = watch_waits(shards[0])
    with pulling_thread(shards) as pool:
        pulled = pool.submit(pull, waiter, 1)
        assert waiting.wait(timeout=30)
        for shard in shards:
            shard.close()
        with pytest.raises(ShardClosed) as closed:
            pulled.result(timeout=30)
    assert str(closed.value) == "shard 0 closed at version 0 before 1"


def test_a_pull_given_a_wait_waits_through_it_and_not_on_the_shards():
    # The simulator's wait: the pull hands it a test of whether the versions are
    # there, and the scheduler runs other workers (here, one push) until they are.
    layout, shards = build()
    pusher = InProcessClient(layout, shards, worker=1)
    answers = []

    async def wait(ready):
        answers.append(ready())
        await pusher.push(torch.ones(SIZE), START)
        answers.append(ready())

    waiter = InProcessClient(layout, shards, worker=0, wait=wait)
    out, read = pull(waiter, 1)
    assert answers == [False, True]
    assert read == Versions((1,) * SHARDS)
    assert torch.equal(out, initial_flat() - 0.1)
    pull(waiter, read)  # reached: no wait
    assert answers == [False, True]


def test_client_refuses_a_wrong_number_of_shards():
    layout, shards = build()
    with pytest.raises(ValueError) as refused:
        InProcessClient(layout, shards[:2], worker=0)
    assert str(refused.value) == "Invalid shards: 2 given for a layout of 3"


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


ROWS = torch.tensor([0, 3, 1, 4, 2])  # shard 0 gets positions [0, 1], shard 1 [2, 3], shard 2 [4]


def with_bad(value: float, position: int) -> torch.Tensor:
    grad_rows = torch.ones(ROWS.numel(), DIM)
    grad_rows[position, 1] = value
    return grad_rows


BAD_ROW_PUSHES = {
    # With four gradient rows shard 0 would be updated before shard 2 failed;
    # with six, the last row would be dropped silently.
    "too_few_gradient_rows": (ROWS, torch.ones(4, DIM), None,
                              "Invalid row gradients: torch.float32 (4, 2) (expected (5, 2): one row per id)"),
    "too_many_gradient_rows": (ROWS, torch.ones(6, DIM), None,
                               "Invalid row gradients: torch.float32 (6, 2) (expected (5, 2): one row per id)"),
    "gradients_a_list": (ROWS, [[1.0] * DIM] * 5, None,
                         "Invalid row gradients: list (expected (5, 2): one row per id)"),
    "no_version_for_a_shard": (ROWS, torch.ones(5, DIM), 2,
                               "Invalid versions: none for shards [2] (pass back what pull_rows returned)"),
    "nan_for_the_last_shard": (ROWS, with_bad(float("nan"), 4), None,
                               f"Invalid row gradients for shard 2: {NON_FINITE}"),
    "inf_for_the_middle_shard": (ROWS, with_bad(float("inf"), 3), None,
                                 f"Invalid row gradients for shard 1: {NON_FINITE}"),
    "float64": (ROWS, torch.ones(5, DIM, dtype=torch.float64), None,
                "Invalid row gradients dtype for shard 0: torch.float64 (shards hold torch.float32)"),
    "ids_out_of_range": (torch.tensor([0, 11]), torch.ones(2, DIM), None,
                         "Invalid row ids of table 'emb': (0, 11) (ids must be in [0, 11))"),
    "ids_int32": (ROWS.int(), torch.ones(5, DIM), None,
                  "Invalid rows: '1-D torch.int32' (expected a 1-D torch.int64 vector of row ids)"),
}


@pytest.mark.parametrize("case", BAD_ROW_PUSHES)
def test_a_bad_row_push_says_what_is_wrong_and_changes_no_shard(case):
    rows, grad_rows, drop_version, message = BAD_ROW_PUSHES[case]
    layout, shards = build(optim.Adam(lr=0.1))
    client = InProcessClient(layout, shards, worker=0)
    _, versions = asyncio.run(client.pull_rows("emb", ROWS))
    if drop_version is not None:
        del versions[drop_version]
    before = states(shards)
    with pytest.raises(ValueError) as refused:
        asyncio.run(client.push_rows("emb", rows, grad_rows, versions))
    assert str(refused.value) == message
    assert_same(states(shards), before)


def test_rows_of_an_unknown_table_are_refused():
    layout, shards = build()
    client = InProcessClient(layout, shards, worker=0)
    for verb in (client.pull_rows("nope", torch.tensor([0])),
                 client.push_rows("nope", torch.tensor([0]), torch.ones(1, DIM), {0: 0})):
        with pytest.raises(ValueError) as refused:
            asyncio.run(verb)
        assert str(refused.value) == "Invalid table: 'nope' (known tables are ['emb'])"
