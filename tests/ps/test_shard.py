"""Shard: version clock, staleness, copy-on-write snapshots, validation,
checkpoints and concurrent pushes and pulls on real threads."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import optim
from ps import ApplyEach, Push, Shard
from ps.shard import NUMBA_SCAN_BELOW, all_finite

WIDTH, ROWS, DIM = 6, 5, 2


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def make_shard(opt=None, values=None, tables=None) -> Shard:
    values = randn(WIDTH) if values is None else values
    tables = {"emb": randn(ROWS, DIM, seed=1)} if tables is None else tables
    return Shard(0, values, tables, ApplyEach(opt or optim.SGD(lr=0.1)))


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


# -- version and staleness --------------------------------------------------------
def test_version_starts_at_zero_and_counts_applied_pushes():
    shard = make_shard()
    assert shard.version == 0
    assert shard.pull()[1] == 0
    shard.push(randn(WIDTH), 0)
    shard.push(randn(WIDTH), 1)
    shard.push_rows("emb", torch.tensor([1]), randn(1, DIM), 2)
    assert shard.version == 3
    assert shard.pull()[1] == 3
    assert shard.pull_rows("emb", torch.tensor([0]))[1] == 3


def test_staleness_is_the_version_at_arrival_minus_the_version_read():
    shard = make_shard()
    first = shard.push(randn(WIDTH), read_version=0, worker=0)
    second = shard.push(randn(WIDTH), read_version=0, worker=1)  # read before the first push landed
    assert first == Push(shard=0, worker=0, read_version=0, version=0, applied=True)
    assert second == Push(shard=0, worker=1, read_version=0, version=1, applied=True)
    assert (first.staleness, second.staleness) == (0, 1)
    shard.push(randn(WIDTH), read_version=0, worker=1)
    rows = shard.push_rows("emb", torch.tensor([0]), randn(1, DIM), read_version=1, worker=0)
    assert rows.staleness == 2
    assert dict(shard.staleness) == {0: Counter({0: 1, 2: 1}), 1: Counter({1: 1, 2: 1})}


# -- snapshots -----------------------------------------------------------------------
def test_named_pull_hands_out_the_published_tensor_itself():
    shard = make_shard()
    mine, version = shard.pull(reader="a")
    theirs, _ = shard.pull(reader="b")
    assert mine is theirs  # no copy
    assert version == 0
    assert torch.equal(mine, randn(WIDTH))


def test_anonymous_pull_returns_a_copy():
    shard = make_shard()
    published, _ = shard.pull(reader="a")
    copy, _ = shard.pull()
    assert copy is not published and copy.data_ptr() != published.data_ptr()
    copy.fill_(7.0)
    assert torch.equal(shard.pull()[0], randn(WIDTH))


def test_a_held_snapshot_is_unchanged_by_another_readers_push():
    shard = make_shard()
    held, _ = shard.pull(reader="a")
    before = held.clone()
    other, version = shard.pull(reader="b")
    shard.push(torch.ones(WIDTH), version, worker=1, reader="b")
    assert torch.equal(held, before)  # copy-on-write: "a" still sees version 0
    now, now_version = shard.pull()
    assert now_version == 1
    assert torch.equal(now, before - 0.1)
    republished, _ = shard.pull(reader="c")
    assert republished is not held


def test_values_are_updated_in_place_once_the_holder_pushes():
    shard = make_shard()
    held, version = shard.pull(reader="a")
    before = held.clone()
    shard.push(torch.ones(WIDTH), version, reader="a")  # ends a's hold: nobody holds the values
    assert torch.equal(held, before - 0.1)  # updated in place
    again, _ = shard.pull(reader="a")
    assert again is held


def test_values_are_updated_in_place_after_release():
    shard = make_shard()
    held, version = shard.pull(reader="a")
    shard.release("a")
    shard.push(torch.ones(WIDTH), version, worker=1)
    assert torch.equal(held, randn(WIDTH) - 0.1)
    assert shard.pull(reader="a")[0] is held


def test_pull_waits_for_min_version_reached_by_another_threads_push():
    shard = make_shard()
    asked = threading.Event()

    def wait_for_version_2():
        asked.set()
        return shard.pull(min_version=2, timeout=30)

    with ThreadPoolExecutor(1) as pool:
        pulled = pool.submit(wait_for_version_2)
        asked.wait()
        shard.push(torch.ones(WIDTH), 0)
        assert not pulled.done()  # version 1 < 2: still waiting
        shard.push(torch.ones(WIDTH), 1)
        values, version = pulled.result(timeout=30)
    assert version == 2
    assert torch.equal(values, shard.pull()[0])


def test_pull_of_a_version_already_reached_returns_at_once():
    shard = make_shard()
    shard.push(torch.ones(WIDTH), 0)
    assert shard.pull(min_version=1, timeout=0)[1] == 1


def test_pull_times_out_with_a_clear_message():
    shard = make_shard()
    shard.push(torch.ones(WIDTH), 0)
    with pytest.raises(TimeoutError, match=r"^shard 0: version 1 did not reach 3 within 0.05 s$"):
        shard.pull(min_version=3, timeout=0.05)


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
        if held:  # another reader holds the published values: the update goes to a spare buffer
            other, _ = shard.pull(reader="other")
            other_before = other.clone()
        values, version = shard.pull(reader="me")
        shard.push(grad, version, reader="me")
        opt.step(oracle, grad, state)
        if held:
            assert torch.equal(other, other_before)
    assert torch.equal(shard.pull()[0], oracle)


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
    assert torch.equal(shard.pull()[0], randn(WIDTH))  # the dense values are not touched


# -- bad input ------------------------------------------------------------------------------
def with_nan(shape, value=float("nan")):
    t = torch.ones(shape)
    t.view(-1)[1] = value
    return t


GOOD_IDS = torch.tensor([0, 4])
# After the setup below, the shard is at version 2.
BAD_INPUT = {
    "grad_shape": (lambda s: s.push(torch.ones(WIDTH - 1), 2),
                   r"Invalid gradient shape for shard 0: \(5,\) \(expected \(6,\)\)"),
    "grad_2d": (lambda s: s.push(torch.ones(1, WIDTH), 2),
                r"Invalid gradient shape for shard 0: \(1, 6\) \(expected \(6,\)\)"),
    "grad_float64": (lambda s: s.push(torch.ones(WIDTH, dtype=torch.float64), 2),
                     r"Invalid gradient dtype for shard 0: torch.float64 \(shards hold torch.float32\)"),
    "grad_nan": (lambda s: s.push(with_nan(WIDTH), 2),
                 r"Invalid gradient for shard 0: 1 non-finite values \(NaN or Inf\); nothing was applied"),
    "grad_inf": (lambda s: s.push(with_nan(WIDTH, float("inf")), 2),
                 r"Invalid gradient for shard 0: 1 non-finite values \(NaN or Inf\); nothing was applied"),
    "grad_list": (lambda s: s.push([0.0] * WIDTH, 2),
                  r"Invalid gradient for shard 0: expected a torch tensor or a numpy array, got list"),
    "grad_numpy_float64": (lambda s: s.push(np.ones(WIDTH), 2),
                           r"Invalid gradient dtype for shard 0: numpy float64 \(shards hold float32\)"),
    "grad_numpy_shape": (lambda s: s.push(np.ones(WIDTH + 1, np.float32), 2),
                         r"Invalid gradient shape for shard 0: \(7,\) \(expected \(6,\)\)"),
    "grad_numpy_nan": (lambda s: s.push(with_nan(WIDTH).numpy(), 2),
                       r"Invalid gradient for shard 0: 1 non-finite values \(NaN or Inf\); nothing was applied"),
    "read_version_future": (lambda s: s.push(torch.ones(WIDTH), 3),
                            r"Invalid read_version for shard 0: 3 \(must be a version this shard has had, 0\.\.2\)"),
    "read_version_negative": (lambda s: s.push(torch.ones(WIDTH), -1),
                              r"Invalid read_version for shard 0: -1 \(must be a version this shard has had, 0\.\.2\)"),
    "read_version_float": (lambda s: s.push(torch.ones(WIDTH), 1.0),
                           r"Invalid read_version for shard 0: 1\.0 "),
    "held_read_version_future": (lambda s: (s.pull(reader="r"), s.push(torch.ones(WIDTH), 3, reader="r")),
                                 r"Invalid read_version for shard 0: 3 "),
    "rows_unknown_table": (lambda s: s.push_rows("nope", GOOD_IDS, torch.ones(2, DIM), 2),
                           r"Invalid table: 'nope' \(shard 0 holds \['emb'\]\)"),
    "rows_ids_too_high": (lambda s: s.push_rows("emb", torch.tensor([0, 5]), torch.ones(2, DIM), 2),
                          r"Invalid row ids for table 'emb': local ids must be in \[0, 5\) on shard 0, got \[0, 5\]"),
    "rows_ids_negative": (lambda s: s.push_rows("emb", torch.tensor([-1, 2]), torch.ones(2, DIM), 2),
                          r"Invalid row ids for table 'emb': local ids must be in \[0, 5\) on shard 0, got \[-1, 2\]"),
    "rows_ids_int32": (lambda s: s.push_rows("emb", GOOD_IDS.int(), torch.ones(2, DIM), 2),
                       r"Invalid row ids for table 'emb': expected a 1-D torch.int64 tensor"),
    "rows_ids_list": (lambda s: s.push_rows("emb", [0, 4], torch.ones(2, DIM), 2),
                      r"Invalid row ids for table 'emb': expected a 1-D torch.int64 tensor"),
    "rows_grad_shape": (lambda s: s.push_rows("emb", GOOD_IDS, torch.ones(3, DIM), 2),
                        r"Invalid row gradients shape for shard 0: \(3, 2\) \(expected \(2, 2\)\)"),
    "rows_grad_float64": (lambda s: s.push_rows("emb", GOOD_IDS, torch.ones(2, DIM, dtype=torch.float64), 2),
                          r"Invalid row gradients dtype for shard 0: torch.float64 \(shards hold torch.float32\)"),
    "rows_grad_nan": (lambda s: s.push_rows("emb", GOOD_IDS, with_nan((2, DIM)), 2),
                      r"Invalid row gradients for shard 0: 1 non-finite values \(NaN or Inf\)"),
    "rows_grad_inf": (lambda s: s.push_rows("emb", GOOD_IDS, with_nan((2, DIM), float("inf")), 2),
                      r"Invalid row gradients for shard 0: 1 non-finite values \(NaN or Inf\)"),
    "rows_read_version_future": (lambda s: s.push_rows("emb", GOOD_IDS, torch.ones(2, DIM), 3),
                                 r"Invalid read_version for shard 0: 3 \(must be a version this shard has had"),
    "rows_read_version_negative": (lambda s: s.push_rows("emb", GOOD_IDS, torch.ones(2, DIM), -1),
                                   r"Invalid read_version for shard 0: -1 \(must be a version this shard has had"),
    "pull_rows_unknown_table": (lambda s: s.pull_rows("nope", GOOD_IDS),
                                r"Invalid table: 'nope' \(shard 0 holds \['emb'\]\)"),
    "pull_rows_ids_too_high": (lambda s: s.pull_rows("emb", torch.tensor([7])),
                               r"Invalid row ids for table 'emb': local ids must be in \[0, 5\) on shard 0, "
                               r"got \[7, 7\]"),
    "pull_rows_ids_float": (lambda s: s.pull_rows("emb", torch.tensor([1.0])),
                            r"Invalid row ids for table 'emb': expected a 1-D torch.int64 tensor"),
}


@pytest.mark.parametrize("out_of_place", [False, True])
def test_a_numpy_gradient_updates_the_shard_as_its_tensor_does(out_of_place):
    # The in-process client pushes numpy slices; the update must be the same.
    shards = [make_shard(optim.Adam(lr=0.1)) for _ in range(2)]
    for step in range(3):
        grad = randn(WIDTH, seed=30 + step)
        for shard, pushed in zip(shards, (grad, grad.numpy())):
            if out_of_place:
                shard.pull(reader="w")  # a held snapshot: the update writes a spare buffer
            shard.push(pushed, shard.version, reader="w" if out_of_place else None)
    assert_same(shards[0].state_dict(), shards[1].state_dict())


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
        shard.push(grad, shard.version)
        shard.push_rows("emb", ids, grad_rows, shard.version)
        opt.step(dense, grad, dense_state)
        opt.step_rows(table, ids, grad_rows, table_state)

    shard.push(good[0][0], 0)
    shard.push_rows("emb", good[0][1], good[0][2], 1)
    opt.step(dense, good[0][0], dense_state)
    opt.step_rows(table, good[0][1], good[0][2], table_state)
    before = shard.state_dict()
    staleness_before = {w: Counter(c) for w, c in shard.staleness.items()}

    with pytest.raises(ValueError, match=message):
        call(shard)

    assert_same(shard.state_dict(), before)
    assert {w: Counter(c) for w, c in shard.staleness.items()} == staleness_before
    push_good(*good[1])  # the shard still works, as if the bad call had never been made
    assert shard.version == 4
    assert torch.equal(shard.pull()[0], dense)
    assert torch.equal(shard.tables["emb"], table)
    assert_same(shard.rule_state.state_dict(), dense_state.state_dict())
    assert_same(shard.table_states["emb"].state_dict(), table_state.state_dict())


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
            shard.pull(reader="watcher")  # held: this update goes to a spare buffer
            shard.push(args[0], shard.version - 1)
        else:
            shard.release("watcher")  # not held: this one goes in place
            shard.push(args[0], shard.version)

    for p in pushes[:6]:
        push(original, *p)
    saved = original.state_dict()
    values_at_save = original.pull()[0]
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
    with pytest.raises(ValueError, match=r"Invalid checkpoint values shape for shard 0: \(7,\) \(expected \(6,\)\)"):
        shard.load_state_dict(saved)
    assert torch.equal(shard.pull()[0], randn(WIDTH))


def test_a_checkpoint_file_restores_the_shard_of_its_own_run_only(tmp_path):
    rule = ApplyEach(optim.Adagrad(lr=0.1))
    original = Shard(0, randn(WIDTH), {"emb": randn(ROWS, DIM, seed=1)}, rule)
    for s in range(3):
        original.push(randn(WIDTH, seed=s), s)
    original.push_rows("emb", torch.tensor([1, 4]), randn(2, DIM, seed=9), 3)
    path = tmp_path / "checkpoints" / "shard-0.pt"
    assert original.save(path, run="run-a") == 4
    assert [p.name for p in path.parent.iterdir()] == ["shard-0.pt"]  # written aside, renamed over: nothing left
    saved = original.state_dict()
    original.push(randn(WIDTH, seed=7), 4)  # after the checkpoint: a restart loses it

    def fresh():
        return Shard(0, torch.zeros(WIDTH), {"emb": torch.zeros(ROWS, DIM)}, rule)

    restarted = fresh()
    assert restarted.restore(path, run="run-a") == 4
    assert restarted.version == 4
    assert_same(restarted.state_dict(), saved)
    for other_run, where in (("run-b", path), ("run-a", tmp_path / "missing.pt")):
        untouched = fresh()
        assert untouched.restore(where, run=other_run) is None
        assert untouched.version == 0 and torch.equal(untouched.pull()[0], torch.zeros(WIDTH))
    wrong = Shard(1, torch.zeros(WIDTH), {"emb": torch.zeros(ROWS, DIM)}, rule)
    with pytest.raises(ValueError, match=r"Invalid checkpoint .*shard-0.pt: it holds shard 0, not shard 1"):
        wrong.restore(path, run="run-a")


# -- concurrency ----------------------------------------------------------------------------
# lr * -grad = 0.25, a power of two: every partial sum below is exact in float32,
# so a snapshot at version v holds exactly 0.25 * v in every element, and a torn
# read (half of one update) would show two different values.
PUSHERS, READERS, PUSHES, LENGTH, LR, GRAD, STEP = 4, 2, 200, 64, 0.5, -0.5, 0.25


def assert_consistent(values: torch.Tensor, version: int) -> None:
    expected = torch.full((values.numel(),), version * STEP)
    assert torch.equal(values.view(-1), expected), f"snapshot at version {version}: {values.unique().tolist()}"


def test_concurrent_pushes_and_pulls_apply_every_push_and_never_tear():
    shard = Shard(0, torch.zeros(LENGTH), None, ApplyEach(optim.SGD(lr=LR)))
    grad = torch.full((LENGTH,), GRAD)
    total = PUSHERS * PUSHES
    start = threading.Barrier(PUSHERS + READERS, timeout=30)
    compute_gradient = threading.Barrier(PUSHERS, timeout=30)

    def pusher(worker):
        start.wait()
        pushed = []
        try:
            for _ in range(PUSHES):
                values, version = shard.pull(reader=worker)
                assert_consistent(values, version)
                compute_gradient.wait()  # the other pushers push meanwhile; our snapshot holds still
                assert_consistent(values, version)
                pushed.append(shard.push(grad, version, worker=worker, reader=worker))
        except BaseException:
            compute_gradient.abort()  # fail the others now rather than at the barrier's timeout
            raise
        return pushed

    def reader(name):
        start.wait()
        while True:
            held, version = shard.pull(reader=name)
            assert_consistent(held, version)
            if version == total:
                return
            # An anonymous pull holds nothing: it waits for the pushers to move on,
            # and then the held snapshot must still be the version it was.
            copy, later = shard.pull(min_version=version + 1, timeout=10)
            assert_consistent(copy, later)
            assert_consistent(held, version)

    with ThreadPoolExecutor(PUSHERS + READERS) as pool:
        pushers = [pool.submit(pusher, w) for w in range(PUSHERS)]
        readers = [pool.submit(reader, ("reader", r)) for r in range(READERS)]
        pushes = [p for f in pushers for p in f.result(timeout=60)]
        for f in readers:
            f.result(timeout=60)

    assert shard.version == total
    assert_consistent(shard.pull()[0], total)
    assert torch.equal(shard.pull()[0], torch.full((LENGTH,), 200.0))
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


def test_large_finite_gradients_whose_sum_overflows_are_accepted():
    shard = Shard(0, torch.zeros(4), {}, ApplyEach(optim.SGD(lr=1e-38)))
    push = shard.push(torch.full((4,), 3e38), read_version=0)  # the float32 sum overflows to inf
    assert push.applied and shard.version == 1
    torch.testing.assert_close(shard.pull()[0], torch.full((4,), -3.0))


SIZES = [1, 530, NUMBA_SCAN_BELOW - 1, NUMBA_SCAN_BELOW, 3 * NUMBA_SCAN_BELOW]  # both sides of the switch


@pytest.mark.parametrize("size", SIZES, ids=lambda n: f"{n}")
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_all_finite_finds_one_bad_value_anywhere_in_small_and_large_tensors(size, bad):
    """Small tensors take a numba scan, large ones torch's sum: both refuse one bad value, first or last."""
    for position in (0, size - 1):
        grad = torch.randn(size)
        assert all_finite(grad)
        grad[position] = bad
        assert not all_finite(grad)
        assert not all_finite(grad.view(1, -1)) and not all_finite(grad.flip(0))  # 2-D rows, a strided view
    assert all_finite(torch.full((size,), 3e38))  # large but finite, whatever the sum does


def test_all_finite_reads_a_tensor_that_requires_grad():
    weights = torch.randn(100, requires_grad=True)
    assert all_finite(weights) and not all_finite(weights * float("inf"))
