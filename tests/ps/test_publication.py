"""Publication with no optimizer at all: copy-on-write of one float32 vector
under a plain callable update, its version clock, version waits, timeouts,
close, restore, and concurrent reads on real threads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from asyncps.ps import Applied, Flat, Publication, ShardClosed

SIZE = 5
STEP = 0.25  # a power of two: the values after v updates are exactly v * STEP in float32


class Add:
    """A plain update: every value plus ``step``, into ``out`` or in place.
    It remembers each call's ``out`` (None: in place); ``applied=False`` makes
    it a refused update that scribbles on ``out`` and returns False."""

    def __init__(self, step: float = STEP, applied: bool = True):
        self.step = step
        self.applied = applied
        self.outs: list[Flat | None] = []

    def __call__(self, values: Flat, out: Flat | None) -> bool:
        self.outs.append(out)
        if not self.applied:
            if out is not None:
                out.array.fill(np.nan)  # whatever a refused update leaves in the spare is never published
            return False
        np.add(values.array, self.step, out=values.array if out is None else out.array)
        return True


def watch_waits(publication: Publication, readers: int = 1) -> threading.Event:
    """An event set once ``readers`` threads found their version not reached.

    A read asks ``reached`` under the publication's lock and keeps the lock
    until it waits, so an update started after the event is set finds those
    reads waiting: the tests below need no sleeps to know it."""
    waiting, ready = set(), threading.Event()
    reached = publication.reached

    def spy(at_least: int) -> bool:
        answer = reached(at_least)
        if not answer:
            waiting.add(threading.get_ident())
            if len(waiting) >= readers:
                ready.set()
        return answer

    publication.reached = spy
    return ready


@contextmanager
def reading_threads(publication: Publication, threads: int = 1):
    """Threads for reads that wait; the publication closes on the way out, so a
    failing test ends those reads instead of hanging on them."""
    with ThreadPoolExecutor(threads) as pool:
        try:
            yield pool
        finally:
            publication.close()


def values(publication: Publication) -> np.ndarray:
    out = np.empty(publication.size, np.float32)
    publication.copy_to(out)
    return out


def full(value: float, size: int = SIZE) -> np.ndarray:
    return np.full(size, value, np.float32)


def copy_at_least(publication: Publication, at_least: int) -> tuple[int, np.ndarray]:
    """A read that waits with no timeout: only an update, a restore or close ends it
    (a timeout would end it too, and hide an update that forgot to wake it)."""
    out = full(-1.0, publication.size)
    return publication.copy_to(out, at_least=at_least), out


# -- construction and reading ------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_values_are_a_float32_copy_of_what_was_given(dtype):
    given = torch.arange(SIZE, dtype=dtype, requires_grad=True)
    publication = Publication(given, "center")
    with torch.no_grad():
        given.fill_(9.0)
    assert publication.values.dtype == torch.float32
    assert torch.equal(publication.values, torch.arange(SIZE, dtype=torch.float32))
    assert (publication.size, publication.version, publication.closed) == (SIZE, 0, False)


def test_copy_to_copies_the_values_and_answers_their_version():
    publication = Publication(torch.zeros(SIZE), "shard 0")
    out = full(-1.0)
    assert publication.copy_to(out) == 0
    assert np.array_equal(out, full(0.0))
    out.fill(5.0)  # the copy is the caller's own
    assert torch.equal(publication.values, torch.zeros(SIZE))
    add = Add()
    publication.update(add)
    assert add.outs == [None]  # the copy is over: it holds nothing, so the update went in place
    assert publication.copy_to(out) == 1
    assert np.array_equal(out, full(STEP))


def test_acquire_hands_out_the_published_buffer_itself_until_release():
    publication = Publication(torch.zeros(SIZE), "shard 0")
    first, version = publication.acquire()
    second, _ = publication.acquire()
    assert version == 0
    assert first is second and first.flat.tensor is publication.values  # no copy
    assert np.shares_memory(first.flat.array, first.flat.tensor.numpy())
    assert first.holds == 2
    publication.release(first)
    publication.release(second)
    assert first.holds == 0


def test_reached_is_a_version_published_or_the_publication_closed():
    publication = Publication(torch.zeros(SIZE), "shard 0")
    publication.update(Add())
    assert publication.reached(0) and publication.reached(1) and not publication.reached(2)
    publication.close()
    assert publication.closed and publication.reached(2)


# -- updates: in place, copy-on-write, spare buffers ---------------------------------------------
def test_an_update_with_no_holds_happens_in_place():
    publication = Publication(torch.zeros(SIZE), "shard 0")
    published = publication.values
    held, _ = publication.acquire()
    publication.release(held)  # a hold that has ended holds nothing
    add = Add()
    assert publication.update(add) == (0, True)
    assert publication.update(add) == (1, True)
    assert add.outs == [None, None]
    assert publication.values is published
    assert torch.equal(published, torch.full((SIZE,), 2 * STEP))
    assert publication.version == 2


def test_an_acquired_buffer_is_never_changed_by_an_update():
    publication = Publication(torch.zeros(SIZE), "shard 0")
    held, version = publication.acquire()
    add = Add()
    for _ in range(3):
        publication.update(add)
    # The first update wrote a spare buffer and published it; nobody holds that one, so the next go in place.
    assert add.outs[0] is not None and add.outs[1:] == [None, None]
    assert np.array_equal(held.flat.array, full(0.0)) and version == 0
    assert publication.values is not held.flat.tensor
    assert np.array_equal(values(publication), full(3 * STEP))
    publication.release(held)


def test_spare_buffers_are_reused_not_allocated_per_update():
    publication = Publication(torch.zeros(SIZE), "shard 0")
    original = publication.values.data_ptr()
    add = Add()
    for _ in range(20):
        held, _ = publication.acquire()  # held: the update goes to a spare buffer
        publication.update(add)
        publication.release(held)  # no longer published nor held: the next update's spare
    used = {out.tensor.data_ptr() for out in add.outs}
    assert len(used) == 2 and original in used  # the original and one more, taking turns
    assert np.array_equal(values(publication), full(20 * STEP))


def test_a_buffer_whose_readers_let_go_during_the_update_becomes_the_spare():
    publication = Publication(torch.zeros(SIZE), "shard 0")
    held, _ = publication.acquire()
    first = held.flat.tensor.data_ptr()
    add = Add()

    def release_then_add(values, out):
        publication.release(held)  # the read ends while the update writes the spare
        return add(values, out)

    publication.update(release_then_add)
    reader, _ = publication.acquire()
    publication.update(add)
    publication.release(reader)
    assert add.outs[-1].tensor.data_ptr() == first
    assert np.array_equal(values(publication), full(2 * STEP))


def test_a_refused_update_publishes_nothing_and_keeps_its_spare():
    publication = Publication(torch.zeros(SIZE), "shard 0")
    refuse = Add(applied=False)
    assert publication.update(refuse) == (0, False)  # in place: no holds
    held, _ = publication.acquire()
    assert publication.update(refuse) == (0, False)  # into a spare, which it scribbled on
    assert publication.version == 0
    assert publication.values is held.flat.tensor
    assert np.array_equal(values(publication), full(0.0))
    add = Add()
    publication.update(add)
    assert add.outs[0].tensor.data_ptr() == refuse.outs[1].tensor.data_ptr()  # the same spare, reused
    assert np.array_equal(values(publication), full(STEP))
    publication.release(held)


def test_an_update_within_the_version_publishes_its_values_and_keeps_the_version():
    # What a rule whose version counts clocks, not updates, returns (stale synchronous parallel).
    publication = Publication(torch.zeros(SIZE), "shard 0")
    add = Add()

    def within(values, out):
        add(values, out)
        return Applied.SAME_VERSION

    assert publication.update(within) == (0, False)  # in place (no holds), and no update counted
    assert np.array_equal(values(publication), full(STEP))
    held, version = publication.acquire()
    assert publication.update(within) == (0, False)  # into a spare, published
    assert publication.version == 0 and version == 0
    assert np.array_equal(held.flat.array, full(STEP))  # a held buffer still holds still
    assert np.array_equal(values(publication), full(2 * STEP))
    assert not publication.reached(1)
    assert publication.update(add) == (0, True) and publication.version == 1  # True is a new version
    publication.release(held)


def test_advance_counts_an_update_that_changed_no_values():
    publication = Publication(torch.ones(SIZE), "shard 0")
    published = publication.values
    assert publication.advance() == 0
    assert publication.advance() == 1
    assert publication.version == 2
    assert publication.values is published and torch.equal(published, torch.ones(SIZE))


# -- version waits, timeouts, close ------------------------------------------------------------
def test_a_read_of_a_version_reached_answers_at_once():
    publication = Publication(torch.zeros(SIZE), "shard 0")
    publication.update(Add())
    buffer, version = publication.acquire(at_least=1, timeout=0)
    assert version == 1
    publication.release(buffer)
    assert publication.copy_to(full(0.0), at_least=0, timeout=0) == 1


def test_a_waiting_acquire_returns_once_the_version_is_reached():
    publication = Publication(torch.zeros(SIZE), "shard 0")
    waiting = watch_waits(publication)
    with reading_threads(publication) as pool:
        acquired = pool.submit(publication.acquire, 2)
        assert waiting.wait(timeout=30)
        publication.update(Add())
        assert not acquired.done()  # version 1 < 2: still waiting
        publication.update(Add())
        buffer, version = acquired.result(timeout=30)
    assert version == 2
    assert np.array_equal(buffer.flat.array, full(2 * STEP))
    publication.release(buffer)


def test_waiting_reads_each_return_at_their_own_version():
    publication = Publication(torch.zeros(SIZE), "shard 0")
    waiting = watch_waits(publication, readers=3)
    with reading_threads(publication, 3) as pool:
        copies = {v: pool.submit(copy_at_least, publication, v) for v in (1, 2, 3)}
        assert waiting.wait(timeout=30)
        for target in (1, 2, 3):
            publication.update(Add())
            version, out = copies[target].result(timeout=30)
            assert version == target and np.array_equal(out, full(target * STEP))
            assert not any(copies[later].done() for later in (1, 2, 3) if later > target)


def test_advance_ends_a_wait_for_its_version():
    publication = Publication(torch.zeros(SIZE), "shard 0")
    waiting = watch_waits(publication)
    with reading_threads(publication) as pool:
        copied = pool.submit(copy_at_least, publication, 1)
        assert waiting.wait(timeout=30)
        publication.advance()
        assert copied.result(timeout=30)[0] == 1


@pytest.mark.parametrize("read", ["acquire", "copy_to"])
def test_a_read_that_waits_too_long_raises_timeout_error(read):
    publication = Publication(torch.zeros(SIZE), "center")
    publication.update(Add())
    with pytest.raises(TimeoutError) as timed_out:
        if read == "acquire":
            publication.acquire(at_least=3, timeout=0.05)
        else:
            publication.copy_to(full(0.0), at_least=3, timeout=0.05)
    assert str(timed_out.value) == "center: version 1 did not reach 3 within 0.05 s"
    add = Add()
    publication.update(add)
    assert add.outs == [None]  # the read that timed out holds nothing: the update went in place


def test_close_ends_a_waiting_read_with_shard_closed():
    publication = Publication(torch.zeros(SIZE), "shard 0")
    publication.update(Add())
    waiting = watch_waits(publication, readers=2)
    with reading_threads(publication, 2) as pool:
        acquired = pool.submit(publication.acquire, 5)  # no timeout: only close ends this wait
        copied = pool.submit(publication.copy_to, full(0.0), 5)
        assert waiting.wait(timeout=30)
        publication.close()
        for read in (acquired, copied):
            with pytest.raises(ShardClosed) as closed:
                read.result(timeout=30)
            assert str(closed.value) == "shard 0 closed at version 1 before 5"
    assert publication.closed


def test_after_close_a_version_reached_is_read_and_any_other_refused_at_once():
    publication = Publication(torch.zeros(SIZE), "shard 0")
    publication.update(Add())
    publication.close()
    assert publication.copy_to(full(0.0), at_least=1) == 1
    with pytest.raises(ShardClosed) as closed:
        publication.acquire(at_least=2)  # no timeout: a read that waited would wait for ever
    assert str(closed.value) == "shard 0 closed at version 1 before 2"


# -- restore -------------------------------------------------------------------------------------
def test_restore_publishes_a_copy_of_the_values_at_their_version_and_wakes_waits():
    publication = Publication(torch.zeros(SIZE), "shard 0")
    waiting = watch_waits(publication)
    saved = torch.arange(SIZE, dtype=torch.float32)
    with reading_threads(publication) as pool:
        copied = pool.submit(copy_at_least, publication, 5)
        assert waiting.wait(timeout=30)
        publication.restore(saved, 7)
        version, out = copied.result(timeout=30)
    assert version == publication.version == 7
    assert np.array_equal(out, np.arange(SIZE, dtype=np.float32))
    saved.fill_(9.0)  # restored values are the publication's own
    assert torch.equal(publication.values, torch.arange(SIZE, dtype=torch.float32))
    publication.restore(torch.ones(SIZE, dtype=torch.float64), 8)
    assert publication.values.dtype == torch.float32 and publication.version == 8


def test_restore_leaves_a_held_buffer_alone_and_drops_the_spares():
    publication = Publication(torch.zeros(SIZE), "shard 0")
    add = Add()
    held, _ = publication.acquire()
    publication.update(add)
    publication.release(held)  # now a spare
    spare = held.flat.tensor  # kept alive: a new buffer cannot take its address
    kept, _ = publication.acquire()
    publication.restore(torch.ones(SIZE), 4)
    assert np.array_equal(kept.flat.array, full(STEP))  # a read in progress is never changed
    reader, _ = publication.acquire()
    assert publication.update(add) == (4, True)
    assert add.outs[-1].tensor.data_ptr() not in (spare.data_ptr(), kept.flat.tensor.data_ptr())  # a new one
    publication.release(reader)
    publication.release(kept)
    assert np.array_equal(values(publication), full(1.0 + STEP))


# -- concurrency ---------------------------------------------------------------------------------
READERS, UPDATES, LENGTH = 3, 300, 64


def assert_consistent(array: np.ndarray, version: int) -> None:
    """Every element at ``version * STEP``: a torn read (half of one update) would show two values."""
    assert np.array_equal(array, full(version * STEP, LENGTH)), f"at version {version}: {np.unique(array)}"


def test_concurrent_reads_never_see_half_an_update_and_held_buffers_hold_still():
    publication = Publication(torch.zeros(LENGTH), "shard 0")
    start = threading.Barrier(READERS + 1, timeout=30)

    def updater():  # the one writer: the caller serializes updates
        start.wait()
        add = Add()
        for _ in range(UPDATES):
            publication.update(add)
        return add.outs

    def reader():
        held, version = publication.acquire()  # every reader holds version 0 when the updates start
        start.wait()
        later = np.empty(LENGTH, np.float32)
        while version < UPDATES:
            assert_consistent(held.flat.array, version)
            newer = publication.copy_to(later, at_least=version + 1, timeout=30)  # updates go on meanwhile
            assert_consistent(later, newer)
            assert_consistent(held.flat.array, version)  # and the held buffer held still
            publication.release(held)
            held, version = publication.acquire()
        assert_consistent(held.flat.array, version)
        publication.release(held)

    with ThreadPoolExecutor(READERS + 1) as pool:
        readers = [pool.submit(reader) for _ in range(READERS)]
        outs = pool.submit(updater).result(timeout=60)
        for read in readers:
            read.result(timeout=60)

    assert publication.version == UPDATES
    assert_consistent(values(publication), UPDATES)
    spares = {out.tensor.data_ptr() for out in outs if out is not None}
    assert spares  # the first update found version 0 held
    # Buffers are made only when no spare is free: at most the published one,
    # the one being written, and two held by each reader (its own and a copy's).
    assert len(spares) <= 2 * READERS + 2
