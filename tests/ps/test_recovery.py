"""A shard's checkpoints and write-ahead log: a shard resumed from them is the
shard that died, every logged push included, whatever the rule."""

from __future__ import annotations

import pytest
import torch

from asyncps import optim
from asyncps import protocols
from asyncps.ps import Flat, Shard
from asyncps.ps.journal import Journal, read
from asyncps.ps.recovery import Recovery, RecoveryPlan, Resumed

# Each push reads two versions back (the delay-aware rules keep a log window),
# but synchronous SGD's, which drops a stale gradient.
RULES = [
    ("downpour", {}, optim.Adagrad(lr=0.1)),
    ("sync", {}, optim.SGD(lr=0.5)),
    ("ssp", {"staleness": 2}, optim.Adam(lr=0.01)),  # its version counts clocks, not the updates applied
    ("dtadagrad", {}, optim.Adagrad(lr=0.1, initial_accumulator_value=1.0)),
    ("dcasgd", {"adaptive": True}, optim.Adam(lr=0.01)),
]
LAG = {"sync": 0}


def new_shard(name, options, optimizer) -> Shard:
    return Shard(0, torch.zeros(5), {"emb": torch.zeros(8, 2)}, protocols.create(name, **options).server_rule(
        optimizer, 2), workers=2)


def history(n: int) -> list:
    torch.manual_seed(4)
    return [(w, torch.randn(5), torch.randint(0, 8, (3,)), torch.randn(3, 2)) for w in (0, 1) * (n // 2)]


def push_all(shard: Shard, recovery: Recovery | None, part, lag: int = 2) -> None:
    for w, grad, ids, rows in part:
        try:
            push = shard.push_rows("emb", ids, rows, max(0, shard.version - lag), worker=w)
            recovery and recovery.after(push.applied)
        except ValueError as err:  # synchronous SGD takes no rows: a refusal is logged, and replayed as one
            assert "dense gradients only" in str(err)
        push = shard.push(Flat.of(grad), max(0, shard.version - lag), worker=w)
        recovery and recovery.after(push.applied)


def same(a: Shard, b: Shard) -> bool:
    return (a.version == b.version and a.accepted == b.accepted and torch.equal(a.dense.values, b.dense.values)
            and torch.equal(a.tables["emb"], b.tables["emb"]))


@pytest.mark.parametrize("name, options, optimizer", RULES)
def test_a_shard_resumed_from_its_checkpoint_and_journal_is_the_shard_that_died(tmp_path, name, options, optimizer):
    died = new_shard(name, options, optimizer)
    keeper = RecoveryPlan(str(tmp_path), checkpoint_every=5, durability="log").attach(died, "run-a")
    assert keeper.resume() == Resumed(None, 0)
    lag = LAG.get(name, 2)
    push_all(died, keeper, history(12), lag)  # checkpoints along the way, and a journal since the last one
    resumed = new_shard(name, options, optimizer)
    again = RecoveryPlan(str(tmp_path), checkpoint_every=5, durability="log").attach(resumed, "run-a")
    restored, replayed = again.resume()
    assert restored is not None and replayed > 0
    assert same(resumed, died)
    push_all(died, None, history(4), lag)  # and both go on alike, the resumed one journaling
    push_all(resumed, again, history(4), lag)
    assert same(resumed, died)


def test_without_a_journal_the_pushes_after_the_checkpoint_are_lost(tmp_path):
    died = new_shard(*RULES[0])
    keeper = RecoveryPlan(str(tmp_path), checkpoint_every=6).attach(died, "run-a")
    keeper.resume()
    push_all(died, keeper, history(8))  # 16 updates: checkpoints at 6 and 12
    resumed = new_shard(*RULES[0])
    assert RecoveryPlan(str(tmp_path), checkpoint_every=6).attach(resumed, "run-a").resume() == Resumed(12, 0)
    assert resumed.version == 12 and died.version == 16
    assert not list(tmp_path.glob("*.wal"))


def test_a_record_cut_short_by_a_crash_is_dropped_and_the_log_goes_on_after_it(tmp_path):
    died = new_shard(*RULES[0])
    keeper = RecoveryPlan(str(tmp_path), checkpoint_every=100, durability="fsync").attach(died, "run-a")
    keeper.resume()
    push_all(died, keeper, history(4))  # 8 pushes, no checkpoint yet: all in one segment
    (segment,) = tmp_path.glob("*.wal")
    whole = segment.read_bytes()
    segment.write_bytes(whole[:-7])  # the last push was being written when the process died: never acknowledged
    resumed = new_shard(*RULES[0])
    keeper = RecoveryPlan(str(tmp_path), checkpoint_every=100, durability="fsync").attach(resumed, "run-a")
    assert keeper.resume() == Resumed(None, 7)
    assert resumed.accepted == 7 and len(segment.read_bytes()) < len(whole) - 7  # cut back to whole records
    push_all(resumed, keeper, history(2))  # record 7 again, and on, after the cut
    assert [r.number for r in read(tmp_path / "shard-0", "run-a", 0)] == list(range(11))


def test_a_checkpoint_lets_the_segments_before_it_go(tmp_path):
    shard = new_shard(*RULES[0])
    keeper = RecoveryPlan(str(tmp_path), checkpoint_every=4, durability="log").attach(shard, "run-a")
    keeper.resume()
    push_all(shard, keeper, history(10))  # 20 updates, a checkpoint every 4
    segments = sorted(tmp_path.glob("*.wal"))
    assert len(segments) <= 2  # the one the last checkpoint cut, and the one being written
    first = min(int(p.name.split(".")[1]) for p in segments)
    assert first <= 20 - 4 < first + 8


def test_another_runs_log_is_never_replayed(tmp_path):
    other = new_shard(*RULES[0])
    keeper = RecoveryPlan(str(tmp_path), checkpoint_every=100, durability="log").attach(other, "run-a")
    keeper.resume()
    push_all(other, keeper, history(2))
    keeper.close()
    fresh = new_shard(*RULES[0])
    assert RecoveryPlan(str(tmp_path), checkpoint_every=100, durability="log").attach(fresh, "run-b").resume() \
        == Resumed(None, 0)
    assert fresh.version == 0 and not list(tmp_path.glob("*.wal"))  # run-a's segment is gone, not mixed in


def test_a_gap_in_the_log_is_an_error_not_a_silent_skip(tmp_path):
    shard = new_shard(*RULES[0])
    journal = Journal(tmp_path / "shard-0", "run-a", "log")
    for number in (0, 1, 3):
        journal.write(number, 0, 0, torch.ones(5).numpy())
    journal.close()
    with pytest.raises(ValueError, match=r"record 3 follows 1; record 2 is missing"):
        list(read(tmp_path / "shard-0", "run-a", 0))
    assert shard.version == 0
