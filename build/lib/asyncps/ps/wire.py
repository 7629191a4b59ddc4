"""Tensors on the wire: raw little-endian bytes with dtype and shape, in chunks.

A stream's first message carries the metadata and later messages one chunk
each, so a tensor of any size moves under gRPC's 4 MB message limit. The
receiver writes each chunk straight into a tensor allocated once from the
metadata.

Data messages are encoded and decoded by hand. A message whose only field is
``bytes data = N`` is, in protobuf's wire format, the tag byte, a varint
length and the bytes. Writing that directly costs one copy of the chunk, and
reading it is a view of the received buffer. Going through protobuf objects
copies each chunk three times (into the message, out of it on every access
of ``.data``, and into the tensor). The bytes on the wire are the same
either way, so any client or server generated from ps.proto interoperates.
"""

from __future__ import annotations

import sys
from typing import Iterable, Iterator

import numpy as np
import torch

from asyncps.protos import MAX_MESSAGE_BYTES, ps_pb2

CHUNK_BYTES = 2 << 20  # 2 MiB: well under the 4 MB default, large enough that per-message costs vanish
# A shard's part up to UNARY_BYTES moves in one Exchange message each way
# rather than in streams: a stream's every message is one more trip through
# gRPC's Python layer.
UNARY_BYTES = MAX_MESSAGE_BYTES - (64 << 10)
DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64}

assert sys.byteorder == "little", "asyncps sends raw little-endian bytes"


def check_meta(meta: ps_pb2.TensorMeta, shape: tuple[int, ...], what: str, where: str) -> None:
    """A pushed tensor's declared dtype and shape against what the shard
    holds, before anything is allocated for it: a header may declare any size."""
    if meta.dtype not in DTYPES:
        raise ValueError(f"Invalid dtype: {meta.dtype!r} (send one of {sorted(DTYPES)})")
    if DTYPES[meta.dtype] != torch.float32:
        raise ValueError(f"Invalid {what} dtype for {where}: {DTYPES[meta.dtype]} (shards hold torch.float32)")
    if tuple(meta.shape) != shape:
        raise ValueError(f"Invalid {what} shape for {where}: {tuple(meta.shape)} (expected {shape})")


def meta_of(t: torch.Tensor) -> ps_pb2.TensorMeta:
    return ps_pb2.TensorMeta(dtype=str(t.dtype).removeprefix("torch."), shape=list(t.shape),
                             nbytes=t.numel() * t.element_size())


def raw_bytes(t: torch.Tensor) -> memoryview:
    """The tensor's bytes (a view, no copy, for a contiguous tensor)."""
    return memoryview(t.detach().contiguous().view(-1).numpy()).cast("B")


def chunks(t: torch.Tensor) -> Iterator[memoryview]:
    """The tensor's bytes, CHUNK_BYTES at a time (views, no copy)."""
    raw = raw_bytes(t)
    for start in range(0, len(raw), CHUNK_BYTES):
        yield raw[start:start + CHUNK_BYTES]


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field_prefix(field: int, length: int) -> bytes:
    """The tag and length of a length-delimited field (bytes or a message) of ``length`` bytes."""
    return bytes([field << 3 | 2]) + _varint(length)


def encode_data(field: int, chunk: memoryview) -> bytes:
    """A message holding only ``bytes <field> = chunk``, in protobuf wire format."""
    return b"".join((field_prefix(field, len(chunk)), chunk))


