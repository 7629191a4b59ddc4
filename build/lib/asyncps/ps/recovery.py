"""How a shard outlives its process: periodic checkpoints, and on request a write-ahead log.

``Recovery`` is shared by the shells that run a shard in a process of its own
(``ps.ray_server``, ``ps.grpc_server``). In its directory it keeps:

- ``shard-<i>.pt``: a checkpoint, saved every ``checkpoint_every`` applied
  updates (``ps.checkpoint``), tagged with the run;
- ``shard-<i>.<first>.wal``: with ``durability`` "log" or "fsync", the
  journal of every push since that checkpoint (``ps.journal``).

``resume()`` (once, at start) loads the checkpoint of this run, if any, then
replays the journal's pushes after it, through the same rule and in the
same order: with a journal, a restarted shard is where it was when it died,
every acknowledged push included. Without one, the updates since the last
checkpoint are lost, and the version clock goes back to the checkpoint's.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import NamedTuple

from asyncps.ps.checkpoint import restore, save
from asyncps.ps.flat import Flat
from asyncps.ps.journal import Journal, read
from asyncps.ps.shard import Shard


class Resumed(NamedTuple):
    restored: int | None  # the checkpoint's version; None: there was none of this run
    replayed: int  # pushes replayed from the journal after it

    def describe(self) -> str:
        """What a restarted shard did, for an event."""
        start = (f"it resumed from its checkpoint at version {self.restored}" if self.restored is not None else
                 "it had no checkpoint and started over from the initial parameters at version 0")
        return start + (f", then replayed {self.replayed} logged pushes" if self.replayed else "")


class Life:
    """One life of a shard's process (a Ray actor, an ``asyncps serve``).

    Its token goes with every answer, and a caller sends back the token of
    the answer its versions came from. A restart may set the version clock
    back, so a version read in another life counts as at most this life's
    version: a push takes it as a read of the current version, and a pull
    waits for no version of an earlier life.
    """

    def __init__(self, shard: Shard):
        self.shard = shard
        self.token = uuid.uuid4().hex

    def version(self, version: int, read_in: str | None) -> int:
        """``version``, read in the life ``read_in`` (None or empty: this one), as a version of this life."""
        return min(version, self.shard.version) if read_in and read_in != self.token else version


class RecoveryPlan(NamedTuple):
    """Where and how a run's shards keep themselves (picklable: handed to each shard's process)."""

    directory: str
    checkpoint_every: int  # applied updates between checkpoints (0: none)
    durability: str = "none"  # "none", or a journal: "log" or "fsync" (``ps.journal``)

    def attach(self, shard: Shard, run: str) -> Recovery:
        return Recovery(shard, self.directory, run, self.checkpoint_every, self.durability)


class Recovery:
    def __init__(self, shard: Shard, directory: str | Path, run: str, checkpoint_every: int,
                 durability: str = "none"):
        self.shard = shard
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.checkpoint = directory / f"shard-{shard.index}.pt"
        self.run = run
        self.checkpoint_every = checkpoint_every
        self.journal = Journal(directory / f"shard-{shard.index}", run, durability) if durability != "none" else None
        self.extra: dict = {}  # the shell's own state, saved with each checkpoint (a gRPC shard's finished workers)
        self._saved = 0
        self._save_lock = threading.Lock()

    def resume(self) -> Resumed:
        """Load this run's checkpoint, replay the journal after it, and start journaling."""
        found = restore(self.shard, self.checkpoint, self.run)
        restored = None if found is None else found[0]
        self.extra = {} if found is None else found[1]
        replayed = 0
        if self.journal is not None:
            for record in read(self.journal.stem, self.run, self.shard.accepted):
                try:
                    if record.table:
                        self.shard.push_rows(record.table, record.ids, record.grad.view(len(record.ids), -1),
                                             record.read_version, record.worker)
                    else:
                        self.shard.push(Flat.of(record.grad), record.read_version, record.worker)
                except ValueError:
                    pass  # the rule refused it the first time too (nothing was applied, nothing acknowledged)
                replayed += 1
            self.journal.tidy()
            self.shard.journal = self.journal
        self._saved = self.shard.version
        return Resumed(restored, replayed)

    def after(self, applied: bool) -> None:
        """After a push: save a checkpoint once ``checkpoint_every`` updates have been applied since the last."""
        if not (applied and self.checkpoint_every) or self.shard.version - self._saved < self.checkpoint_every:
            return
        with self._save_lock:  # one save at a time, and never an older one over a newer one
            if self.shard.version - self._saved >= self.checkpoint_every:
                self._save()

    def save(self) -> None:
        with self._save_lock:
            self._save()

    def _save(self) -> None:
        if self.journal is not None:
            with self.shard.lock:
                self.journal.rotate()  # the checkpoint will hold what came before: a segment can go with it
        accepted = self.shard.accepted  # read before the state: the checkpoint has at least these
        self._saved = save(self.shard, self.checkpoint, self.run, self.extra)
        if self.journal is not None:
            self.journal.drop_before(accepted)

    def close(self) -> None:
        if self.journal is not None:
            with self.shard.lock:
                self.shard.journal = None
                self.journal.close()
