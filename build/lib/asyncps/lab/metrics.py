"""The run's record: ``metrics.jsonl``, one JSON object a line, and its summary.

Every line has ``time`` (seconds since the start, wall or virtual) and
``kind``: ``train`` (worker, step, loss), ``push`` (worker, shard, version,
staleness, applied), ``eval`` (updates, validation and test metrics, and the
staleness summary of the pushes since the previous evaluation, filled in by
``finalize_metrics``) and ``event`` (message). ``summary.json`` is computed back from the file, so it means the
same on every backend. :func:`read_metrics` is the file's one reader: the summary, the plots and the reports
(``lab.reports.rundir``) all read it through it. A push's ``staleness`` counts shard updates; :func:`push_delays`
counts its delay in pushes (gradients) instead.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from json.encoder import c_make_encoder, encode_basestring_ascii
from typing import Callable

import numpy as np


def staleness_summary(values: list[int]) -> dict:
    if not values:
        return {"count": 0, "mean": None, "p95": None, "max": None}
    arr = np.asarray(values)
    return {"count": int(arr.size), "mean": float(arr.mean()), "p95": float(np.percentile(arr, 95)),
            "max": int(arr.max())}


# json.dumps's own C encoder, made once rather than for every line (as json.dumps
# does), and without the circular check that flat records never need.
_iterencode = c_make_encoder(None, json.JSONEncoder().default, encode_basestring_ascii, None, ": ", ", ",
                             False, False, True)


def _encode(record: dict) -> str:
    return "".join(_iterencode(record, 0))


FLUSH_EVERY = 256  # records kept before they are encoded and written together
FLUSH_WITHIN_SECONDS = 1.0  # and the longest a record waits for the file, if records keep coming


class Metrics:
    """A thread-safe JSONL writer; ``record(kind, **fields)`` is what workers are handed.

    Records are encoded and written a batch at a time (``FLUSH_EVERY``, or
    ``FLUSH_WITHIN_SECONDS`` after the first one waiting, and on ``flush`` and
    ``close``): a simulated run writes thousands a second, and one loop over
    a batch costs less than as many single lines between gradients. A
    record's fields are encoded when written, so pass values, not objects
    you change afterwards. Listeners hear of each record at once.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.time, start: float | None = None):
        """Times are seconds since ``start`` (default: now) on ``clock``: wall
        time, so that records written by several processes line up."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w")
        self._lock = threading.Lock()
        self._pending: list[tuple[float, str, dict]] = []  # (time, kind, fields) not yet written
        self._due = 0.0  # time.monotonic() by which the pending records are written
        self._clock = clock
        self.start = clock() if start is None else start
        self.listeners: list[Callable[[str, dict], None]] = []  # told of every record (a progress bar)

    def use_clock(self, clock: Callable[[], float], start: float = 0.0) -> None:
        """Measure time on another clock from here on (the simulator's virtual one)."""
        self._clock, self.start = clock, start

    def now(self) -> float:
        return self._clock() - self.start

    def record(self, kind: str, **fields) -> None:
        row = (self.now(), kind, fields)  # rounded when written, with the rest of its batch
        with self._lock:
            pending = self._pending
            pending.append(row)
            if len(pending) == 1:
                self._due = time.monotonic() + FLUSH_WITHIN_SECONDS
            elif len(pending) >= FLUSH_EVERY or time.monotonic() > self._due:
                self._write_pending()
        self.tell(kind, fields)

    def tell(self, kind: str, fields: dict) -> None:
        """Tell the listeners of a record (one written elsewhere: a remote worker's own file)."""
        for listener in self.listeners:
            listener(kind, fields)

    def flush(self) -> None:
        """Write every record so far to the file."""
        with self._lock:
            self._write_pending()
            self._file.flush()

    def _write_pending(self) -> None:
        self._file.write("".join([_encode({"time": round(t, 6), "kind": kind, **fields}) + "\n"
                                  for t, kind, fields in self._pending]))
        self._pending.clear()

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._write_pending()
            self._file.close()

    def __enter__(self) -> "Metrics":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``run_dir/metrics.jsonl``, in file order.

    A last line cut short (a run still writing, or killed) is skipped; a bad
    line anywhere else is an error naming it.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"Invalid run directory: '{run_dir}' (no metrics.jsonl in it; pass a directory that "
                         "asyncps run wrote)")
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise ValueError(f"Invalid metrics line {path}:{number}: {err.msg} (each line must be one JSON object)"
                             ) from None
    return records


WORKER_PARTS = "workers"  # <run_dir>/workers/worker-<w>.jsonl: what worker processes record


