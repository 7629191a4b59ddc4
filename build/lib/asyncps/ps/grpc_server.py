"""One shard as a gRPC server: a thin servicer over ``ps.Shard``.

Every rule lives in the Shard; this file only moves bytes and maps errors to
status codes: ValueError -> INVALID_ARGUMENT, a closed shard ->
FAILED_PRECONDITION, a pull's wait running out -> DEADLINE_EXCEEDED. The
standard gRPC health service reports SERVING. An optional shared token
(metadata ``authorization: Bearer <token>``) and optional TLS guard the port.
A port something already listens on is refused (a ValueError saying so), not
shared.

A shard given a ``Recovery`` saves checkpoints (and journals pushes) as it
goes, and a restarted one resumes from them; each life has its own token
(see ps.proto), as a Ray shard actor's does. The workers that have finished
are saved with each checkpoint, so a restarted shard still knows them.
"""

from __future__ import annotations

import errno
import hmac
import math
import socket
import threading
from concurrent import futures

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from asyncps.protos import MESSAGE_OPTIONS, ps_pb2, ps_pb2_grpc
from asyncps.ps.flat import Flat
from asyncps.ps.publication import ShardClosed
from asyncps.ps.recovery import Life, Recovery, Resumed
from asyncps.ps.shard import Shard
from asyncps.ps.wire import (check_meta, chunks, decode_data, encode_data, ids_from_bytes, meta_of,
                     raw_bytes, receive, take_field, with_data)


SERVICE = "asyncps.ParameterServer"
WAIT_SLICE_SECONDS = 1.0  # a waiting pull asks this often whether its client is still there


def _invalid(context, err: Exception):
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))


