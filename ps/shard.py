"""A parameter-server shard: one slice of the model, its server rule, a version clock.

``version`` counts the updates applied. Every push carries the version its
gradient was computed from, and ``staleness = version - read_version`` is
recorded for each push, per worker.

Dense values are published as snapshots, copy-on-write. A pull hands out the
published tensor itself, without copying it. A reader that names itself keeps
that snapshot unchanged until its next pull or push; anonymous readers get a
copy. An update that finds the published values held by a reader writes the
new values into a spare buffer (``Optimizer.step(..., out=)`` costs no extra
pass over memory) and publishes that buffer, so those pulls never wait. When
nobody holds them, it updates them in place.

Sparse tables are updated in place. Row pulls copy the rows they return
(``index_select``), so they need no snapshots.
"""

from __future__ import annotations

import math
import os
import threading
from collections import Counter, defaultdict
from functools import partial
from pathlib import Path
from typing import Hashable, NamedTuple

import numpy as np
import torch
from numba import njit

from ps.rules import Array, ServerRule


class Push(NamedTuple):
    """What the shard knew when a push arrived, and what became of it (a named
    tuple: one is made per shard for every push, thousands a second)."""

    shard: int
    worker: int
    read_version: int
    version: int  # the shard's version when the push arrived
    applied: bool  # False: buffered or dropped by the rule (synchronous SGD)

    @property
    def staleness(self) -> int:
        return self.version - self.read_version


class ShardClosed(RuntimeError):
    """The run is over: a pull that was waiting for a version will never get it."""


NUMBA_SCAN_BELOW = 1 << 16  # elements: below this, a loop in numba beats torch's per-op dispatch


def all_finite(t: Array) -> bool:
    """No NaN or Inf in ``t`` (a tensor or a numpy array), in one read.

    A small float32 one is scanned by a numba loop that stops at the first
    bad value: a shard checks thousands of small pushes a second. Otherwise a
    finite sum means every element is finite. NaN or Inf always makes the sum
    non-finite, but so does an overflow of large finite values; only in that
    case is the exact elementwise test run.
    """
    if isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.numel() < NUMBA_SCAN_BELOW \
            and not t.requires_grad:
        t = t.numpy()
    if isinstance(t, np.ndarray):
        if t.dtype == np.float32 and t.size < NUMBA_SCAN_BELOW:
            return _all_finite(t if t.ndim == 1 else t.reshape(-1))
        t = torch.as_tensor(t)
    return math.isfinite(t.sum().item()) or bool(torch.isfinite(t).all())


@njit(cache=True, nogil=True)
def _all_finite(values) -> bool:
    for x in values:
        if not np.isfinite(x):
            return False
    return True


