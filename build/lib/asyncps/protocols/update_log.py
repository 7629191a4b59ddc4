r"""What the server applied since a worker's read, kept on the server.

AdaptiveRevision needs, at push time, the sum of the gradients applied since
the pushing worker read (``g_bck = ḡ_now − ḡ_at_read``); DC-ASGD needs the
sum of the parameter changes applied since it read (``w − w_bak(m)``). Pulls
never reach a server rule, but every push carries the version its worker
read, so a rule can answer both from a log of what each applied update did,
keyed by the shard version at which it was applied::

    record(version, worker, delta[, ids]):  entries[version] = delta
    since(read_version[, ids]) = Σ entries[v] for v >= read_version

A read at version r has seen the updates applied at versions < r, so the
updates it missed are those at r and later. Dense entries are full vectors;
row entries are sorted unique local ids with their rows, and ``since(read,
ids)`` sums, for each asked id, the rows of the entries that hold it.

This is how Petuum Bösen runs AdaptiveRevision (``ServerRowSent``): the
server keeps snapshots of ``ḡ`` keyed by the version a client read, clients
tag their updates with that version, and nothing about ``ḡ`` goes over the
wire.

Trimming. A worker pulls after it pushes, so its later reads are never older
than the version at which its last push arrived. Entries older than the
oldest of the workers' last pushes can no longer be asked for, and are
dropped once every worker has pushed. So the log holds about the updates in
flight: with K workers in round robin, K entries. A push that reads older
than what was dropped raises rather than summing an incomplete window.

Bound. A worker that stays silent (dead, or far slower than the rest) would
hold trimming back for good, and the log would grow by a delta a push. So it
keeps at most ``LOG_ENTRIES_PER_WORKER`` entries per worker (the updates of
32 rounds of every worker) and drops the oldest beyond that: the silent
worker is treated as gone, and its next push, read before what was dropped,
is refused with an error that says so. Memory stays below that many deltas
(for a dense slice, that many copies of it).
"""

from __future__ import annotations

from bisect import bisect_left

import torch

from asyncps.optim.validation import check

NEVER = -1  # last_push of a worker that has not pushed yet
LOG_ENTRIES_PER_WORKER = 32  # the log's bound, per worker of the run: 32 rounds of every worker's updates


class UpdateLog:
    """The applied updates of one tensor (a shard's dense slice, or one table)."""

    def __init__(self, shape: tuple[int, ...], num_workers: int, dtype: torch.dtype = torch.float32):
        self.shape = tuple(shape)
        self.dtype = dtype
        self.versions: list[int] = []  # increasing: pushes to a shard are applied one at a time
        self.ids: list[torch.Tensor | None] = []  # sorted unique local ids of a row entry; None: dense
        self.deltas: list[torch.Tensor] = []
        self.last_push = [NEVER] * num_workers
        self.kept_from = 0  # entries applied before this version were dropped

    @classmethod
    def like(cls, values: torch.Tensor, num_workers: int) -> UpdateLog:
        return cls(tuple(values.shape), num_workers, values.dtype)

    def __len__(self) -> int:
        return len(self.versions)

    def since(self, read_version: int, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The sum of the entries applied at versions >= ``read_version``:
        the whole tensor, or (``ids``, sorted and unique) those rows of it."""
        check(read_version >= self.kept_from, "read version", read_version,
              f"updates before version {self.kept_from} were dropped from the log: a worker must pull after "
              f"it pushes, as the plain asynchronous loop does, and not fall more than "
              f"{LOG_ENTRIES_PER_WORKER * len(self.last_push)} updates behind")
        shape = self.shape if ids is None else (ids.numel(), *self.shape[1:])
        total = torch.zeros(shape, dtype=self.dtype)
        missed = range(bisect_left(self.versions, read_version), len(self.versions))
        if ids is None:
            for k in missed:
                total.add_(self.deltas[k])
        elif missed and ids.numel():
            # Every row the missed entries touched, at once: with delays of
            # thousands of updates a loop over the entries would dominate.
            rows = torch.cat([self.ids[k] for k in missed])
            where = torch.searchsorted(ids, rows).clamp_(max=ids.numel() - 1)
            hit = ids[where] == rows
            total.index_add_(0, where[hit], torch.cat([self.deltas[k] for k in missed])[hit])
        return total

    def check_worker(self, worker: int) -> None:
        """A rule asks before it changes anything: a push it refuses must change nothing."""
        check(0 <= worker < len(self.last_push), "worker", worker,
              f"workers are numbered 0..{len(self.last_push) - 1}, the num_workers given to server_rule")

    def record(self, version: int, worker: int, delta: torch.Tensor, ids: torch.Tensor | None = None) -> None:
        """Log ``delta`` (kept, not copied), applied at ``version`` for ``worker``."""
        self.check_worker(worker)
        if ids is None or ids.numel():  # a push of no rows changes nothing anyone can ask for
            self.versions.append(version)
            self.ids.append(ids)
            self.deltas.append(delta)
        self.last_push[worker] = version
        oldest = min(self.last_push)
        if oldest > self.kept_from:  # NEVER (-1) holds trimming until every worker has pushed
            self._drop_before(bisect_left(self.versions, oldest), oldest)
        excess = len(self.versions) - LOG_ENTRIES_PER_WORKER * len(self.last_push)
        if excess > 0:  # a silent worker holds trimming back: it is treated as gone
            self._drop_before(excess, self.versions[excess])

    def _drop_before(self, drop: int, kept_from: int) -> None:
        del self.versions[:drop], self.ids[:drop], self.deltas[:drop]
        self.kept_from = kept_from

    def state_dict(self) -> dict:
        """Tensors and plain values only, so a checkpoint loads with ``weights_only``."""
        return {"shape": list(self.shape), "dtype": str(self.dtype).removeprefix("torch."),
                "versions": list(self.versions), "ids": [None if i is None else i.clone() for i in self.ids],
                "deltas": [d.clone() for d in self.deltas], "last_push": list(self.last_push),
                "kept_from": self.kept_from}

    @classmethod
    def from_state_dict(cls, saved: dict) -> UpdateLog:
        log = cls(tuple(saved["shape"]), len(saved["last_push"]), getattr(torch, saved["dtype"]))
        log.versions = [int(v) for v in saved["versions"]]
        log.ids = [None if i is None else i.clone() for i in saved["ids"]]
        log.deltas = [d.clone() for d in saved["deltas"]]
        log.last_push = [int(v) for v in saved["last_push"]]
        log.kept_from = int(saved["kept_from"])
        return log
