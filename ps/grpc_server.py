"""One shard as a gRPC server: a thin servicer over ``ps.Shard``.

Every rule lives in the Shard; this file only moves bytes and maps errors to
status codes: ValueError -> INVALID_ARGUMENT, a closed shard ->
FAILED_PRECONDITION, a pull's wait running out -> DEADLINE_EXCEEDED. The
standard gRPC health service reports SERVING. An optional shared token
(metadata ``authorization: Bearer <token>``) and optional TLS guard the port.
"""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from protos import ps_pb2, ps_pb2_grpc
from ps.flat import Flat
from ps.publication import ShardClosed
from ps.shard import Shard
from ps.wire import chunks, decode_data, encode_data, ids_from_bytes, meta_of, receive


SERVICE = "asyncps.ParameterServer"


def _invalid(context, err: Exception):
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))


class ShardServicer(ps_pb2_grpc.ParameterServerServicer):
    def __init__(self, shard: Shard, num_workers: int):
        self.shard = shard
        self.num_workers = num_workers
        self.workers_done: set[int] = set()
        self._lock = threading.Lock()

    def Pull(self, request, context):
        values = self.shard.values
        try:
            buffer, version = values.acquire(request.min_version, timeout=request.timeout or None)
        except TimeoutError as err:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(err))
        except ShardClosed as err:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        try:  # held unchanged until the stream is sent
            yield from self._stream(buffer.flat.tensor, version)
        finally:
            values.release(buffer)

    @staticmethod
    def _stream(values, version: int):
        """A pull stream, already encoded: the metadata, then TensorChunk.data chunks."""
        yield ps_pb2.TensorChunk(meta=meta_of(values), version=version).SerializeToString()
        for data in chunks(values):
            yield encode_data(3, data)

    def _header_and_data(self, request_iterator, context):
        """A push stream's header and its data messages; a closed shard refuses the push before either."""
        if self.shard.closed:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"shard {self.shard.index}: the run is over")
        raw = next(request_iterator, None)
        first = ps_pb2.PushChunk.FromString(raw) if raw is not None else None
        if first is None or not first.HasField("header"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "Malformed chunks: a push stream starts with a header message (PushChunk.header)")
        return first.header, (decode_data(2, raw, ps_pb2.PushChunk) for raw in request_iterator)

    def Push(self, request_iterator, context):
        header, datas = self._header_and_data(request_iterator, context)
        try:
            grad = receive(header.meta, datas)
            self.shard.check_push(grad, header.read_version, header.worker)
            push = self.shard.push(Flat.of(grad), header.read_version, header.worker)
        except ValueError as err:
            _invalid(context, err)
        return ps_pb2.PushReply(version=push.version, staleness=push.staleness, applied=push.applied)

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
            grad_rows, ids = receive(header.meta, datas), ids_from_bytes(header.row_ids)
            self.shard.check_push_rows(header.table, ids, grad_rows, header.read_version, header.worker)
            push = self.shard.push_rows(header.table, ids, grad_rows, header.read_version, header.worker)
        except ValueError as err:
            _invalid(context, err)
        return ps_pb2.PushReply(version=push.version, staleness=push.staleness, applied=push.applied)

    def Status(self, request, context):
        with self._lock:
            done = sorted(self.workers_done)
        return ps_pb2.StatusReply(shard=self.shard.index, version=self.shard.version, size=self.shard.size,
                                  closed=self.shard.closed, workers_done=done,
                                  table_rows={name: t.shape[0] for name, t in self.shard.tables.items()})

    def WorkerDone(self, request, context):
        with self._lock:
            self.workers_done.add(request.worker)
            everyone = len(self.workers_done) >= self.num_workers
        if everyone:
            self.shard.close()
        return self.Status(request, context)

    def Close(self, request, context):
        self.shard.close()
        return self.Status(request, context)


def handlers(servicer: ShardServicer) -> grpc.GenericRpcHandler:
    """The service's methods. The tensor streams pass raw bytes (see ps.wire):
    pull streams are encoded by the servicer, push streams decoded by it."""
    small = {"Status": ps_pb2.StatusRequest, "WorkerDone": ps_pb2.WorkerDoneRequest, "Close": ps_pb2.StatusRequest}
    methods = {name: grpc.unary_unary_rpc_method_handler(
        getattr(servicer, name), request_deserializer=request.FromString,
        response_serializer=ps_pb2.StatusReply.SerializeToString) for name, request in small.items()}
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
        self._expected = f"Bearer {token}"

    def intercept_service(self, continuation, details):
        if details.method.startswith("/grpc.health.") or \
                dict(details.invocation_metadata).get("authorization") == self._expected:
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
          tls: tuple[bytes, bytes] | None = None) -> tuple[grpc.Server, int]:
    """Start a server for ``shard``; returns it and the port it listens on
    (``port=0`` picks a free one). ``tls`` is ``(private key, certificate)`` in PEM."""
    interceptors = [TokenInterceptor(token)] if token else []
    # Synchronous workers all wait in a pull at once: one thread each, and more.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max(16, 4 * num_workers)),
                         interceptors=interceptors)
    server.add_generic_rpc_handlers([handlers(ShardServicer(shard, num_workers))])
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{host}:{port}"
    bound = server.add_secure_port(address, grpc.ssl_server_credentials([tls])) if tls \
        else server.add_insecure_port(address)
    if not bound:
        raise OSError(f"could not listen on {address}")
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, bound