class Shard:
    def __init__(self, index: int, values: torch.Tensor, tables: dict[str, torch.Tensor] | None, rule: ServerRule):
        self.index = index
        self.rule = rule
        self._published = values.detach().to(torch.float32).contiguous().clone()
        self.size = self._published.numel()  # fixed for the shard's life: every push is checked against it
        self._spare: list[torch.Tensor] = []  # buffers neither published nor held: the next updates' outputs
        self._held: dict[Hashable, torch.Tensor] = {}
        self._holders: dict[int, int] = {}  # id(buffer) -> readers holding it: O(1) checks with many workers
        self._arrays: dict[int, tuple[torch.Tensor, np.ndarray]] = {}  # id(buffer) -> (buffer, its numpy view)
        self.tables = {name: t.detach().to(torch.float32).contiguous().clone() for name, t in (tables or {}).items()}
        self.rule_state = rule.init(self._published)
        self.table_states = {name: rule.init(t) for name, t in self.tables.items()}
        self.version = 0
        self.closed = False
        self.staleness: dict[int, Counter] = defaultdict(Counter)  # worker -> staleness -> pushes
        # One plain lock guards _published, version, _held and _waiting (entered
        # with its C-level ``with``: several times for every push), and a
        # condition on that same lock lets pulls wait for a version.
        self._lock = threading.Lock()
        self._version_reached = threading.Condition(self._lock)
        self._waiting = 0  # pulls waiting for a version: an update notifies only when there are some
        self._update_lock = threading.Lock()  # one update at a time; tables and rule state

    # -- dense -----------------------------------------------------------------
    def pull(self, reader: Hashable | None = None, min_version: int = 0,
             timeout: float | None = None) -> tuple[torch.Tensor, int]:
        """The published values and their version, once ``version >= min_version``.

        With ``reader`` the tensor itself is returned and stays valid (unchanged)
        until that reader's next pull or ``release``; without, a copy.
        """
        with self._lock:
            if not self.reached(min_version):
                self._waiting += 1
                try:
                    self._version_reached.wait_for(partial(self.reached, min_version), timeout)
                finally:
                    self._waiting -= 1
            if self.version < min_version:
                if not self.closed:
                    raise TimeoutError(f"shard {self.index}: version {self.version} did not reach {min_version} "
                                       f"within {timeout} s")
                raise ShardClosed(f"shard {self.index} closed at version {self.version} before {min_version}")
            values, version = self._published, self.version
            if reader is None:
                return values.clone(), version
            self._hold(reader, values)
            return values, version

    def reached(self, min_version: int) -> bool:
        """Whether a pull for ``min_version`` answers now: the shard has applied
        that many updates, or has closed (the pull then raises ShardClosed)."""
        return self.version >= min_version or self.closed

    def close(self) -> None:
        """End the run: pulls waiting for a version the shard will not reach raise ShardClosed."""
        with self._lock:
            self.closed = True
            self._version_reached.notify_all()

    def release(self, reader: Hashable) -> None:
        with self._lock:
            self._hold(reader, None)

    def _hold(self, reader: Hashable, buffer: torch.Tensor | None) -> None:
        """Move ``reader``'s hold to ``buffer`` (None: let go)."""
        previous = self._held.pop(reader, None)
        if previous is not None:
            left = self._holders.pop(id(previous)) - 1
            if left:
                self._holders[id(previous)] = left
            elif previous is not self._published:
                self._spare.append(previous)
        if buffer is not None:
            self._held[reader] = buffer
            self._holders[id(buffer)] = self._holders.get(id(buffer), 0) + 1

    def push(self, grad: Array, read_version: int, worker: int = 0, reader: Hashable | None = None) -> Push:
        """Hand a gradient (a float32 tensor or numpy array) to the server rule.
        Bad input raises ValueError and changes nothing.

        A push from a named reader ends that reader's hold on its snapshot.
        """
        self.check_push(grad, read_version)
        return self.apply_push(grad, read_version, worker, reader)

    def check_push(self, grad: Array, read_version: int) -> None:
        """Raise ValueError if ``push`` would refuse this. Versions only grow, so
        what passes here still passes later: a client checks every shard first
        and a push refused by one shard changes none."""
        self._check_values(grad, (self.size,), "gradient")
        self.check_read_version(read_version)

    def check_read_version(self, read_version: int) -> None:
        """``check_push``'s check of the version alone, for a caller that has
        checked the gradient itself (the in-process client scans a whole
        gradient once rather than each shard's slice). It needs no lock: the
        version is read once, and it only grows."""
        version = self.version
        if not isinstance(read_version, int) or not 0 <= read_version <= version:
            raise ValueError(f"Invalid read_version for shard {self.index}: {read_version!r} "
                             f"(must be a version this shard has had, 0..{version})")

    def apply_push(self, grad: Array, read_version: int, worker: int = 0,
                   reader: Hashable | None = None) -> Push:
        """``push`` without the checks, for a caller that made them: ``check_push``,
        or ``check_read_version`` after checking the gradient itself."""
        with self._update_lock:
            with self._lock:
                self._hold(reader, None)
                push_at, current = self.version, self._published
                if id(current) not in self._holders:
                    # Nobody reads the published values: update them in place (no
                    # spare buffer to stream through), under the lock so that no
                    # pull sees half an update.
                    applied = self.rule.apply(self._array(current), grad, self.rule_state, None, worker=worker,
                                              staleness=push_at - read_version, version=push_at)
                    return self._finish(worker, read_version, push_at, applied, None)
                out = self._spare.pop() if self._spare else torch.empty_like(current)
            applied = self.rule.apply(self._array(current), grad, self.rule_state, self._array(out), worker=worker,
                                      staleness=push_at - read_version, version=push_at)
            with self._lock:
                return self._finish(worker, read_version, push_at, applied, out)

    def _array(self, buffer: torch.Tensor) -> np.ndarray:
        """The numpy view of one of this shard's buffers, made once: the rule
        updates through it (converting a tensor costs more than a small update)."""
        cached = self._arrays.get(id(buffer))
        if cached is None or cached[0] is not buffer:
            cached = self._arrays[id(buffer)] = (buffer, buffer.numpy())
        return cached[1]

    def _finish(self, worker: int, read_version: int, push_at: int, applied: bool,
                out: torch.Tensor | None) -> Push:
        """Record an update (under ``_lock``): publish ``out`` if given, count the version."""
        self.staleness[worker][push_at - read_version] += 1
        if applied:
            if out is not None:
                old, self._published = self._published, out
                if id(old) not in self._holders:  # its readers let go during the update
                    self._spare.append(old)
            self.version += 1
            if self._waiting:
                self._version_reached.notify_all()
        elif out is not None:
            self._spare.append(out)
        return Push(self.index, worker, read_version, push_at, applied)

    # -- sparse rows -----------------------------------------------------------
    def pull_rows(self, table: str, ids: torch.Tensor) -> tuple[torch.Tensor, int]:
        """A copy of the given local rows of ``table`` and the version they hold."""
        t = self._table(table)
        self._check_ids(table, ids)
        with self._update_lock:
            return t.index_select(0, ids), self.version

    def push_rows(self, table: str, ids: torch.Tensor, grad_rows: torch.Tensor, read_version: int,
                  worker: int = 0) -> Push:
        self.check_push_rows(table, ids, grad_rows, read_version)
        return self.apply_push_rows(table, ids, grad_rows, read_version, worker)

    def check_push_rows(self, table: str, ids: torch.Tensor, grad_rows: torch.Tensor, read_version: int) -> None:
        t = self._table(table)
        self._check_ids(table, ids)
        self._check_values(grad_rows, (ids.numel(), t.shape[1]), "row gradients")
        self.check_read_version(read_version)

    def apply_push_rows(self, table: str, ids: torch.Tensor, grad_rows: torch.Tensor, read_version: int,
                        worker: int = 0) -> Push:
        with self._update_lock:
            with self._lock:
                push_at = self.version
            applied = self.rule.apply_rows(self.tables[table], ids, grad_rows, self.table_states[table],
                                           worker=worker, staleness=push_at - read_version, version=push_at)
            with self._lock:
                return self._finish(worker, read_version, push_at, applied, None)

    # -- checkpoints -----------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to resume: values, tables, version and the rule's state."""
        with self._update_lock:
            return {
                "index": self.index,
                "version": self.version,
                "values": self._published.clone(),
                "tables": {name: t.clone() for name, t in self.tables.items()},
                "rule_state": self.rule.state_dict(self.rule_state),
                "table_states": {name: self.rule.state_dict(s) for name, s in self.table_states.items()},
            }

    def load_state_dict(self, saved: dict) -> None:
        self._check_values(saved["values"], (self.size,), "checkpoint values")
        with self._update_lock, self._lock:
            self._published = saved["values"].clone()
            self._spare.clear()
            self._held.clear()
            self._holders.clear()
            self._arrays.clear()
            self.tables = {name: t.clone() for name, t in saved["tables"].items()}
            self.rule_state = self.rule.load_state_dict(saved["rule_state"])
            self.table_states = {name: self.rule.load_state_dict(s) for name, s in saved["table_states"].items()}
            self.version = int(saved["version"])
            self._version_reached.notify_all()

    def save(self, path: str | os.PathLike, run: str = "") -> int:
        """Write ``state_dict()`` to the file ``path``, tagged with ``run``; return the version saved.

        The file is written beside ``path`` and renamed over it: a crash
        mid-write leaves the previous checkpoint whole.
        """
        saved = self.state_dict()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.partial")
        torch.save({"run": run, "shard": saved}, partial)
        os.replace(partial, path)
        return saved["version"]

    def restore(self, path: str | os.PathLike, run: str = "") -> int | None:
        """Resume from the checkpoint file ``path``; return its version. None,
        and nothing changes, when there is no such file or it is another run's."""
        try:
            saved = torch.load(path, weights_only=True)
        except FileNotFoundError:
            return None
        if saved.get("run") != run:
            return None
        if saved["shard"]["index"] != self.index:
            raise ValueError(f"Invalid checkpoint {path}: it holds shard {saved['shard']['index']}, "
                             f"not shard {self.index}")
        self.load_state_dict(saved["shard"])
        return self.version

    # -- validation --------------------------------------------------------------
    def _table(self, table: str) -> torch.Tensor:
        if table not in self.tables:
            raise ValueError(f"Invalid table: {table!r} (shard {self.index} holds {sorted(self.tables)})")
        return self.tables[table]

    def _check_ids(self, table: str, ids: torch.Tensor) -> None:
        if not isinstance(ids, torch.Tensor) or ids.dtype != torch.int64 or ids.dim() != 1:
            raise ValueError(f"Invalid row ids for table {table!r}: expected a 1-D torch.int64 tensor")
        rows = self.tables[table].shape[0]
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= rows):
            raise ValueError(f"Invalid row ids for table {table!r}: local ids must be in [0, {rows}) on shard "
                             f"{self.index}, got [{int(ids.min())}, {int(ids.max())}]")

    def _check_values(self, t: Array, shape: tuple, what: str) -> None:
        if isinstance(t, np.ndarray):
            if t.dtype != np.float32:
                raise ValueError(f"Invalid {what} dtype for shard {self.index}: numpy {t.dtype} (shards hold float32)")
        elif not isinstance(t, torch.Tensor):
            raise ValueError(f"Invalid {what} for shard {self.index}: expected a torch tensor or a numpy array, "
                             f"got {type(t).__name__}")
        elif t.dtype != torch.float32:
            raise ValueError(f"Invalid {what} dtype for shard {self.index}: {t.dtype} (shards hold torch.float32)")
        if t.shape != shape:
            raise ValueError(f"Invalid {what} shape for shard {self.index}: {tuple(t.shape)} (expected {tuple(shape)})")
        if not all_finite(t):
            bad = int((~torch.isfinite(torch.as_tensor(t))).sum())
            raise ValueError(f"Invalid {what} for shard {self.index}: {bad} non-finite values (NaN or Inf); "
                             "nothing was applied")


def make_shards(layout, flat: torch.Tensor, tables: dict[str, torch.Tensor], rule: ServerRule) -> list[Shard]:
    """One shard per range of ``layout``, holding its slice of ``flat`` and its rows of each table."""
    parts = {name: layout.split_table(name, full) for name, full in tables.items()}
    return [Shard(s, piece, {name: parts[name][s] for name in parts}, rule)
            for s, piece in enumerate(layout.split(flat))]
