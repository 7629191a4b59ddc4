"""The run's record: ``Metrics`` writes JSON lines a batch at a time."""

from __future__ import annotations

import json
import math
import threading

import lab.metrics
from lab.metrics import FLUSH_EVERY, Metrics


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
    monkeypatch.setattr(lab.metrics.time, "monotonic", lambda: now[0])
    metrics = Metrics(tmp_path / "m.jsonl", clock=lambda: 0.0)
    metrics.record("train", step=0)
    now[0] += lab.metrics.FLUSH_WITHIN_SECONDS / 2
    metrics.record("train", step=1)
    metrics._file.flush()
    assert (tmp_path / "m.jsonl").read_text() == ""
    now[0] += lab.metrics.FLUSH_WITHIN_SECONDS
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
