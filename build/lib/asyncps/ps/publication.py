"""Copy-on-write publication of one float32 vector, with a version clock.

``version`` counts the updates published. Readers never see half an update
and never wait behind one that has readers:

- a read ``acquire``s the published buffer (a hold) and ``release``s it when
  it has copied or sent the values;
- an update that finds the published buffer held writes the new values into
  a spare buffer (``Optimizer.update(..., out=)`` costs no extra pass) and
  publishes that; with no holds it updates in place, under the lock.

Pulls may wait for a version (``acquire(at_least=v)``); closing the
publication ends every such wait with ``ShardClosed``. Nothing here knows
about optimizers or gradients: the update is a callable, which says what it
did (``Applied``): usually each change makes a new version, but an update
may change the values within the version (stale synchronous parallel, whose
version counts the clocks every worker has completed).
"""

from __future__ import annotations

import enum
import threading
from functools import partial
from typing import Callable

import torch

from asyncps.ps.flat import Flat


class ShardClosed(RuntimeError):
    """The run is over: a pull that was waiting for a version will never get it."""


class Buffer:
    """One of a publication's buffers, and how many reads hold it."""

    __slots__ = ("flat", "holds")

    def __init__(self, flat: Flat):
        self.flat = flat
        self.holds = 0


class Applied(enum.IntEnum):
    """What an update did. ``False`` and ``True`` are ``KEPT`` and ``NEW_VERSION``."""

    KEPT = 0  # nothing changed: the gradient was buffered or dropped
    NEW_VERSION = 1  # the values changed, and the version counts one more update
    SAME_VERSION = 2  # the values changed within the version: readers see them; no wait ends, no update is counted


Update = Callable[[Flat, "Flat | None"], "bool | Applied"]  # (values, out or None: in place) -> what it did


class Publication:
    def __init__(self, values: torch.Tensor, name: str):
        """``values`` is copied; ``name`` says whose values these are in messages ("shard 3")."""
        self.name = name
        self._published = Buffer(Flat.of(values.detach().to(torch.float32).contiguous().clone()))
        self.size = self._published.flat.tensor.numel()
        self._spare: list[Buffer] = []  # neither published nor held: the next updates' outputs
        self.version = 0
        self.closed = False
        # One plain lock guards _published, version and the holds (entered with its
        # C-level ``with``, several times a push); a condition on it lets reads wait.
        self._lock = threading.Lock()
        self._advanced = threading.Condition(self._lock)
        self._waiting = 0  # reads waiting for a version: an update notifies only when there are some

    @property
    def values(self) -> torch.Tensor:
        """The published values themselves (for a caller that excludes updates)."""
        return self._published.flat.tensor

    def reached(self, at_least: int) -> bool:
        """Whether a read for ``at_least`` answers now: that many updates are
        published, or the publication has closed (the read then raises)."""
        return self.version >= at_least or self.closed

    # -- reading -----------------------------------------------------------------
    def acquire(self, at_least: int = 0, timeout: float | None = None) -> tuple[Buffer, int]:
        """The published buffer and its version, once ``version >= at_least``,
        held unchanged until ``release(buffer)``."""
        with self._lock:
            if not self.reached(at_least):
                self._waiting += 1
                try:
                    self._advanced.wait_for(partial(self.reached, at_least), timeout)
                finally:
                    self._waiting -= 1
            if self.version < at_least:
                if not self.closed:
                    raise TimeoutError(f"{self.name}: version {self.version} did not reach {at_least} "
                                       f"within {timeout} s")
                raise ShardClosed(f"{self.name} closed at version {self.version} before {at_least}")
            buffer = self._published
            buffer.holds += 1
            return buffer, self.version

    def release(self, buffer: Buffer) -> None:
        with self._lock:
            buffer.holds -= 1
            if not buffer.holds and buffer is not self._published:
                self._spare.append(buffer)

    def copy_to(self, out, at_least: int = 0, timeout: float | None = None) -> int:
        """Copy the values into ``out`` (a float32 numpy array of ``size``); their version."""
        buffer, version = self.acquire(at_least, timeout)
        try:
            out[:] = buffer.flat.array
        finally:
            self.release(buffer)
        return version

    def close(self) -> None:
        """End the run: reads waiting for a version not reached raise ShardClosed."""
        with self._lock:
            self.closed = True
            self._advanced.notify_all()

    # -- updating (one at a time: the caller serializes updates) -----------------------
    def update(self, apply: Update) -> tuple[int, bool]:
        """Run ``apply(values, out)`` as the next update; the version it
        arrived at, and whether it made a new version (``SAME_VERSION``
        publishes changed values but answers False: no update is counted)."""
        with self._lock:
            current, version = self._published, self.version
            if not current.holds:
                # Nobody reads the published values: update them in place (no spare
                # buffer to stream through), under the lock so no read sees half of it.
                applied = apply(current.flat, None)
                if applied == Applied.NEW_VERSION:
                    self._advance()
                return version, applied == Applied.NEW_VERSION
            out = self._spare.pop() if self._spare else Buffer(Flat.of(torch.empty(self.size)))
        applied = apply(current.flat, out.flat)
        with self._lock:
            if applied:
                self._published = out
                if not current.holds:  # its readers let go during the update
                    self._spare.append(current)
                if applied == Applied.NEW_VERSION:
                    self._advance()
            else:
                self._spare.append(out)
        return version, applied == Applied.NEW_VERSION

    def advance(self) -> int:
        """Count an update that changed none of these values (a sparse table's
        rows); the version it arrived at."""
        with self._lock:
            version = self.version
            self._advance()
            return version

    def _advance(self) -> None:  # under the lock
        self.version += 1
        if self._waiting:
            self._advanced.notify_all()

    def restore(self, values: torch.Tensor, version: int) -> None:
        """Publish ``values`` at ``version`` (a checkpoint's), dropping every spare buffer."""
        with self._lock:
            self._published = Buffer(Flat.of(values.detach().to(torch.float32).contiguous().clone()))
            self._spare.clear()
            self.version = version
            self._advanced.notify_all()