def _read_varint(view: memoryview, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while pos < len(view) and shift < 64:
        byte = view[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ValueError("a varint is cut off or longer than 10 bytes")


def take_field(raw, field: int) -> tuple[bytes, memoryview]:
    """Split a message's top-level field ``field`` (length-delimited: bytes or a
    message) from the rest: the field as a view of ``raw`` (empty if absent,
    as protobuf reads an absent field), the rest as a message protobuf can
    parse. A message repeated or given twice keeps the
    last occurrence (protobuf merges messages; a difference only a hostile
    sender makes). ValueError if ``raw`` is not protobuf's wire format."""
    view, rest, found, pos = memoryview(raw), [], memoryview(b""), 0
    while pos < len(view):
        start = pos
        tag, pos = _read_varint(view, pos)
        kind = tag & 7
        if kind == 0:
            _, pos = _read_varint(view, pos)
        elif kind in (1, 5):
            pos += 8 if kind == 1 else 4
        elif kind == 2:
            length, pos = _read_varint(view, pos)
            pos += length
        else:
            raise ValueError(f"field {tag >> 3} has wire type {kind}, which ps.proto never uses")
        if pos > len(view):
            raise ValueError(f"field {tag >> 3} runs past the end of the message")
        if kind == 2 and tag >> 3 == field:
            found = view[pos - length:pos]
        else:
            rest.append(view[start:pos])
    return b"".join(rest), found


def decode_data(field: int, raw: bytes, message_type) -> memoryview:
    """The ``bytes <field>`` of a data message, as a view of ``raw``. Anything
    other than a lone data field (say, a second header) is refused."""
    try:
        rest, data = take_field(raw, field)
    except ValueError as err:
        raise ValueError(f"Malformed chunks: a data message is not a {message_type.__name__} ({err})") from None
    if rest:
        raise ValueError(f"Malformed chunks: a {message_type.__name__} after the first carries more than data")
    return data


def with_data(head: bytes, field: int, inner: bytes, data_field: int, data) -> bytes:
    """``head`` (a serialized message) with its message field ``field`` set to
    ``inner`` (a serialized message) plus ``bytes <data_field> = data``: the
    one copy of ``data`` is this join."""
    data_prefix = field_prefix(data_field, len(data))
    return b"".join((head, field_prefix(field, len(inner) + len(data_prefix) + len(data)), inner, data_prefix, data))


def without_data(raw, field: int, data_field: int) -> tuple[bytes, bytes, memoryview]:
    """The inverse of ``with_data``: the rest of the message, the message field
    ``field`` without its data, and the data (a view); empty when absent."""
    rest, inner = take_field(raw, field)
    return rest, *take_field(inner, data_field)


def ids_to_bytes(ids: torch.Tensor) -> bytes:
    return ids.to(torch.int64).contiguous().numpy().tobytes()


def ids_from_bytes(raw: bytes) -> torch.Tensor:
    if len(raw) % 8:
        raise ValueError(f"Invalid row ids: {len(raw)} bytes (int64 ids take 8 bytes each)")
    return torch.from_numpy(np.frombuffer(raw, dtype=np.int64).copy())


class Assembler:
    """Receives a tensor's chunks in order into one buffer, checking as it goes."""

    def __init__(self, meta: ps_pb2.TensorMeta, out: torch.Tensor | None = None):
        if meta.dtype not in DTYPES:
            raise ValueError(f"Invalid dtype: {meta.dtype!r} (send one of {sorted(DTYPES)})")
        shape = tuple(meta.shape)
        if any(d < 0 for d in shape):
            raise ValueError(f"Invalid shape: {shape} (dimensions must be >= 0)")
        self.tensor = out if out is not None and out.dtype == DTYPES[meta.dtype] and tuple(out.shape) == shape \
            else torch.empty(shape, dtype=DTYPES[meta.dtype])
        expected = self.tensor.numel() * self.tensor.element_size()
        if meta.nbytes != expected:
            raise ValueError(f"Invalid size: nbytes {meta.nbytes} for a {meta.dtype} tensor of shape {shape} "
                             f"(expected {expected})")
        self._raw = self.tensor.view(-1).numpy().view(np.uint8)
        self._filled = 0

    def add(self, data: bytes) -> None:
        end = self._filled + len(data)
        if end > len(self._raw):
            raise ValueError(f"Malformed chunks: {end} bytes received for a tensor of {len(self._raw)}")
        self._raw[self._filled:end] = np.frombuffer(data, dtype=np.uint8)
        self._filled = end

    def finish(self) -> torch.Tensor:
        if self._filled != len(self._raw):
            raise ValueError(f"Malformed chunks: the stream ended after {self._filled} of {len(self._raw)} bytes")
        return self.tensor


def receive(meta: ps_pb2.TensorMeta, datas: Iterable[bytes], out: torch.Tensor | None = None) -> torch.Tensor:
    assembler = Assembler(meta, out)
    for data in datas:
        assembler.add(data)
    return assembler.finish()
