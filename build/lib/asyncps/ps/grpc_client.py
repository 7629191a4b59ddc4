"""The Client interface over gRPC: one channel per shard, calls fanned out concurrently.

Status codes come back as the exceptions the in-process client raises:
INVALID_ARGUMENT -> ValueError, FAILED_PRECONDITION -> ShardClosed,
DEADLINE_EXCEEDED -> TimeoutError, UNAUTHENTICATED -> PermissionError. A shard
that is UNAVAILABLE (starting, restarting) is retried with exponential
back-off for up to ``retry_seconds``; after that, ConnectionError. A pull's
chunks are written straight into the caller's vector.

Each answer carries the shard's life token (see ps.proto), and the client
sends back the token of the answers its versions came from. When a shard's
token changes, it was restarted, and ``on_restart(status)`` is told. A push
retried across a restart may be applied twice: at least once, not exactly once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

import grpc
import torch
from google.protobuf.message import DecodeError

from asyncps.protos import CHANNEL_OPTIONS, ps_pb2, ps_pb2_grpc
from asyncps.ps.client import Client, Versions
from asyncps.ps.layout import Layout
from asyncps.ps.publication import ShardClosed
from asyncps.ps.shard import Push
from asyncps.ps.grpc_server import SERVICE
from asyncps.ps.wire import (UNARY_BYTES, Assembler, chunks, decode_data, encode_data, field_prefix, ids_to_bytes, meta_of,
                     raw_bytes, receive, without_data)


def _error(err: grpc.aio.AioRpcError, address: str) -> Exception:
    detail = f"{address}: {err.details()}"
    return {grpc.StatusCode.INVALID_ARGUMENT: ValueError,
            grpc.StatusCode.FAILED_PRECONDITION: ShardClosed,
            grpc.StatusCode.DEADLINE_EXCEEDED: TimeoutError,
            grpc.StatusCode.UNAUTHENTICATED: PermissionError}.get(err.code(), ConnectionError)(detail)


def token_metadata(token: str | None) -> tuple:
    """The call metadata that carries the shared token, if there is one."""
    return (("authorization", f"Bearer {token}"),) if token else ()


def one_message(part: torch.Tensor) -> bool:
    """Whether a shard's part of the float32 parameters travels in one Exchange message rather than a stream."""
    return part.numel() * 4 <= UNARY_BYTES


async def each(*calls) -> list:
    """The calls' results, in order: concurrently, or directly for one (a task costs more than a small call)."""
    if len(calls) == 1:
        return [await calls[0]]
    return await asyncio.gather(*calls)


class TensorStub(ps_pb2_grpc.ParameterServerStub):
    """The generated stub, with the tensor streams passing raw bytes (see ps.wire)."""

    def __init__(self, channel: grpc.aio.Channel):
        super().__init__(channel)
        self.Pull = channel.unary_stream(f"/{SERVICE}/Pull", request_serializer=ps_pb2.PullRequest.SerializeToString)
        self.PullRows = channel.unary_stream(f"/{SERVICE}/PullRows",
                                             request_serializer=ps_pb2.PullRowsRequest.SerializeToString)
        self.Push = channel.stream_unary(f"/{SERVICE}/Push", response_deserializer=ps_pb2.PushReply.FromString)
        self.PushRows = channel.stream_unary(f"/{SERVICE}/PushRows",
                                             response_deserializer=ps_pb2.PushReply.FromString)
        self.Exchange = channel.unary_unary(f"/{SERVICE}/Exchange")  # bytes both ways


