"""One shard as a Ray actor: a thin shell over ``ps.Shard``.

Every rule lives in the Shard; this class only turns arrays from the object
store into tensors and back, refuses pushes once the run is over, and
checkpoints. It is a plain class: ``ray.remote(ShardActor)`` makes the actor
(``lab.backends.ray``), and tests call it directly.

Tensors. Arguments arrive as numpy arrays. Large ones are read-only views of
the object store's shared memory, and the shard only reads gradients, so
nothing is copied. A pull returns the published snapshot itself, lent to
its reader: Ray copies it into the object store once, after the method
returns, and the hold keeps it unchanged until then. The reader's next call
ends the loan; it comes only after the reader has received the result.

Crashes. Ray restarts a shard actor that dies (``max_restarts``), by
running ``__init__`` again, which resumes from the last checkpoint of this
run (``ps.recovery``: with a journal, it then replays the pushes logged
after it). Without a journal its version clock goes back to the
checkpoint's. Each life of the actor has its own token, returned with every
answer, and versions read in an earlier life count as this life's
(``ps.recovery.Life``).
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import torch

from asyncps.ps.flat import Flat
from asyncps.ps.publication import Buffer, ShardClosed
from asyncps.ps.recovery import Life, RecoveryPlan, Resumed
from asyncps.ps.rules import ServerRule
from asyncps.ps.shard import Shard


def _warn_once_quietly() -> None:
    """Arrays from the object store are read-only, and torch warns, once per
    process, that writing to them would be undefined. The shards and clients
    only read them: the one warning is had here, silenced."""
    read_only = np.zeros(1, dtype=np.float32)
    read_only.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.from_numpy(read_only)


_warn_once_quietly()


def tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor over ``array``'s memory (no copy), read-only if the array is."""
    return torch.from_numpy(array)


class ShardActor:
    def __init__(self, index: int, values: np.ndarray, tables: dict[str, np.ndarray], rule: ServerRule,
                 recovery: RecoveryPlan | None = None, run: str = "", workers: int | None = None):
        """``recovery``: where and how often this shard saves checkpoints (and
        logs its pushes), and resumes from when restarted; only a checkpoint of
        ``run`` (one id per run) is taken. ``workers``: the run's worker
        count, which push ids are checked against."""
        torch.set_num_threads(1)
        self.shard = Shard(index, tensor(values), {name: tensor(t) for name, t in tables.items()}, rule, workers)
        self.life = Life(self.shard)
        self.recovery = recovery.attach(self.shard, run) if recovery else None
        self.resumed = self.recovery.resume() if self.recovery else Resumed(None, 0)
        self._lent: dict = {}  # reader -> the buffer its last pull returned
        self._lent_lock = threading.Lock()

    def status(self) -> dict:
        """This life's token, the version, and what it resumed from (``ps.recovery.Resumed``)."""
        return {"shard": self.shard.index, "life": self.life.token, "version": self.shard.version,
                "resumed": tuple(self.resumed), "closed": self.shard.closed}

    # -- the verbs ---------------------------------------------------------------
    def pull(self, reader, min_version: int, life: str | None) -> tuple[np.ndarray, int, str]:
        buffer, version = self.shard.dense.acquire(self.life.version(min_version, life))
        self._lend(reader, buffer)
        return buffer.flat.array, version, self.life.token

    def push(self, grad: np.ndarray, span: tuple[int, int] | None, read_version: int, worker: int,
             life: str | None) -> tuple[int, int, bool, str]:
        """``grad[span[0]:span[1]]`` is this shard's part (a whole gradient put
        once in the object store serves every shard); ``span=None``: all of it.
        Returns the read version as counted, the version at arrival, whether
        the rule applied it, and this life's token."""
        self._refuse_if_closed()
        self._lend(worker, None)
        part = grad if span is None else grad[span[0]:span[1]]
        read_version = self.life.version(read_version, life)
        self.shard.check_push(tensor(part), read_version, worker)
        push = self.shard.push(Flat(tensor(part), part), read_version, worker)
        self._after(push.applied)
        return push.read_version, push.version, push.applied, self.life.token

    def pull_rows(self, table: str, ids: np.ndarray) -> tuple[np.ndarray, int, str]:
        self.shard.check_ids(table, tensor(ids))
        rows, version = self.shard.pull_rows(table, tensor(ids))
        return rows.numpy(), version, self.life.token

    def push_rows(self, table: str, ids: np.ndarray, grad_rows: np.ndarray, read_version: int, worker: int,
                  life: str | None) -> tuple[int, int, bool, str]:
        self._refuse_if_closed()
        ids, grad_rows, read_version = tensor(ids), tensor(grad_rows), self.life.version(read_version, life)
        self.shard.check_push_rows(table, ids, grad_rows, read_version, worker)
        push = self.shard.push_rows(table, ids, grad_rows, read_version, worker)
        self._after(push.applied)
        return push.read_version, push.version, push.applied, self.life.token

    def set_lr_factor(self, factor: float) -> None:
        self.shard.set_lr_factor(factor)

    def release(self, reader) -> None:
        """End ``reader``'s loan (a worker that died will not call again)."""
        self._lend(reader, None)

    def _lend(self, reader, buffer: Buffer | None) -> None:
        with self._lent_lock:
            previous = self._lent.pop(reader, None)
            if buffer is not None:
                self._lent[reader] = buffer
        if previous is not None:
            self.shard.dense.release(previous)

    def close(self) -> dict:
        """End the run: waiting pulls raise ShardClosed, and so do later pushes."""
        self.shard.close()
        return self.status()

    # -- the shell's own work ------------------------------------------------------
    def _refuse_if_closed(self) -> None:
        if self.shard.closed:
            raise ShardClosed(f"shard {self.shard.index}: the run is over")

    def _after(self, applied: bool) -> None:
        if self.recovery is not None:
            self.recovery.after(applied)