class ShardServicer(ps_pb2_grpc.ParameterServerServicer):
    def __init__(self, shard: Shard, num_workers: int, recovery: Recovery | None = None):
        """``recovery``: resumed here (before serving), then kept up as pushes arrive."""
        self.shard = shard
        self.num_workers = num_workers
        self.recovery = recovery
        self.resumed = recovery.resume() if recovery else Resumed(None, 0)
        self.life = Life(shard)
        self.workers_done: set[int] = set(recovery.extra.get("workers_done", ())) if recovery else set()
        self._lock = threading.Lock()
        if len(self.workers_done) >= num_workers:
            shard.close()

    def Pull(self, request, context):
        buffer, version = self._acquire(request, context)
        if buffer is None:  # the client went away (or the server is stopping): nobody to answer
            return
        try:  # held unchanged until the stream is sent
            yield from self._stream(buffer.flat.tensor, version)
        finally:
            self.shard.dense.release(buffer)

    def _acquire(self, request: ps_pb2.PullRequest, context):
        """The published values once the pull's version is reached, held for the
        caller to release; ``(None, None)`` if the call ended first."""
        if not (math.isfinite(request.timeout) and 0 <= request.timeout <= threading.TIMEOUT_MAX):
            _invalid(context, ValueError(f"Invalid pull timeout: {request.timeout!r} (seconds, a finite number "
                                         f"from 0, no limit, to {threading.TIMEOUT_MAX:.0f})"))
        try:
            return self._wait(self.life.version(request.min_version, request.life), request.timeout,
                              context)
        except TimeoutError as err:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(err))
        except ShardClosed as err:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))

    def _wait(self, at_least: int, timeout: float, context):
        """``acquire``, a slice at a time, while the call is alive: a pull whose
        client is gone must not hold a server thread for good. ``(None, None)``
        when the call ended first; ``timeout`` 0 is no limit."""
        waited = 0.0
        while context.is_active():
            wait = WAIT_SLICE_SECONDS if timeout == 0 else min(WAIT_SLICE_SECONDS, timeout - waited)
            try:
                return self.shard.dense.acquire(at_least, timeout=wait)
            except TimeoutError:
                waited += wait
                if timeout and waited >= timeout:
                    raise TimeoutError(f"shard {self.shard.index}: version {self.shard.version} did not reach "
                                       f"{at_least} within {timeout} s") from None
        return None, None

    def _stream(self, values, version: int):
        """A pull stream, already encoded: the metadata, then TensorChunk.data chunks."""
        yield ps_pb2.TensorChunk(meta=meta_of(values), version=version,
                                 life=self.life.token).SerializeToString()
        for data in chunks(values):
            yield encode_data(3, data)

    def _header_and_data(self, request_iterator, context):
        """A push stream's header and its data messages; a closed shard refuses the push before either."""
        self._refuse_if_closed(context)
        raw = next(request_iterator, None)
        try:
            first = ps_pb2.PushChunk.FromString(raw) if raw is not None else None
        except DecodeError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"Malformed chunks: the first message is not a PushChunk ({len(raw)} bytes)")
        if first is None or not first.HasField("header"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "Malformed chunks: a push stream starts with a header message (PushChunk.header)")
        return first.header, (decode_data(2, raw, ps_pb2.PushChunk) for raw in request_iterator)

    def Push(self, request_iterator, context):
        return self._push(*self._header_and_data(request_iterator, context), context)

    def _push(self, header: ps_pb2.PushHeader, datas, context) -> ps_pb2.PushReply:
        try:
            check_meta(header.meta, (self.shard.size,), "gradient", f"shard {self.shard.index}")
            self.shard.check_worker(header.worker)
            grad = receive(header.meta, datas)
            read_version = self.life.version(header.read_version, header.life)
            self.shard.check_push(grad, read_version, header.worker)
            push = self.shard.push(Flat.of(grad), read_version, header.worker)
        except ValueError as err:
            _invalid(context, err)
        return self._acknowledge(push)

    def Exchange(self, raw: bytes, context) -> bytes:
        """A push, a pull or both in one message each way, encoded by hand (see
        ps.wire): the tensors' bytes are views of the request and of the held
        values, copied once each."""
        try:
            rest, push_data = take_field(raw, 2)
            request = ps_pb2.ExchangeRequest.FromString(rest)
        except (ValueError, DecodeError):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"Malformed request: not an ExchangeRequest ({len(raw)} bytes)")
        head = ps_pb2.ExchangeReply()
        if request.HasField("push"):
            self._refuse_if_closed(context)
            head.push.CopyFrom(self._push(request.push, (push_data,), context))
        buffer, version = self._acquire(request.pull, context) if request.HasField("pull") else (None, None)
        if buffer is None:  # no pull, or nobody to answer
            return head.SerializeToString()
        try:
            values = buffer.flat.tensor
            inner = ps_pb2.TensorChunk(meta=meta_of(values), version=version, life=self.life.token)
            return with_data(head.SerializeToString(), 2, inner.SerializeToString(), 3, raw_bytes(values))
        finally:
            self.shard.dense.release(buffer)

    def _refuse_if_closed(self, context) -> None:
        if self.shard.closed:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"shard {self.shard.index}: the run is over")

    def _acknowledge(self, push) -> ps_pb2.PushReply:
        """The reply to an applied push, once a checkpoint that is due has been saved."""
        if self.recovery is not None:
            self.recovery.after(push.applied)
        return ps_pb2.PushReply(version=push.version, staleness=push.staleness, applied=push.applied,
                                life=self.life.token)

    def PullRows(self, request, context):
        try:
            ids = ids_from_bytes(request.row_ids)
            self.shard.check_ids(request.table, ids)
            rows, version = self.shard.pull_rows(request.table, ids)
        except ValueError as err:
            _invalid(context, err)
        yield from self._stream(rows, version)

    def PushRows(self, request_iterator, context):
        header, datas = self._header_and_data(request_iterator, context)
        try:
            ids = ids_from_bytes(header.row_ids)
            self.shard.check_worker(header.worker)
            self.shard.check_ids(header.table, ids)
            check_meta(header.meta, (ids.numel(), self.shard.tables[header.table].shape[1]), "row gradients",
                       f"shard {self.shard.index}")
            grad_rows = receive(header.meta, datas)
            read_version = self.life.version(header.read_version, header.life)
            self.shard.check_push_rows(header.table, ids, grad_rows, read_version, header.worker)
            push = self.shard.push_rows(header.table, ids, grad_rows, read_version, header.worker)
        except ValueError as err:
            _invalid(context, err)
        return self._acknowledge(push)

    def Status(self, request, context):
        with self._lock:
            done = sorted(self.workers_done)
        return ps_pb2.StatusReply(shard=self.shard.index, version=self.shard.version, size=self.shard.size,
                                  closed=self.shard.closed, workers_done=done,
                                  table_rows={name: t.shape[0] for name, t in self.shard.tables.items()},
                                  life=self.life.token, replayed=self.resumed.replayed,
                                  restored=-1 if self.resumed.restored is None else self.resumed.restored)

    def WorkerDone(self, request, context):
        if not 0 <= request.worker < self.num_workers:
            _invalid(context, ValueError(f"Invalid worker: {request.worker} (the run's workers are "
                                         f"0..{self.num_workers - 1})"))
        with self._lock:
            self.workers_done.add(request.worker)
            everyone = len(self.workers_done) >= self.num_workers
            if self.recovery is not None:  # a restarted shard must still know who has finished
                self.recovery.extra["workers_done"] = sorted(self.workers_done)
                self.recovery.save()
        if everyone:
            self.shard.close()
        return self.Status(request, context)

    def Close(self, request, context):
        self.shard.close()
        return self.Status(request, context)

    def SetLrFactor(self, request, context):
        try:
            self.shard.set_lr_factor(request.factor)
        except ValueError as err:
            _invalid(context, err)
        return self.Status(request, context)


