"""Shard: the update side. Version clock, staleness, the rule's updates in
place or copy-on-write, each refusal at the boundary, sparse rows,
checkpoints, concurrent pushes and reads on real threads, and the finite scan."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from asyncps import optim
from asyncps.ps import ApplyEach, Flat, Push, Shard, ShardClosed, checkpoint
from asyncps.ps.flat import MAX_ABS, NUMBA_SCAN_BELOW, all_usable

WIDTH, ROWS, DIM = 6, 5, 2


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def make_shard(opt=None, values=None, tables=None, index=0) -> Shard:
    values = randn(WIDTH) if values is None else values
    tables = {"emb": randn(ROWS, DIM, seed=1)} if tables is None else tables
    return Shard(index, values, tables, ApplyEach(opt or optim.SGD(lr=0.1)))


def receive(shard: Shard, grad, read_version, worker: int = 0) -> Push:
    """What a server does with a push it receives: check it, then apply it."""
    shard.check_push(grad, read_version, worker)
    return shard.push(Flat.of(grad), read_version, worker)


def receive_rows(shard: Shard, table, ids, grad_rows, read_version, worker: int = 0) -> Push:
    shard.check_push_rows(table, ids, grad_rows, read_version, worker)
    return shard.push_rows(table, ids, grad_rows, read_version, worker)


def pulled(shard: Shard) -> torch.Tensor:
    """A copy of the shard's values, as a pull makes it."""
    out = torch.empty(shard.size)
    shard.dense.copy_to(out.numpy())
    return out