class GrpcClient(Client):
    combines_push_pull = True  # small parts in one Exchange call

    def __init__(self, layout: Layout, addresses: list[str], worker: int, *, token: str | None = None,
                 tls_ca: bytes | None = None, deadline: float = 600.0, retry_seconds: float = 30.0,
                 on_restart: Callable[[ps_pb2.StatusReply], None] | None = None):
        super().__init__(layout, worker)
        if len(addresses) != layout.num_shards:
            raise ValueError(f"Invalid shard addresses: {len(addresses)} given for {layout.num_shards} shards")
        self.addresses = list(addresses)
        self.metadata = token_metadata(token)
        self.tls_ca = tls_ca
        self.deadline = deadline
        self.retry_seconds = retry_seconds
        self.on_restart = on_restart
        self.lives = [""] * layout.num_shards  # each shard's life token, as last answered
        self._loop = None
        self._stubs: list[TensorStub] = []
        self._channels: list[grpc.aio.Channel] = []

    def _stub(self, shard: int) -> ps_pb2_grpc.ParameterServerStub:
        # grpc.aio channels belong to the event loop they were made in.
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._channels = [self._channel(address) for address in self.addresses]
            self._stubs = [TensorStub(channel) for channel in self._channels]
        return self._stubs[shard]

    def _channel(self, address: str) -> grpc.aio.Channel:
        if self.tls_ca is None:
            return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        return grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=self.tls_ca),
                                       options=CHANNEL_OPTIONS)

    async def _call(self, shard: int, rpc):
        """Run ``rpc(stub)``, retrying with back-off while the shard is unavailable
        (for ``retry_seconds`` as it is at each retry: a shard known to be gone
        for good is given up on by setting it to 0)."""
        started, delay = time.monotonic(), 0.05
        while True:
            try:
                return await rpc(self._stub(shard))
            except grpc.aio.AioRpcError as err:
                retrying = time.monotonic() + delay <= started + self.retry_seconds
                if err.code() != grpc.StatusCode.UNAVAILABLE or not retrying:
                    raise _error(err, self.addresses[shard]) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _seen(self, shard: int, life: str) -> None:
        known, self.lives[shard] = self.lives[shard], life
        if known and known != life and self.on_restart is not None:
            self.on_restart(await self._status(shard))

    async def _status(self, shard: int) -> ps_pb2.StatusReply:
        return await self._call(shard, lambda stub: stub.Status(ps_pb2.StatusRequest(), metadata=self.metadata,
                                                                timeout=self.deadline))

    async def _receive(self, shard: int, call, out: torch.Tensor | None) -> tuple[torch.Tensor, int]:
        assembler, version = None, 0
        async for raw in call:
            if assembler is None:
                first = ps_pb2.TensorChunk.FromString(raw)
                assembler, version = Assembler(first.meta, out), first.version
                await self._seen(shard, first.life)
            else:
                assembler.add(decode_data(3, raw, ps_pb2.TensorChunk))
        return assembler.finish(), version

    async def _push_stream(self, header: ps_pb2.PushHeader, tensor: torch.Tensor):
        yield ps_pb2.PushChunk(header=header).SerializeToString()
        for data in chunks(tensor):
            yield encode_data(2, data)

    # -- the four verbs --------------------------------------------------------
    async def pull(self, out, at_least=0) -> Versions:
        self._check_out(out)
        return Versions(tuple(await each(*(
            self._pull_one(s, part, version) for s, (part, version) in enumerate(zip(self.layout.split(out),
                                                                                      self.wanted(at_least)))))))

    async def push(self, grad, read) -> list[Push]:
        self._check_grad(grad)
        self._check_read(read)
        return list(await each(*(self._push_one(s, part, version) for s, (part, version) in
                                           enumerate(zip(self.layout.split(grad), read.of_shard)))))

    async def push_pull(self, grad, read, out, at_least=0):
        self._check_grad(grad)
        self._check_read(read)
        self._check_out(out)

        async def one(shard: int, part: torch.Tensor, read_version: int, into: torch.Tensor, wanted: int):
            if not one_message(into):  # streams, one after the other
                return await self._push_one(shard, part, read_version), await self._pull_one(shard, into, wanted)
            return await self._exchange(shard, self._header(shard, part, read_version), part, into, wanted)

        done = await each(*(one(s, *args) for s, args in enumerate(zip(
            self.layout.split(grad), read.of_shard, self.layout.split(out), self.wanted(at_least)))))
        return [push for push, _ in done], Versions(tuple(version for _, version in done))

    # -- one shard's part: a message each way when it fits one chunk, streams otherwise
    def _header(self, shard: int, part: torch.Tensor, read_version: int) -> ps_pb2.PushHeader:
        return ps_pb2.PushHeader(read_version=read_version, worker=self.worker, meta=meta_of(part),
                                 life=self.lives[shard])

    async def _pull_one(self, shard: int, part: torch.Tensor, wanted: int) -> int:
        if one_message(part):
            return (await self._exchange(shard, None, None, part, wanted))[1]
        values, version = await self._call(shard, lambda stub: self._receive(shard, stub.Pull(
            ps_pb2.PullRequest(min_version=wanted, life=self.lives[shard]),
            metadata=self.metadata, timeout=self.deadline), part))
        self._check_values(shard, values, part)
        return version

    async def _push_one(self, shard: int, part: torch.Tensor, read_version: int) -> Push:
        header = self._header(shard, part, read_version)
        if one_message(part):
            return (await self._exchange(shard, header, part, None, 0))[0]
        reply = await self._call(shard, lambda stub: stub.Push(self._push_stream(header, part),
                                                               metadata=self.metadata, timeout=self.deadline))
        return await self._pushed(shard, reply)

    async def _exchange(self, shard: int, header: ps_pb2.PushHeader | None, grad: torch.Tensor | None,
                        out: torch.Tensor | None, wanted: int) -> tuple[Push | None, int | None]:
        """One Exchange call: push ``grad`` (with ``header``) if given, then pull into ``out`` if given."""
        request = ps_pb2.ExchangeRequest(push=header, pull=None if out is None else ps_pb2.PullRequest(
            min_version=wanted, life=self.lives[shard])).SerializeToString()
        if header is not None:  # the gradient's bytes, copied once (see ps.wire)
            data = raw_bytes(grad)
            request = b"".join((request, field_prefix(2, len(data)), data))
        raw = await self._call(shard, lambda stub: stub.Exchange(request, metadata=self.metadata,
                                                                 timeout=self.deadline))
        try:
            rest, inner, data = without_data(raw, 2, 3)
            reply, values = ps_pb2.ExchangeReply.FromString(rest), ps_pb2.TensorChunk.FromString(inner)
        except (ValueError, DecodeError) as err:
            raise ConnectionError(f"{self.addresses[shard]}: a malformed Exchange reply ({err})") from None
        push = await self._pushed(shard, reply.push) if header is not None else None
        if out is None:
            return push, None
        await self._seen(shard, values.life)
        self._check_values(shard, receive(values.meta, (data,), out), out)
        return push, values.version

    def _check_values(self, shard: int, values: torch.Tensor, part: torch.Tensor) -> None:
        if values is not part:
            raise ConnectionError(f"{self.addresses[shard]}: sent {values.dtype} {tuple(values.shape)} for a "
                                  f"shard of {part.numel()} float32 (is it serving another config?)")

    async def pull_rows(self, table, rows):
        out = torch.empty(rows.numel(), self.layout.table(table)[1])

        async def one(shard: int, local: torch.Tensor):
            request = ps_pb2.PullRowsRequest(table=table, row_ids=ids_to_bytes(local))
            return await self._call(shard, lambda stub: self._receive(
                shard, stub.PullRows(request, metadata=self.metadata, timeout=self.deadline), None))

        routed = self.layout.route_rows(table, rows)
        results = await asyncio.gather(*(one(shard, local) for shard, _, local in routed))
        versions = {}
        for (shard, positions, _), (values, version) in zip(routed, results):
            out[positions], versions[shard] = values, version
        return out, versions

    async def push_rows(self, table, rows, grad_rows, versions):
        routed = self._route_row_push(table, rows, grad_rows, versions)

        async def one(shard: int, positions: torch.Tensor, local: torch.Tensor):
            grads = grad_rows[positions].contiguous()
            reply = await self._call(shard, lambda stub: stub.PushRows(self._push_stream(ps_pb2.PushHeader(
                read_version=versions[shard], worker=self.worker, table=table, row_ids=ids_to_bytes(local),
                meta=meta_of(grads), life=self.lives[shard]), grads), metadata=self.metadata, timeout=self.deadline))
            return await self._pushed(shard, reply)

        return list(await asyncio.gather(*(one(*r) for r in routed)))

    async def _pushed(self, shard: int, reply: ps_pb2.PushReply) -> Push:
        """A push's reply, with the read version as the shard counted it (see ``_current`` on the server)."""
        await self._seen(shard, reply.life)
        return Push(shard, self.worker, reply.version - reply.staleness, reply.version, reply.applied)

    # -- the end of a run ------------------------------------------------------
    async def worker_done(self) -> None:
        await self._tell_every_shard("WorkerDone", ps_pb2.WorkerDoneRequest(worker=self.worker))

    async def set_lr_factor(self, factor) -> None:
        await self._tell_every_shard("SetLrFactor", ps_pb2.LrFactorRequest(factor=factor))

    async def status(self) -> list[ps_pb2.StatusReply]:
        """Every shard's status; their life tokens are known from here on (a restart after this is told)."""
        replies = await asyncio.gather(*(self._status(s) for s in range(self.layout.num_shards)))
        for s, reply in enumerate(replies):
            await self._seen(s, reply.life)
        return list(replies)

    async def _tell_every_shard(self, rpc: str, request) -> None:
        await asyncio.gather(*(self._call(s, lambda stub: getattr(stub, rpc)(
            request, metadata=self.metadata, timeout=self.deadline)) for s in range(self.layout.num_shards)))

    async def aclose(self) -> None:
        """Close this event loop's channels: gRPC would later deliver their events to a loop that is gone."""
        for channel in self._channels:
            await channel.close()
        self._loop, self._channels, self._stubs = None, [], []