def finalize_metrics(run_dir: Path, start: float) -> None:
    """Put ``metrics.jsonl`` in its final form: the worker processes' records
    (absolute wall times, gRPC backend) folded in, everything in time order,
    and every evaluation given the staleness summary of the pushes since the
    previous one, derived here from the push records on every backend."""
    run_dir = Path(run_dir)
    parts = sorted((run_dir / WORKER_PARTS).glob("worker-*.jsonl"))
    lines = read_metrics(run_dir)
    for part in parts:
        for line in part.read_text().splitlines():
            record = json.loads(line)
            record["time"] = round(record["time"] - start, 6)
            lines.append(record)
    lines.sort(key=lambda m: m["time"])  # stable: an evaluation stays after the push that triggered it
    since_eval: list[int] = []
    for m in lines:
        if m["kind"] == "push":
            since_eval.append(m["staleness"])
        elif m["kind"] == "eval":
            m["staleness"], since_eval = staleness_summary(since_eval), []
    write_whole(run_dir / "metrics.jsonl", lambda path: path.write_text("".join(json.dumps(m) + "\n" for m in lines)))


def push_delays(records: list[dict]) -> list[int]:
    """Per push record, in file order: its delay counted in pushes, as McMahan
    & Streeter count it in gradients, where ``staleness`` counts shard updates.

    A push is what one worker sends after one gradient: its records from one
    ``train`` record to the next. One push can make several updates on a shard
    (a sparse model's rows, then its dense part), so a record's delay is the
    number of other pushes whose updates the shard applied between the read
    and this update: the record's ``staleness`` updates, attributed through the
    applied records that made them. An update no record made (a worker's
    records missing) counts as a push of its own. After a restore from a
    checkpoint a version made twice is attributed to the push that made it last.
    """
    steps: dict[int, int] = {}  # worker -> the step of its latest train record
    keyed = []  # (push record, (worker, step))
    made: dict[tuple[int, int], tuple] = {}  # (shard, version) -> the push whose update left that version
    for m in records:
        if m["kind"] == "train":
            steps[m["worker"]] = m["step"]
        elif m["kind"] == "push":
            push = (m["worker"], steps.get(m["worker"], 0))
            keyed.append((m, push))
            if m["applied"]:
                made[m["shard"], m["version"]] = push
    delays = []
    for m, push in keyed:
        shard, version = m["shard"], m["version"]
        missed = {made.get((shard, v), ("unrecorded", v)) for v in range(version - m["staleness"], version)}
        missed.discard(push)
        delays.append(len(missed))
    return delays


def write_whole(path: Path, write: Callable[[Path], None]) -> None:
    """``write`` the file beside ``path``, then rename it over ``path``: a
    crash mid-write leaves the previous file whole, and no partial file."""
    partial = path.with_name(path.name + ".partial")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def shard_accounts(pushes: list[dict], final: dict | None) -> dict:
    """Per shard: the pushes it acknowledged, those it applied, and those lost
    to a restore from a checkpoint (applied, yet not in its final version;
    None when the final versions could not be read)."""
    versions = final["shard_versions"] if final else None
    accounts = {}
    for shard in sorted({m["shard"] for m in pushes} | set(range(len(versions or ())))):
        acknowledged = [m for m in pushes if m["shard"] == shard]
        applied = sum(1 for m in acknowledged if m["applied"])
        lost = None if versions is None else applied - versions[shard]
        accounts[str(shard)] = {"acknowledged": len(acknowledged), "applied": applied, "lost": lost}
    return accounts


def summarize(run_dir: Path, target_accuracy: float) -> dict:
    """``summary.json``'s content, from ``metrics.jsonl``."""
    lines = read_metrics(run_dir)
    evals = [m for m in lines if m["kind"] == "eval"]
    pushes = [m for m in lines if m["kind"] == "push"]
    trains = [m for m in lines if m["kind"] == "train"]
    seconds = max((m["time"] for m in lines), default=0.0)
    final = {k: v for k, v in evals[-1].items() if k not in ("kind", "staleness")} if evals else {}
    reached = [m for m in evals if m.get("test_accuracy", -1) >= target_accuracy]
    per_worker = {}
    for m in pushes:
        per_worker.setdefault(m["worker"], []).append(m["staleness"])
    updates = final.get("updates", 0)
    return {"shards": shard_accounts(pushes, next((m for m in lines if m["kind"] == "final"), None)), "final": final,
            "best_test_accuracy": max((m.get("test_accuracy", float("nan")) for m in evals), default=None),
            "target_accuracy": target_accuracy, "time_to_target": reached[0]["time"] if reached else None,
            "run_time": seconds, "train_steps": len(trains), "pushes": len(pushes), "updates": updates,
            "updates_per_second": updates / seconds if seconds else None,
            "staleness": staleness_summary([m["staleness"] for m in pushes]),
            "staleness_per_worker": {str(w): staleness_summary(v) for w, v in sorted(per_worker.items())},
            "events": [m["message"] for m in lines if m["kind"] == "event"]}