def assert_same(a, b, where="state"):
    """Nested dicts, lists and tensors equal bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    else:
        assert a == b, where


class Recording:
    """A server rule with no optimizer: adds the gradient (``accept``) or keeps
    it and applies nothing (as synchronous SGD does until its round is full);
    either way it remembers what the shard told it."""

    def __init__(self, accept: bool = True):
        self.accept = accept
        self.calls = []

    def init(self, values):
        return {}

    def apply(self, values, grad, state, out, *, worker, staleness, version):
        self.calls.append(("dense", worker, staleness, version, out is None))
        if self.accept:
            np.add(values.array, grad.array, out=values.array if out is None else out.array)
        return self.accept

    def apply_rows(self, table, ids, grad_rows, state, *, worker, staleness, version):
        self.calls.append(("rows", worker, staleness, version))
        if self.accept:
            table.index_add_(0, ids, grad_rows)
        return self.accept

    def state_dict(self, state):
        return {}

    def load_state_dict(self, saved):
        return {}


# -- version and staleness --------------------------------------------------------
def test_version_starts_at_zero_and_counts_applied_pushes():
    shard = make_shard()
    assert shard.version == 0
    assert shard.dense.copy_to(np.empty(WIDTH, np.float32)) == 0
    shard.push(Flat.of(randn(WIDTH)), 0)
    shard.push(Flat.of(randn(WIDTH)), 1)
    shard.push_rows("emb", torch.tensor([1]), randn(1, DIM), 2)
    assert shard.version == 3
    assert shard.dense.copy_to(np.empty(WIDTH, np.float32)) == 3
    assert shard.pull_rows("emb", torch.tensor([0]))[1] == 3


def test_staleness_is_the_version_at_arrival_minus_the_version_read():
    shard = make_shard()
    first = shard.push(Flat.of(randn(WIDTH)), read_version=0, worker=0)
    second = shard.push(Flat.of(randn(WIDTH)), read_version=0, worker=1)  # read before the first push landed
    assert first == Push(shard=0, worker=0, read_version=0, version=0, applied=True)
    assert second == Push(shard=0, worker=1, read_version=0, version=1, applied=True)
    assert (first.staleness, second.staleness) == (0, 1)
    shard.push(Flat.of(randn(WIDTH)), read_version=0, worker=1)
    rows = shard.push_rows("emb", torch.tensor([0]), randn(1, DIM), read_version=1, worker=0)
    assert rows.staleness == 2
    assert dict(shard.staleness) == {0: Counter({0: 1, 2: 1}), 1: Counter({1: 1, 2: 1})}


def test_the_rule_is_told_the_worker_staleness_and_version_at_arrival():
    rule = Recording()
    shard = Shard(0, torch.zeros(WIDTH), {"emb": torch.zeros(ROWS, DIM)}, rule)
    shard.push(Flat.of(torch.ones(WIDTH)), 0, worker=3)
    shard.push(Flat.of(torch.ones(WIDTH)), 0, worker=4)
    shard.push_rows("emb", torch.tensor([2]), torch.ones(1, DIM), 1, worker=5)
    assert rule.calls == [("dense", 3, 0, 0, True), ("dense", 4, 1, 1, True), ("rows", 5, 1, 2)]
    assert torch.equal(pulled(shard), torch.full((WIDTH,), 2.0))


def test_a_push_the_rule_keeps_advances_nothing_but_its_staleness_is_recorded():
    rule = Recording(accept=False)
    shard = Shard(0, randn(WIDTH), {"emb": randn(ROWS, DIM, seed=1)}, rule)
    held, _ = shard.dense.acquire()  # held: the rule is handed a spare buffer, which is not published
    dense = shard.push(Flat.of(torch.ones(WIDTH)), 0, worker=1)
    shard.dense.release(held)
    rows = shard.push_rows("emb", torch.tensor([0]), torch.ones(1, DIM), 0, worker=2)
    assert dense == Push(shard=0, worker=1, read_version=0, version=0, applied=False)
    assert rows == Push(shard=0, worker=2, read_version=0, version=0, applied=False)
    assert rule.calls[0][-1] is False  # it was given an out
    assert shard.version == 0
    assert torch.equal(pulled(shard), randn(WIDTH))
    assert torch.equal(shard.tables["emb"], randn(ROWS, DIM, seed=1))
    assert dict(shard.staleness) == {1: Counter({0: 1}), 2: Counter({0: 1})}


# -- in place and copy-on-write ---------------------------------------------------------------
def test_with_no_read_in_progress_a_push_updates_the_published_values_in_place():
    shard = make_shard()
    published = shard.dense.values
    held, version = shard.dense.acquire()
    shard.dense.release(held)
    shard.push(Flat.of(torch.ones(WIDTH)), version)
    assert shard.dense.values is published
    assert torch.equal(published, randn(WIDTH) - 0.1)


def test_a_read_in_progress_is_unchanged_by_a_push():
    shard = make_shard()
    held, version = shard.dense.acquire()
    shard.push(Flat.of(torch.ones(WIDTH)), version, worker=1)
    assert torch.equal(held.flat.tensor, randn(WIDTH))  # copy-on-write: the read still sees version 0
    assert shard.dense.values is not held.flat.tensor
    assert torch.equal(pulled(shard), randn(WIDTH) - 0.1)
    shard.dense.release(held)


OPTIMIZERS = {
    "sgd": lambda: optim.SGD(lr=0.1),
    "nesterov": lambda: optim.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda: optim.Adam(lr=0.01),
}


@pytest.mark.parametrize("held", [False, True], ids=["in_place", "copy_on_write"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_pushes_equal_the_plain_optimizer(name, held):
    init = randn(WIDTH)
    shard = Shard(0, init, None, ApplyEach(OPTIMIZERS[name]()))
    opt = OPTIMIZERS[name]()
    oracle = init.clone()
    state = opt.init(oracle)
    for step in range(5):
        grad = randn(WIDTH, seed=10 + step)
        reading, version = shard.dense.acquire()
        before = reading.flat.tensor.clone()
        if not held:
            shard.dense.release(reading)  # the read is over: the update goes in place
        shard.push(Flat.of(grad), version)
        opt.step(oracle, grad, state)
        if held:  # a read in progress: the update went to a spare buffer
            assert torch.equal(reading.flat.tensor, before)
            shard.dense.release(reading)
    assert torch.equal(pulled(shard), oracle)


# -- sparse rows ---------------------------------------------------------------------------
def test_pull_rows_returns_copies_of_the_rows():
    shard = make_shard()
    ids = torch.tensor([3, 0, 3])
    rows, version = shard.pull_rows("emb", ids)
    assert version == 0
    assert torch.equal(rows, randn(ROWS, DIM, seed=1)[ids])
    rows.fill_(99.0)
    assert torch.equal(shard.tables["emb"], randn(ROWS, DIM, seed=1))


def test_push_rows_updates_only_those_rows_and_advances_the_version():
    opt = optim.Adam(lr=0.1)
    shard = make_shard(optim.Adam(lr=0.1))
    oracle = randn(ROWS, DIM, seed=1)
    state = opt.init(oracle)
    ids, grad_rows = torch.tensor([1, 3, 1]), randn(3, DIM, seed=5)
    pushed = shard.push_rows("emb", ids, grad_rows, read_version=0)
    opt.step_rows(oracle, ids, grad_rows, state)
    assert pushed.applied and shard.version == 1
    table = shard.tables["emb"]
    assert torch.equal(table, oracle)
    untouched = torch.tensor([0, 2, 4])
    assert torch.equal(table[untouched], randn(ROWS, DIM, seed=1)[untouched])
    assert not torch.equal(table[1], randn(ROWS, DIM, seed=1)[1])
    assert torch.equal(pulled(shard), randn(WIDTH))  # the dense values are not touched


# -- bad input ------------------------------------------------------------------------------
def with_nan(shape, value=float("nan")):
    t = torch.ones(shape)
    t.view(-1)[1] = value
    return t


GOOD_IDS = torch.tensor([0, 4])
SINCE = "(must be a version this shard has had, 0..2)"
NON_FINITE = "1 non-finite values (NaN or Inf); nothing was applied"
# Each check a server makes on what it receives, and its exact refusal. After
# the setup below, the shard is at version 2.
BAD_INPUT = {
    "grad_shape": (lambda s: receive(s, torch.ones(WIDTH - 1), 2),
                   "Invalid gradient shape for shard 0: (5,) (expected (6,))"),
    "grad_2d": (lambda s: receive(s, torch.ones(1, WIDTH), 2),
                "Invalid gradient shape for shard 0: (1, 6) (expected (6,))"),
    "grad_float64": (lambda s: receive(s, torch.ones(WIDTH, dtype=torch.float64), 2),
                     "Invalid gradient dtype for shard 0: torch.float64 (shards hold torch.float32)"),
    "grad_nan": (lambda s: receive(s, with_nan(WIDTH), 2), f"Invalid gradient for shard 0: {NON_FINITE}"),
    "grad_inf": (lambda s: receive(s, with_nan(WIDTH, float("inf")), 2), f"Invalid gradient for shard 0: {NON_FINITE}"),
    "grad_list": (lambda s: receive(s, [0.0] * WIDTH, 2),
                  "Invalid gradient for shard 0: expected a torch tensor, got list"),
    "grad_numpy": (lambda s: receive(s, np.ones(WIDTH, np.float32), 2),
                   "Invalid gradient for shard 0: expected a torch tensor, got ndarray"),
    "read_version_future": (lambda s: receive(s, torch.ones(WIDTH), 3), f"Invalid read_version for shard 0: 3 {SINCE}"),
    "read_version_negative": (lambda s: receive(s, torch.ones(WIDTH), -1),
                              f"Invalid read_version for shard 0: -1 {SINCE}"),
    "read_version_float": (lambda s: receive(s, torch.ones(WIDTH), 1.0),
                           f"Invalid read_version for shard 0: 1.0 {SINCE}"),
    "read_version_bool": (lambda s: receive(s, torch.ones(WIDTH), True),
                          f"Invalid read_version for shard 0: True {SINCE}"),
    "rows_unknown_table": (lambda s: receive_rows(s, "nope", GOOD_IDS, torch.ones(2, DIM), 2),
                           "Invalid table: 'nope' (shard 0 holds ['emb'])"),
    "rows_ids_too_high": (lambda s: receive_rows(s, "emb", torch.tensor([0, 5]), torch.ones(2, DIM), 2),
                          "Invalid row ids for table 'emb': local ids must be in [0, 5) on shard 0, got [0, 5]"),
    "rows_ids_negative": (lambda s: receive_rows(s, "emb", torch.tensor([-1, 2]), torch.ones(2, DIM), 2),
                          "Invalid row ids for table 'emb': local ids must be in [0, 5) on shard 0, got [-1, 2]"),
    "rows_ids_int32": (lambda s: receive_rows(s, "emb", GOOD_IDS.int(), torch.ones(2, DIM), 2),
                       "Invalid row ids for table 'emb': expected a 1-D torch.int64 tensor"),
    "rows_ids_2d": (lambda s: receive_rows(s, "emb", GOOD_IDS.view(1, 2), torch.ones(2, DIM), 2),
                    "Invalid row ids for table 'emb': expected a 1-D torch.int64 tensor"),
    "rows_ids_list": (lambda s: receive_rows(s, "emb", [0, 4], torch.ones(2, DIM), 2),
                      "Invalid row ids for table 'emb': expected a 1-D torch.int64 tensor"),
    "rows_grad_shape": (lambda s: receive_rows(s, "emb", GOOD_IDS, torch.ones(3, DIM), 2),
                        "Invalid row gradients shape for shard 0: (3, 2) (expected (2, 2))"),
    "rows_grad_float64": (lambda s: receive_rows(s, "emb", GOOD_IDS, torch.ones(2, DIM, dtype=torch.float64), 2),
                          "Invalid row gradients dtype for shard 0: torch.float64 (shards hold torch.float32)"),
    "rows_grad_list": (lambda s: receive_rows(s, "emb", GOOD_IDS, [[1.0] * DIM] * 2, 2),
                       "Invalid row gradients for shard 0: expected a torch tensor, got list"),
    "rows_grad_nan": (lambda s: receive_rows(s, "emb", GOOD_IDS, with_nan((2, DIM)), 2),
                      f"Invalid row gradients for shard 0: {NON_FINITE}"),
    "rows_grad_inf": (lambda s: receive_rows(s, "emb", GOOD_IDS, with_nan((2, DIM), float("inf")), 2),
                      f"Invalid row gradients for shard 0: {NON_FINITE}"),
    "rows_read_version_future": (lambda s: receive_rows(s, "emb", GOOD_IDS, torch.ones(2, DIM), 3),
                                 f"Invalid read_version for shard 0: 3 {SINCE}"),
    "rows_read_version_negative": (lambda s: receive_rows(s, "emb", GOOD_IDS, torch.ones(2, DIM), -1),
                                   f"Invalid read_version for shard 0: -1 {SINCE}"),
    "pull_rows_unknown_table": (lambda s: s.check_ids("nope", GOOD_IDS),
                                "Invalid table: 'nope' (shard 0 holds ['emb'])"),
    "pull_rows_ids_too_high": (lambda s: s.check_ids("emb", torch.tensor([7])),
                               "Invalid row ids for table 'emb': local ids must be in [0, 5) on shard 0, got [7, 7]"),
    "pull_rows_ids_float": (lambda s: s.check_ids("emb", torch.tensor([1.0])),
                            "Invalid row ids for table 'emb': expected a 1-D torch.int64 tensor"),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_says_what_is_wrong_and_changes_nothing(case):
    call, message = BAD_INPUT[case]
    opt = optim.Adam(lr=0.1)  # Adam, so that there is optimizer state to leave alone
    shard = make_shard(optim.Adam(lr=0.1))
    dense, table = randn(WIDTH), randn(ROWS, DIM, seed=1)
    dense_state, table_state = opt.init(dense), opt.init(table)
    good = [(randn(WIDTH, seed=20), torch.tensor([2, 0]), randn(2, DIM, seed=21)),
            (randn(WIDTH, seed=22), torch.tensor([4, 4, 1]), randn(3, DIM, seed=23))]

    def push_good(grad, ids, grad_rows):
        receive(shard, grad, shard.version)
        receive_rows(shard, "emb", ids, grad_rows, shard.version)
        opt.step(dense, grad, dense_state)
        opt.step_rows(table, ids, grad_rows, table_state)

    push_good(*good[0])
    before = shard.state_dict()
    staleness_before = {w: Counter(c) for w, c in shard.staleness.items()}

    with pytest.raises(ValueError) as refused:
        call(shard)
    assert str(refused.value) == message

    assert_same(shard.state_dict(), before)
    assert {w: Counter(c) for w, c in shard.staleness.items()} == staleness_before
    push_good(*good[1])  # the shard still works, as if the bad call had never been made
    assert shard.version == 4
    assert torch.equal(pulled(shard), dense)
    assert torch.equal(shard.tables["emb"], table)
    assert_same(shard.rule_state.state_dict(), dense_state.state_dict())
    assert_same(shard.table_states["emb"].state_dict(), table_state.state_dict())


# -- close ---------------------------------------------------------------------------------
def test_close_ends_a_read_waiting_for_a_version_with_shard_closed():
    shard = make_shard()
    shard.push(Flat.of(torch.ones(WIDTH)), 0)
    shard.close()
    assert shard.closed
    with pytest.raises(ShardClosed) as closed:
        shard.dense.acquire(at_least=2)  # no timeout: a read that waited would wait for ever
    assert str(closed.value) == "shard 0 closed at version 1 before 2"


# -- checkpoints ---------------------------------------------------------------------------------
def test_a_restored_shard_continues_bit_identically():
    rule = ApplyEach(optim.Adam(lr=0.05, amsgrad=True))
    original = Shard(3, randn(32), {"emb": randn(7, 3, seed=1)}, rule)
    pushes = [("rows", torch.tensor([s % 7, 6, s % 7]), randn(3, 3, seed=s)) if s % 3 == 0 else
              ("dense", randn(32, seed=s)) for s in range(12)]

    def push(shard, kind, *args):
        if kind == "rows":
            shard.push_rows("emb", args[0], args[1], shard.version)
        elif shard.version % 2:
            held, version = shard.dense.acquire()  # a read in progress: this update goes to a spare buffer
            shard.push(Flat.of(args[0]), version - 1)
            shard.dense.release(held)
        else:
            shard.push(Flat.of(args[0]), shard.version)  # nobody reads: this one goes in place

    for p in pushes[:6]:
        push(original, *p)
    saved = original.state_dict()
    values_at_save = pulled(original)
    restored = Shard(3, torch.zeros(32), {"emb": torch.zeros(7, 3)}, rule)
    restored.load_state_dict(saved)
    assert_same(restored.state_dict(), saved)
    for p in pushes[6:]:
        push(original, *p)
        push(restored, *p)
    assert_same(restored.state_dict(), original.state_dict())
    assert restored.version == original.version == 12
    assert torch.equal(saved["values"], values_at_save)  # the checkpoint is a copy, not a live view


def test_load_state_dict_refuses_values_of_another_size():
    shard = make_shard()
    saved = make_shard(values=randn(WIDTH + 1)).state_dict()
    with pytest.raises(ValueError) as refused:
        shard.load_state_dict(saved)
    assert str(refused.value) == "Invalid checkpoint values shape for shard 0: (7,) (expected (6,))"
    assert torch.equal(pulled(shard), randn(WIDTH))
    assert shard.version == 0


def test_a_checkpoint_file_restores_the_shard_of_its_own_run_only(tmp_path):
    rule = ApplyEach(optim.Adagrad(lr=0.1))
    original = Shard(0, randn(WIDTH), {"emb": randn(ROWS, DIM, seed=1)}, rule)
    for s in range(3):
        original.push(Flat.of(randn(WIDTH, seed=s)), s)
    original.push_rows("emb", torch.tensor([1, 4]), randn(2, DIM, seed=9), 3)
    path = tmp_path / "checkpoints" / "shard-0.pt"
    assert checkpoint.save(original, path, run="run-a") == 4
    assert [p.name for p in path.parent.iterdir()] == ["shard-0.pt"]  # written aside, renamed over: nothing left
    saved = original.state_dict()
    original.push(Flat.of(randn(WIDTH, seed=7)), 4)  # after the checkpoint: a restart loses it

    def fresh(index=0):
        return Shard(index, torch.zeros(WIDTH), {"emb": torch.zeros(ROWS, DIM)}, rule)

    restarted = fresh()
    assert checkpoint.restore(restarted, path, run="run-a")[0] == 4
    assert restarted.version == 4
    assert_same(restarted.state_dict(), saved)
    for other_run, where in (("run-b", path), ("run-a", tmp_path / "missing.pt")):
        untouched = fresh()
        assert checkpoint.restore(untouched, where, run=other_run) is None
        assert untouched.version == 0 and torch.equal(pulled(untouched), torch.zeros(WIDTH))
    wrong = fresh(index=1)
    with pytest.raises(ValueError) as refused:
        checkpoint.restore(wrong, path, run="run-a")
    assert str(refused.value) == f"Invalid checkpoint {path}: it holds shard 0, not shard 1"
    assert wrong.version == 0 and torch.equal(pulled(wrong), torch.zeros(WIDTH))


def test_a_later_checkpoint_replaces_the_earlier_one(tmp_path):
    shard = make_shard()
    path = tmp_path / "shard-0.pt"
    assert checkpoint.save(shard, path) == 0
    shard.push(Flat.of(torch.ones(WIDTH)), 0)
    assert checkpoint.save(shard, path) == 1
    restarted = make_shard(values=torch.zeros(WIDTH))
    assert checkpoint.restore(restarted, path)[0] == 1
    assert_same(restarted.state_dict(), shard.state_dict())


# -- concurrency ----------------------------------------------------------------------------
# lr * -grad = 0.25, a power of two: every partial sum below is exact in float32,
# so values at version v hold exactly 0.25 * v in every element, and a torn
# read (half of one update) would show two different values.
PUSHERS, READERS, PUSHES, LENGTH, LR, GRAD, STEP = 4, 2, 200, 64, 0.5, -0.5, 0.25


def assert_consistent(values, version: int) -> None:
    values = torch.as_tensor(values)
    expected = torch.full((values.numel(),), version * STEP)
    assert torch.equal(values.view(-1), expected), f"values at version {version}: {values.unique().tolist()}"


def test_concurrent_pushes_and_reads_apply_every_push_and_never_tear():
    shard = Shard(0, torch.zeros(LENGTH), None, ApplyEach(optim.SGD(lr=LR)))
    grad = Flat.of(torch.full((LENGTH,), GRAD))
    total = PUSHERS * PUSHES
    start = threading.Barrier(PUSHERS + READERS, timeout=30)
    compute_gradient = threading.Barrier(PUSHERS, timeout=30)

    def pusher(worker):
        start.wait()
        pushed = []
        try:
            for step in range(PUSHES):
                held, version = shard.dense.acquire()
                assert_consistent(held.flat.array, version)
                compute_gradient.wait()  # the other pushers push meanwhile; the held values hold still
                assert_consistent(held.flat.array, version)
                if step % 2:  # half the time the read ends before the push, half the time after
                    shard.dense.release(held)
                pushed.append(shard.push(grad, version, worker=worker))
                if not step % 2:
                    shard.dense.release(held)
        except BaseException:
            compute_gradient.abort()  # fail the others now rather than at the barrier's timeout
            raise
        return pushed

    def reader():
        start.wait()
        later = np.empty(LENGTH, np.float32)
        while True:
            held, version = shard.dense.acquire()
            assert_consistent(held.flat.array, version)
            if version == total:
                shard.dense.release(held)
                return
            # Still holding, wait for the pushers to move on; the held values must not have.
            newer = shard.dense.copy_to(later, at_least=version + 1, timeout=30)
            assert_consistent(later, newer)
            assert_consistent(held.flat.array, version)
            shard.dense.release(held)

    with ThreadPoolExecutor(PUSHERS + READERS) as pool:
        pushers = [pool.submit(pusher, w) for w in range(PUSHERS)]
        readers = [pool.submit(reader) for _ in range(READERS)]
        pushes = [p for f in pushers for p in f.result(timeout=60)]
        for f in readers:
            f.result(timeout=60)

    assert shard.version == total
    assert torch.equal(pulled(shard), torch.full((LENGTH,), 200.0))
    assert all(p.applied for p in pushes)
    assert sorted(p.version for p in pushes) == list(range(total))  # each version applied exactly once
    assert {w: sum(c.values()) for w, c in shard.staleness.items()} == {w: PUSHES for w in range(PUSHERS)}


def test_concurrent_row_pushes_apply_every_push():
    shard = Shard(0, torch.zeros(0), {"emb": torch.zeros(10, 4)}, ApplyEach(optim.SGD(lr=LR)))
    ids = torch.tensor([0, 3, 9, 5, 1, 2, 4, 6, 7, 8])
    grad_rows = torch.full((10, 4), GRAD)
    start = threading.Barrier(PUSHERS, timeout=30)

    def pusher(worker):
        start.wait()
        for _ in range(50):
            rows, version = shard.pull_rows("emb", ids)
            assert torch.all(rows == rows[0, 0]), "torn row read"
            shard.push_rows("emb", ids, grad_rows, version, worker=worker)

    with ThreadPoolExecutor(PUSHERS) as pool:
        for f in [pool.submit(pusher, w) for w in range(PUSHERS)]:
            f.result(timeout=60)
    assert shard.version == PUSHERS * 50
    assert torch.equal(shard.tables["emb"], torch.full((10, 4), PUSHERS * 50 * STEP))


# -- the scan of a pushed gradient ----------------------------------------------------------------
@pytest.mark.parametrize("size", [4, NUMBA_SCAN_BELOW], ids=["numba_scan", "aminmax"])
def test_an_absurd_finite_gradient_is_refused_rather_than_freezing_adagrad(size):
    # 1e20 squared overflows float32: AdaGrad's sum would become Inf and every later step move nothing.
    shard = Shard(0, torch.zeros(size), {}, ApplyEach(optim.Adagrad(lr=0.1)))
    grad = torch.ones(size)
    grad[size // 2] = 1e20
    with pytest.raises(ValueError) as refused:
        receive(shard, grad, read_version=0)
    assert str(refused.value) == ("Invalid gradient for shard 0: 1 values beyond ±1.84e+19, whose squares overflow "
                                  "float32 and would freeze an optimizer that sums them; nothing was applied")
    assert shard.version == 0 and torch.equal(pulled(shard), torch.zeros(size))
    receive(shard, torch.ones(size), read_version=0)  # the shard still learns
    assert bool((pulled(shard) < 0).all())


SIZES = [1, 530, NUMBA_SCAN_BELOW - 1, NUMBA_SCAN_BELOW, 3 * NUMBA_SCAN_BELOW]  # both sides of the switch


@pytest.mark.parametrize("size", SIZES, ids=lambda n: f"{n}")
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 1e20, -1e20],
                         ids=["nan", "inf", "-inf", "huge", "-huge"])
def test_all_usable_finds_one_bad_value_anywhere_in_small_and_large_tensors(size, bad):
    """Small tensors take a numba scan, large ones one aminmax: both refuse one bad value, first or last."""
    for position in (0, size - 1):
        grad = torch.randn(size)
        assert all_usable(grad)
        grad[position] = bad
        assert not all_usable(grad)
        assert not all_usable(grad.view(1, -1))  # 2-D rows
        assert not all_usable(torch.stack([grad, grad], dim=1)[:, 0])  # a strided view
    assert all_usable(torch.full((size,), MAX_ABS)) and all_usable(torch.full((size,), -MAX_ABS))  # the bound itself


def test_all_usable_reads_a_tensor_that_requires_grad():
    weights = torch.randn(100, requires_grad=True)
    assert all_usable(weights) and not all_usable(weights * float("inf"))


def test_flat_is_a_tensor_and_an_array_over_the_same_memory():
    flat = Flat.of(torch.arange(6, dtype=torch.float32))
    part = flat.part(2, 5)
    part.array[:] = -1.0  # written through the array, read through both tensors
    assert torch.equal(part.tensor, torch.full((3,), -1.0))
    assert torch.equal(flat.tensor, torch.tensor([0.0, 1.0, -1.0, -1.0, -1.0, 5.0]))
    zeros = Flat.zeros(4)
    assert zeros.array.dtype == np.float32 and np.shares_memory(zeros.array, zeros.tensor.numpy())


@pytest.mark.parametrize("worker", [4, -1, 99, True])
def test_a_push_from_a_worker_outside_the_run_is_refused_and_changes_nothing(worker):
    shard = Shard(0, randn(WIDTH), {"emb": randn(ROWS, DIM, seed=1)}, ApplyEach(optim.SGD(lr=0.1)), workers=4)
    before = shard.state_dict()
    message = f"Invalid worker for shard 0: {worker!r} (the run's workers are 0..3)"
    with pytest.raises(ValueError) as refused:
        receive(shard, randn(WIDTH, seed=2), 0, worker)
    assert str(refused.value) == message
    with pytest.raises(ValueError) as refused:
        receive_rows(shard, "emb", torch.tensor([0, 1]), randn(2, DIM, seed=3), 0, worker)
    assert str(refused.value) == message
    assert_same(shard.state_dict(), before)


def test_a_save_cut_short_leaves_the_last_checkpoint_whole_and_no_partial_file_behind(tmp_path):
    shard, path = make_shard(), tmp_path / "shard-0.pt"
    receive(shard, randn(WIDTH, seed=2), 0)
    assert checkpoint.save(shard, path, run="r") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-0.pt"]
    (tmp_path / "shard-0.pt.partial").write_bytes(b"half a checkpoint")  # what kill -9 mid-save leaves
    restarted = make_shard()
    assert checkpoint.restore(restarted, path, run="r")[0] == 1
    assert_same(restarted.state_dict(), shard.state_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-0.pt"]


def test_a_plateau_cut_scales_the_next_updates_and_survives_a_checkpoint():
    shard = make_shard(optim.SGD(lr=optim.from_spec({"kind": "plateau"}, 0.1)))
    start = pulled(shard)
    shard.set_lr_factor(0.5)
    receive(shard, torch.ones(WIDTH), 0)
    assert torch.allclose(pulled(shard), start - 0.05)
    restored = make_shard(optim.SGD(lr=optim.from_spec({"kind": "plateau"}, 0.1)))
    restored.load_state_dict(shard.state_dict())
    receive(restored, torch.ones(WIDTH), 1)
    assert torch.allclose(pulled(restored), start - 0.1)


@pytest.mark.parametrize("lr, factor, message", [
    (0.1, 0.5, "Invalid lr factor for shard 0: its optimizer's lr is not a plateau schedule "
               '(set [server] schedule = {kind = "plateau"})'),
    (optim.Scaled(0.1), float("nan"), "Invalid lr factor for shard 0: nan (must be a number in (0, 1])"),
    (optim.Scaled(0.1), 0.0, "Invalid lr factor for shard 0: 0.0 (must be a number in (0, 1])"),
    (optim.Scaled(0.1), 2.0, "Invalid lr factor for shard 0: 2.0 (must be a number in (0, 1])"),
])
def test_a_bad_lr_factor_is_refused_and_changes_nothing(lr, factor, message):
    shard = make_shard(optim.SGD(lr=lr))
    with pytest.raises(ValueError) as refused:
        shard.set_lr_factor(factor)
    assert str(refused.value) == message
    start = pulled(shard)
    receive(shard, torch.ones(WIDTH), 0)
    assert torch.allclose(pulled(shard), start - 0.1)