def handlers(servicer: ShardServicer) -> grpc.GenericRpcHandler:
    """The service's methods. The tensor streams pass raw bytes (see ps.wire):
    pull streams are encoded by the servicer, push streams decoded by it."""
    small = {"Status": ps_pb2.StatusRequest, "WorkerDone": ps_pb2.WorkerDoneRequest, "Close": ps_pb2.StatusRequest,
             "SetLrFactor": ps_pb2.LrFactorRequest}
    methods = {name: grpc.unary_unary_rpc_method_handler(
        getattr(servicer, name), request_deserializer=request.FromString,
        response_serializer=ps_pb2.StatusReply.SerializeToString) for name, request in small.items()}
    methods["Exchange"] = grpc.unary_unary_rpc_method_handler(servicer.Exchange)  # bytes both ways
    for name, request in (("Pull", ps_pb2.PullRequest), ("PullRows", ps_pb2.PullRowsRequest)):
        methods[name] = grpc.unary_stream_rpc_method_handler(getattr(servicer, name),
                                                             request_deserializer=request.FromString)
    for name in ("Push", "PushRows"):
        methods[name] = grpc.stream_unary_rpc_method_handler(
            getattr(servicer, name), response_serializer=ps_pb2.PushReply.SerializeToString)
    return grpc.method_handlers_generic_handler(SERVICE, methods)


class TokenInterceptor(grpc.ServerInterceptor):
    """Refuse every call without ``authorization: Bearer <token>``, except health checks."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, details):
        sent = dict(details.invocation_metadata).get("authorization", "")
        # Compared in constant time: how long a refusal takes says nothing about the token.
        if details.method.startswith("/grpc.health.") or hmac.compare_digest(sent.encode(), self._expected):
            return continuation(details)
        handler = continuation(details)

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "missing or wrong token: send metadata 'authorization: Bearer <token>' (ASYNCPS_TOKEN)")

        make = {(False, False): grpc.unary_unary_rpc_method_handler,
                (False, True): grpc.unary_stream_rpc_method_handler,
                (True, False): grpc.stream_unary_rpc_method_handler,
                (True, True): grpc.stream_stream_rpc_method_handler}
        return make[(handler.request_streaming, handler.response_streaming)](deny)


def serve(shard: Shard, num_workers: int, port: int, host: str = "127.0.0.1", token: str | None = None,
          tls: tuple[bytes, bytes] | None = None, recovery: Recovery | None = None) -> tuple[grpc.Server, int]:
    """Start a server for ``shard``, resumed first if ``recovery`` is given;
    returns it and the port it listens on (``port=0`` picks a free one).
    ``tls`` is ``(private key, certificate)`` in PEM."""
    _check_free(host, port)
    interceptors = [TokenInterceptor(token)] if token else []
    # Synchronous workers all wait in a pull at once: one thread each, and more.
    # Not SO_REUSEPORT: two shards on one port would each get some of the calls.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max(16, 4 * num_workers)),
                         interceptors=interceptors, options=(*MESSAGE_OPTIONS, ("grpc.so_reuseport", 0)))
    server.add_generic_rpc_handlers([handlers(ShardServicer(shard, num_workers, recovery))])
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{host}:{port}"
    try:
        bound = server.add_secure_port(address, grpc.ssl_server_credentials([tls])) if tls \
            else server.add_insecure_port(address)
    except RuntimeError:  # taken since _check_free (recent grpcio raises where older ones return 0)
        bound = 0
    if not bound:
        raise ValueError(f"could not listen on {address} (check the host and port)")
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, bound


def _check_free(host: str, port: int) -> None:
    """Refuse a port that something listens on, before gRPC tries it (it
    would log its failure in lines of its own); port 0 is any free one."""
    if port == 0:
        return
    try:
        found = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise ValueError(f"Invalid host: {host!r} (not an address of this machine; e.g. 127.0.0.1, or 0.0.0.0 "
                         f"for every interface)") from None
    for family, kind, proto, _, where in found:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds: TIME_WAIT does not count
            try:
                probe.bind(where)
            except OSError as err:
                if err.errno == errno.EADDRINUSE:
                    raise ValueError(f"port {port} on {host} is in use (stop what listens there, or choose "
                                     f"another port)") from None
                raise ValueError(f"could not listen on {host}:{port} ({err.strerror}; check the host and "
                                 f"port)") from None
