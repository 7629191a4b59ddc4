"""A shard's write-ahead log: each push it accepts, written before it is applied.

The shard numbers the pushes it accepts (``Shard.accepted``: applied or kept
by the rule), and its journal writes each one, under the shard's lock,
before the update happens and so before it is acknowledged. A checkpoint
holds the count it was taken at; replaying the records from that number on,
in order, through the same rule rebuilds the shard exactly as it was.

Files. A log is a series of segments ``<stem>.<first>.wal``, each holding
the records numbered ``first`` and on, up to the next segment's first. A
segment starts with a header naming its run; segments of another run are
never replayed. ``rotate`` makes the next record open a new segment, and
``drop_before(n)`` deletes the segments whose records all precede ``n`` (the
checkpoint has them).

Record: ``<u32 length><body><u32 crc32 of body>``, the body a fixed header
(number, read version, worker, table name's length, row ids, gradient
bytes) then the table name, the int64 row ids and the float32 gradient,
little-endian. A record cut short by a crash, or whose checksum fails, ends
its segment: it was never acknowledged.

Durability. ``"log"`` writes each record with one ``writev`` into the
operating system before the push is applied: it survives the shard's process
(kill -9, out of memory), not the machine. ``"fsync"`` also waits for
``fdatasync``: the record is on the disk before the push is acknowledged.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch

DURABILITIES = ("none", "log", "fsync")
MAGIC = b"asyncps-wal-1\n"
LENGTH = struct.Struct("<I")
BODY = struct.Struct("<qqiHqq")  # number, read version, worker, len(table), row ids, gradient bytes


class Record(NamedTuple):
    number: int
    read_version: int
    worker: int
    table: str  # "": the dense slice
    ids: torch.Tensor | None
    grad: torch.Tensor


def _segments(stem: Path) -> list[tuple[int, Path]]:
    """``stem``'s segments, by first record number."""
    pattern = re.compile(re.escape(stem.name) + r"\.(\d+)\.wal")
    found = [(int(m.group(1)), path) for path in stem.parent.glob(f"{stem.name}.*.wal")
             if (m := pattern.fullmatch(path.name))]
    return sorted(found)


def _header(run: str) -> bytes:
    name = run.encode()
    return MAGIC + LENGTH.pack(len(name)) + name


def _records(data: bytes, run: str) -> tuple[list[Record], int]:
    """The whole records of one segment of ``run``, and the length of the valid prefix (0: another run's)."""
    header = _header(run)
    if not data.startswith(header):
        return [], 0
    records, at = [], len(header)
    while at + LENGTH.size <= len(data):
        (length,) = LENGTH.unpack_from(data, at)
        end = at + LENGTH.size + length
        if length < BODY.size or end + LENGTH.size > len(data):
            break
        body = memoryview(data)[at + LENGTH.size:end]
        if LENGTH.unpack_from(data, end)[0] != zlib.crc32(body):
            break
        number, read_version, worker, table_len, n_ids, nbytes = BODY.unpack_from(body)
        at_ids = BODY.size + table_len
        at_grad = at_ids + 8 * n_ids
        if at_grad + nbytes != length:
            break
        table = bytes(body[BODY.size:at_ids]).decode()
        ids = torch.frombuffer(bytearray(body[at_ids:at_grad]), dtype=torch.int64) if table else None
        grad = torch.frombuffer(bytearray(body[at_grad:]), dtype=torch.float32)
        records.append(Record(number, read_version, worker, table, ids, grad))
        at = end + LENGTH.size
    return records, at


def read(stem: str | os.PathLike, run: str, start: int) -> Iterator[Record]:
    """The logged records of ``run`` numbered ``start`` and on, in order.
    Raises ValueError if a record in between is missing."""
    expected = start
    for _, path in _segments(Path(stem)):
        for record in _records(path.read_bytes(), run)[0]:
            if record.number < expected:
                continue
            if record.number > expected:
                raise ValueError(f"Invalid write-ahead log {path}: record {record.number} follows "
                                 f"{expected - 1}; record {expected} is missing")
            expected += 1
            yield record


class Journal:
    """The log a shard appends to: ``shard.journal = Journal(...)``."""

    def __init__(self, stem: str | os.PathLike, run: str, durability: str):
        if durability not in ("log", "fsync"):
            raise ValueError(f"Invalid durability: {durability!r} (a journal writes with 'log' or 'fsync')")
        self.stem = Path(stem)
        self.run = run
        self.sync = durability == "fsync"
        self._fd: int | None = None

    def tidy(self) -> None:
        """Before a new life appends: cut each segment of this run back to its
        whole records (a crash may have left half of one), and delete other runs' segments."""
        for _, path in _segments(self.stem):
            data = path.read_bytes()
            valid = _records(data, self.run)[1]
            if not valid:
                path.unlink()
            elif valid < len(data):
                os.truncate(path, valid)

    def write(self, number: int, read_version: int, worker: int, grad: np.ndarray, table: str = "",
              ids: np.ndarray | None = None) -> None:
        """Log one push (under the shard's lock, before it is applied)."""
        if self._fd is None:
            self._open(number)
        name = table.encode()
        ids_bytes = b"" if ids is None else memoryview(np.ascontiguousarray(ids, dtype=np.int64)).cast("B")
        data = memoryview(np.ascontiguousarray(grad, dtype=np.float32)).cast("B")
        head = BODY.pack(number, read_version, worker, len(name), len(ids_bytes) // 8, len(data))
        crc = zlib.crc32(data, zlib.crc32(ids_bytes, zlib.crc32(name, zlib.crc32(head))))
        size = len(head) + len(name) + len(ids_bytes) + len(data)
        parts = [LENGTH.pack(size), head, name, ids_bytes, data, LENGTH.pack(crc)]
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            written = os.writev(self._fd, parts)
            rest = memoryview(b"".join(bytes(p) for p in parts))[written:] if written < size + 2 * LENGTH.size else b""
            while rest:  # a short write (a full disk): finish it, or fail the push
                rest = rest[os.write(self._fd, rest):]
            if self.sync:
                os.fdatasync(self._fd)
        except OSError:
            os.ftruncate(self._fd, start)  # no half record for the next one to follow: the push is refused whole
            raise

    def _open(self, first: int) -> None:
        path = self.stem.with_name(f"{self.stem.name}.{first}.wal")
        fresh = not path.exists() or path.stat().st_size == 0
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if fresh:
            os.write(self._fd, _header(self.run))
            if self.sync:
                os.fsync(self._fd)

    def rotate(self) -> None:
        """Start a new segment at the next record (called under the shard's lock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def drop_before(self, number: int) -> None:
        """Delete the segments whose every record is numbered below ``number``."""
        segments = _segments(self.stem)
        for (_, path), (following, _) in zip(segments, segments[1:]):
            if following <= number:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        self.rotate()
