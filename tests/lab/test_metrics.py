"""The run's record: ``Metrics`` writes JSON lines a batch at a time."""

from __future__ import annotations

import json
import math
import threading

import asyncps.lab.metrics
from asyncps.lab.metrics import FLUSH_EVERY, Metrics, push_delays


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_reach_the_file_in_order_as_json_lines(tmp_path):
    clock = iter([0.0, 0.25, 1.0000004, 2.5]).__next__  # the first is the start
    with Metrics(tmp_path / "m.jsonl", clock=clock) as metrics:
        metrics.record("train", worker=1, loss=0.5, epoch=0)
        metrics.record("push", worker=1, shard=0, version=3, staleness=2, applied=True)
        metrics.record("event", message='worker 2 failed: "boom"', loss=math.nan)
    assert (tmp_path / "m.jsonl").read_text() == (
        '{"time": 0.25, "kind": "train", "worker": 1, "loss": 0.5, "epoch": 0}\n'
        '{"time": 1.0, "kind": "push", "worker": 1, "shard": 0, "version": 3, "staleness": 2, "applied": true}\n'
        '{"time": 2.5, "kind": "event", "message": "worker 2 failed: \\"boom\\"", "loss": NaN}\n')


def test_a_full_batch_is_written_without_waiting_for_close(tmp_path):
    metrics = Metrics(tmp_path / "m.jsonl", clock=lambda: 0.0)
    for step in range(FLUSH_EVERY - 1):
        metrics.record("train", step=step)
    metrics._file.flush()
    assert (tmp_path / "m.jsonl").read_text() == ""  # a batch is not full yet
    metrics.record("train", step=FLUSH_EVERY - 1)
    metrics._file.flush()
    assert [m["step"] for m in lines(tmp_path / "m.jsonl")] == list(range(FLUSH_EVERY))
    metrics.close()


def test_a_record_waits_no_longer_than_flush_seconds_while_records_come(tmp_path, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(asyncps.lab.metrics.time, "monotonic", lambda: now[0])
    metrics = Metrics(tmp_path / "m.jsonl", clock=lambda: 0.0)
    metrics.record("train", step=0)
    now[0] += asyncps.lab.metrics.FLUSH_WITHIN_SECONDS / 2
    metrics.record("train", step=1)
    metrics._file.flush()
    assert (tmp_path / "m.jsonl").read_text() == ""
    now[0] += asyncps.lab.metrics.FLUSH_WITHIN_SECONDS
    metrics.record("train", step=2)
    metrics._file.flush()
    assert [m["step"] for m in lines(tmp_path / "m.jsonl")] == [0, 1, 2]
    metrics.close()


def test_flush_writes_what_was_recorded_and_listeners_hear_at_once(tmp_path):
    heard = []
    metrics = Metrics(tmp_path / "m.jsonl", clock=lambda: 0.0)
    metrics.listeners.append(lambda kind, fields: heard.append((kind, fields)))
    metrics.record("eval", updates=10, test_accuracy=0.5)
    assert heard == [("eval", {"updates": 10, "test_accuracy": 0.5})]
    metrics.flush()
    assert lines(tmp_path / "m.jsonl") == [{"time": 0.0, "kind": "eval", "updates": 10, "test_accuracy": 0.5}]
    metrics.close()
    metrics.close()  # closing twice is harmless


def test_records_from_many_threads_are_all_written_whole(tmp_path):
    with Metrics(tmp_path / "m.jsonl") as metrics:
        def work(worker):
            for step in range(500):
                metrics.record("train", worker=worker, step=step)
        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    written = lines(tmp_path / "m.jsonl")
    assert sorted((m["worker"], m["step"]) for m in written) == [(w, s) for w in range(4) for s in range(500)]


def turns(workers: int, rounds: int) -> list[dict]:
    """A sparse model on one shard, ``workers`` taking turns as in virtual time:
    each reads (rows and dense part) at one version, then pushes its rows, then
    its dense part, two updates a push."""
    records, version = [], 0
    read = {w: 0 for w in range(workers)}
    for step in range(1, rounds + 1):
        for w in range(workers):
            records.append({"kind": "train", "worker": w, "step": step})
        for w in range(workers):
            for _ in ("rows", "dense"):
                records.append({"kind": "push", "worker": w, "shard": 0, "version": version,
                                "staleness": version - read[w], "applied": True})
                version += 1
            read[w] = version  # its next read, after its own push
    return records


def test_push_delays_count_the_other_workers_pushes_not_the_shard_updates():
    records = turns(workers=3, rounds=3)
    # All three read at version 0, so the first round missed 0, 1 and 2 pushes; afterwards each push
    # missed the other two's, four updates.
    assert push_delays(records) == [0, 0, 1, 1, 2, 2] + [2] * 12
    assert [m["staleness"] for m in records if m["kind"] == "push"][-2:] == [4, 5]  # its own rows count there


def test_push_delays_on_several_shards_and_missing_records():
    records = [
        {"kind": "train", "worker": 0, "step": 1}, {"kind": "train", "worker": 1, "step": 1},
        {"kind": "push", "worker": 0, "shard": 0, "version": 0, "staleness": 0, "applied": True},
        {"kind": "push", "worker": 0, "shard": 1, "version": 0, "staleness": 0, "applied": True},
        {"kind": "push", "worker": 1, "shard": 0, "version": 1, "staleness": 1, "applied": True},
        {"kind": "push", "worker": 1, "shard": 1, "version": 1, "staleness": 1, "applied": False},  # dropped
        {"kind": "train", "worker": 0, "step": 2},
        # Read at version 0 on shard 1, it missed its own first push (one an earlier gradient) and
        # versions 1 and 2, made by pushes with no record: each of those counts as one push.
        {"kind": "push", "worker": 0, "shard": 1, "version": 3, "staleness": 3, "applied": True},
    ]
    assert push_delays(records) == [0, 0, 1, 1, 3]
