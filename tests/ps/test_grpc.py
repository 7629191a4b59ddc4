"""The gRPC transport against real `asyncps serve` processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from asyncps.lab.backends.grpc import free_ports
from asyncps.lab.backends.health import wait_until_serving
from asyncps.lab.config import load_config, to_toml
from asyncps.lab.experiment import Experiment
from asyncps.protos import ps_pb2, ps_pb2_grpc
from asyncps.ps.grpc_client import GrpcClient
from asyncps.ps.wire import UNARY_BYTES, meta_of

ROOT = Path(__file__).parents[2]


def start_server(config_path: Path, shard: int, *extra: str, env: dict | None = None):
    port = free_ports(1)[0]
    process = subprocess.Popen([sys.executable, "-m", "asyncps.lab.cli", "serve", str(config_path), "--shard", str(shard),
                                "--port", str(port), *extra], env={**os.environ, **(env or {})},
                               stdout=subprocess.DEVNULL)
    return process, f"127.0.0.1:{port}"


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=30)


def write_config(directory: Path, *overrides: str) -> Path:
    path = directory / "experiment.toml"
    path.write_text(to_toml(load_config(None, [f"out_dir={directory}", *overrides])))
    return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two plain shard servers of the quickstart model, shared by the tests of this module."""
    directory = tmp_path_factory.mktemp("grpc")
    config_path = write_config(directory, "cluster.shards=2", "cluster.workers=2")
    servers = [start_server(config_path, s) for s in range(2)]
    for process, address in servers:
        wait_until_serving(address, timeout=120, process=process)
    yield Experiment.build(load_config(config_path)), [address for _, address in servers]
    for process, _ in servers:
        stop(process)


def test_committed_stubs_are_what_ps_proto_generates(tmp_path):
    subprocess.run(["bash", str(ROOT / "protos/gen.sh"), str(tmp_path)], env={**os.environ, "PYTHON": sys.executable},
                   check=True)
    for name in ("ps_pb2.py", "ps_pb2.pyi", "ps_pb2_grpc.py"):
        assert (tmp_path / name).read_text() == (ROOT / "protos" / name).read_text(), \
            f"protos/{name} is stale: run `make protos` and commit the result"


def test_pull_and_push_round_trip_through_real_servers(cluster):
    experiment, addresses = cluster

    async def go():
        client = GrpcClient(experiment.layout, addresses, worker=0)
        flat = torch.empty(experiment.layout.size)
        read = await client.pull(flat)
        assert torch.equal(flat, experiment.initial_flat)
        pushes = await client.push(torch.ones(experiment.layout.size), read)
        assert [p.staleness for p in pushes] == [0, 0] and all(p.applied for p in pushes)
        after = await client.pull(flat, read.next())
        assert after == read.next()
        assert not torch.equal(flat, experiment.initial_flat)
        await client.aclose()

    asyncio.run(go())


class Raw(bytes):
    """A message sent as these bytes, not wrapped in a PushChunk: what no client would send."""


def raw_push(address: str, header, datas: list[bytes], method="Push"):
    """A push stream: ``header`` (a PushHeader, None, or Raw bytes) then ``datas``."""
    first = [] if header is None else [header if isinstance(header, Raw)
                                       else ps_pb2.PushChunk(header=header).SerializeToString()]
    messages = first + [d if isinstance(d, Raw) else ps_pb2.PushChunk(data=d).SerializeToString() for d in datas]
    with grpc.insecure_channel(address) as channel:
        call = channel.stream_unary(f"/asyncps.ParameterServer/{method}", request_serializer=bytes,
                                    response_deserializer=ps_pb2.PushReply.FromString)
        return call(iter(messages), timeout=30)


def shard_state(address: str) -> tuple[int, bytes]:
    with grpc.insecure_channel(address) as channel:
        stub = ps_pb2_grpc.ParameterServerStub(channel)
        version = stub.Status(ps_pb2.StatusRequest(), timeout=30).version
        data = b"".join(m.data for m in stub.Pull(ps_pb2.PullRequest(), timeout=30))
    return version, data


def malformed(size: int, version: int):
    good = np.ones(size, np.float32).tobytes()
    meta = lambda dtype="float32", shape=(size,), nbytes=4 * size: ps_pb2.TensorMeta(  # noqa: E731
        dtype=dtype, shape=list(shape), nbytes=nbytes)
    header = lambda **kw: ps_pb2.PushHeader(read_version=kw.pop("read_version", version),  # noqa: E731
                                            worker=kw.pop("worker", 0), meta=kw.pop("meta", meta()), **kw)
    nan = np.ones(size, np.float32)
    nan[size // 2] = np.nan
    inf = np.ones(size, np.float32)
    inf[-1] = -np.inf
    return {
        "wrong shape": (header(meta=meta(shape=(size + 1,), nbytes=4 * (size + 1))),
                        [good + b"\0" * 4], r"shape for shard 0: \(%d,\) \(expected \(%d,\)\)" % (size + 1, size)),
        "wrong dtype": (header(meta=meta(dtype="float64", nbytes=8 * size)), [good + good],
                        "dtype for shard 0: torch.float64"),
        "unknown dtype": (header(meta=meta(dtype="complex64")), [good], "Invalid dtype: 'complex64'"),
        "NaN": (header(), [nan.tobytes()], "1 non-finite values"),
        "Inf": (header(), [inf.tobytes()], "1 non-finite values"),
        "size disagrees with shape": (header(meta=meta(nbytes=4 * size - 4)), [good], "Invalid size"),
        "too few bytes": (header(), [good[:-8]], "the stream ended after"),
        "too many bytes": (header(), [good, b"\0" * 8], "bytes received for a tensor of"),
        "data before the header": (None, [good], "a push stream starts with a header"),
        "a future read version": (header(read_version=version + 5), [good], "Invalid read_version"),
        "a worker outside the run": (header(worker=99), [good], r"Invalid worker for shard 0: 99 \(the run's workers"),
        "a negative worker": (header(worker=-1), [good], "Invalid worker for shard 0: -1"),
        # Declared sizes are checked against the shard before anything is allocated for them.
        "a billion floats declared": (header(meta=meta(shape=(10 ** 9,), nbytes=4 * 10 ** 9)), [good],
                                      r"shape for shard 0: \(1000000000,\) \(expected"),
        "a shape whose size overflows": (header(meta=meta(shape=(2 ** 62, 2 ** 62), nbytes=4)), [good],
                                         r"shape for shard 0: \(4611686018427387904, 4611686018427387904\)"),
        "garbage after the header": (header(), [Raw(b"\xff\xff\xff\xff")], "Malformed chunks: a data message"),
        "garbage for a header": (Raw(b"\xff\xff\xff\xff"), [], "Malformed chunks: the first message is not a PushChunk"),
    }


@pytest.mark.parametrize("case", list(malformed(4, 0)))
def test_malformed_push_is_refused_with_invalid_argument_and_changes_nothing(cluster, case):
    experiment, addresses = cluster
    address, size = addresses[0], experiment.layout.ranges[0].stop
    before = shard_state(address)
    header, datas, message = malformed(size, before[0])[case]
    with pytest.raises(grpc.RpcError) as refused:
        raw_push(address, header, datas)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert __import__("re").search(message, refused.value.details()), refused.value.details()
    assert shard_state(address) == before
    good = ps_pb2.PushHeader(read_version=before[0], worker=0, meta=meta_of(torch.zeros(size)))
    assert raw_push(address, good, [np.zeros(size, np.float32).tobytes()]).applied  # still serving


def exchange(address: str, request: bytes) -> ps_pb2.ExchangeReply:
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/asyncps.ParameterServer/Exchange", request_serializer=bytes,
                                   response_deserializer=ps_pb2.ExchangeReply.FromString)
        return call(request, timeout=30)


# The one-message push (what a client sends for a small part) refuses what a push stream refuses.
ONE_MESSAGE = [case for case, (header, datas, _) in malformed(4, 0).items()
               if isinstance(header, ps_pb2.PushHeader) and not any(isinstance(d, Raw) for d in datas)]


@pytest.mark.parametrize("case", ONE_MESSAGE)
def test_a_malformed_exchange_is_refused_with_invalid_argument_and_changes_nothing(cluster, case):
    experiment, addresses = cluster
    address, size = addresses[0], experiment.layout.ranges[0].stop
    before = shard_state(address)
    header, datas, message = malformed(size, before[0])[case]
    request = ps_pb2.ExchangeRequest(push=header, push_data=b"".join(datas), pull=ps_pb2.PullRequest())
    with pytest.raises(grpc.RpcError) as refused:
        exchange(address, request.SerializeToString())
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert __import__("re").search(message, refused.value.details()), refused.value.details()
    assert shard_state(address) == before


def test_an_exchange_pushes_then_pulls_and_garbage_is_invalid_argument(cluster):
    experiment, addresses = cluster
    address, size = addresses[0], experiment.layout.ranges[0].stop
    version, data = shard_state(address)
    grad = np.full(size, 0.5, np.float32)
    request = ps_pb2.ExchangeRequest(push=ps_pb2.PushHeader(read_version=version, worker=1,
                                                            meta=meta_of(torch.from_numpy(grad))),
                                     push_data=grad.tobytes(), pull=ps_pb2.PullRequest(min_version=version + 1))
    reply = exchange(address, request.SerializeToString())
    assert (reply.push.version, reply.push.applied, reply.values.version) == (version, True, version + 1)
    assert (reply.values.version, reply.values.data) == shard_state(address) and reply.values.data != data
    # a cut-off varint, data longer than the message, a wire type ps.proto never uses
    for garbage in (b"\xff\xff\xff\xff", b"\x12\x80\x80\x04abc", b"\x0b\x00\x00\x00"):
        with pytest.raises(grpc.RpcError) as refused:
            exchange(address, garbage)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == f"Malformed request: not an ExchangeRequest ({len(garbage)} bytes)"
    assert shard_state(address) == (version + 1, reply.values.data)


def test_rows_of_an_unknown_table_are_invalid_argument(cluster):
    _, addresses = cluster
    with grpc.insecure_channel(addresses[0]) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            list(ps_pb2_grpc.ParameterServerStub(channel).PullRows(
                ps_pb2.PullRowsRequest(table="embeddings", row_ids=b""), timeout=30))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Invalid table: 'embeddings'" in refused.value.details()


def test_client_maps_a_refusal_to_value_error(cluster):
    experiment, addresses = cluster

    async def go():
        client = GrpcClient(experiment.layout, addresses, worker=0)
        read = await client.pull(torch.empty(experiment.layout.size))
        bad = torch.ones(experiment.layout.size)
        bad[-1] = float("nan")  # only the last shard's slice is bad
        with pytest.raises(ValueError, match="non-finite"):
            await client.push(bad, read)
        await client.aclose()

    asyncio.run(go())


# 6 MB: one Exchange message, above gRPC's default 4 MB limit; 9 MB: streams of chunks.
@pytest.mark.parametrize("hidden, streams", [(20_000, False), (30_000, True)])
def test_a_model_larger_than_grpcs_default_message_limit_moves_in_one_message_or_in_chunks(tmp_path, hidden, streams):
    config_path = write_config(tmp_path, "cluster.shards=1", "cluster.workers=1", f"model.options={{hidden = [{hidden}]}}")
    experiment = Experiment.build(load_config(config_path))
    assert 4 * 2 ** 20 < experiment.layout.size * 4 and (experiment.layout.size * 4 > UNARY_BYTES) == streams
    process, address = start_server(config_path, 0)
    try:
        wait_until_serving(address, timeout=120, process=process)

        async def go():
            client = GrpcClient(experiment.layout, [address], worker=0)
            after = torch.empty(experiment.layout.size)
            read = await client.pull(after)
            assert torch.equal(after, experiment.initial_flat)
            grad = torch.randn(experiment.layout.size)
            await client.push(grad, read)
            await client.pull(after, 1)
            pushes, read = await client.push_pull(grad, read, after, 2)
            assert [p.version for p in pushes] == [1] and read.of_shard == (2,)
            await client.aclose()
            return after

        after = asyncio.run(go())
        assert after.shape == experiment.initial_flat.shape and not torch.equal(after, experiment.initial_flat)
    finally:
        assert stop(process) == 0  # SIGTERM: a graceful, clean exit


def test_token_is_required_when_the_server_has_one(tmp_path):
    config_path = write_config(tmp_path, "cluster.shards=1", "cluster.workers=1")
    experiment = Experiment.build(load_config(config_path))
    process, address = start_server(config_path, 0, env={"ASYNCPS_TOKEN": "s3cret"})
    try:
        wait_until_serving(address, timeout=120, process=process)  # health checks need no token

        async def pull_with(token):
            client = GrpcClient(experiment.layout, [address], worker=0, token=token)
            try:
                flat = torch.empty(experiment.layout.size)
                await client.pull(flat)
                return flat
            finally:
                await client.aclose()

        for token in (None, "wrong"):
            with pytest.raises(PermissionError, match="missing or wrong token"):
                asyncio.run(pull_with(token))
        assert torch.equal(asyncio.run(pull_with("s3cret")), experiment.initial_flat)
    finally:
        stop(process)


def test_tls_round_trip(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    config_path = write_config(tmp_path, "cluster.shards=1", "cluster.workers=1")
    experiment = Experiment.build(load_config(config_path))
    process, address = start_server(config_path, 0, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        async def pull(tls_ca, retry_seconds):
            client = GrpcClient(experiment.layout, [address], worker=0, tls_ca=tls_ca, retry_seconds=retry_seconds)
            try:
                flat = torch.empty(experiment.layout.size)
                await client.pull(flat)
                return flat
            finally:
                await client.aclose()

        pulled = asyncio.run(pull(cert.read_bytes(), retry_seconds=120))  # retried while the server starts
        assert torch.equal(pulled, experiment.initial_flat)
        with pytest.raises(ConnectionError):  # a plaintext client cannot talk to a TLS port
            asyncio.run(pull(None, retry_seconds=2))
        # The health check speaks TLS too, given the authority; in plaintext it finds nothing serving.
        health = [sys.executable, "-m", "asyncps.lab.cli", "health", address]
        assert subprocess.run([*health, "--tls-ca", str(cert)], capture_output=True).returncode == 0
        assert subprocess.run(health, capture_output=True).returncode == 1
        wait_until_serving(address, timeout=30, tls_ca=cert.read_bytes())
    finally:
        stop(process)


@pytest.mark.parametrize("given", ["--tls-cert", "--tls-key"])
def test_half_a_tls_setting_is_an_error_not_a_plaintext_server(tmp_path, given):
    config_path = write_config(tmp_path, "cluster.shards=1", "cluster.workers=1")
    (tmp_path / "one.pem").write_text("")
    done = subprocess.run([sys.executable, "-m", "asyncps.lab.cli", "serve", str(config_path), "--shard", "0", "--port",
                           str(free_ports(1)[0]), given, str(tmp_path / "one.pem")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    assert "--tls-cert and --tls-key go together" in done.stderr


def test_worker_done_from_an_id_outside_the_run_is_refused_and_the_shard_stays_open(cluster):
    _, addresses = cluster
    with grpc.insecure_channel(addresses[0]) as channel:
        stub = ps_pb2_grpc.ParameterServerStub(channel)
        for worker in (999, -7, -1, 2 ** 31 - 1):
            with pytest.raises(grpc.RpcError) as refused:
                stub.WorkerDone(ps_pb2.WorkerDoneRequest(worker=worker), timeout=30)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert refused.value.details() == f"Invalid worker: {worker} (the run's workers are 0..1)"
        status = stub.Status(ps_pb2.StatusRequest(), timeout=30)
    assert not status.closed and list(status.workers_done) == []


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), 1e300, -1.0])
def test_a_pull_timeout_that_is_no_number_of_seconds_is_refused(cluster, timeout):
    _, addresses = cluster
    with grpc.insecure_channel(addresses[0]) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            list(ps_pb2_grpc.ParameterServerStub(channel).Pull(ps_pb2.PullRequest(timeout=timeout), timeout=30))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith(f"Invalid pull timeout: {timeout!r} (seconds, a finite number from 0")


def test_cancelled_waiting_pulls_free_the_servers_threads_and_sigterm_stops_it(tmp_path):
    # More waiting pulls (for a version that never comes, with no time limit) than the server has threads.
    config_path = write_config(tmp_path, "cluster.shards=1", "cluster.workers=1")
    process, address = start_server(config_path, 0)
    try:
        wait_until_serving(address, timeout=120, process=process)
        with grpc.insecure_channel(address) as channel:
            stub = ps_pb2_grpc.ParameterServerStub(channel)
            waiting = [stub.Pull(ps_pb2.PullRequest(min_version=10 ** 9)) for _ in range(24)]
            for call in waiting:
                call.cancel()
        with grpc.insecure_channel(address) as channel:  # served again: the cancelled pulls let go of their threads
            status = ps_pb2_grpc.ParameterServerStub(channel).Status(ps_pb2.StatusRequest(), timeout=20)
        assert status.version == 0
        with grpc.insecure_channel(address) as channel:  # and pulls still waiting do not keep SIGTERM from stopping it
            stub = ps_pb2_grpc.ParameterServerStub(channel)
            still = [stub.Pull(ps_pb2.PullRequest(min_version=10 ** 9)) for _ in range(4)]
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
            for call in still:
                call.cancel()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_concurrent_clients_every_acknowledged_push_is_in_the_version_and_memory_stays_bounded(tmp_path):
    # 8 clients, each on its own thread and event loop, pushing to one shard at once.
    config_path = write_config(tmp_path, "cluster.shards=1", "cluster.workers=8")
    experiment = Experiment.build(load_config(config_path))
    process, address = start_server(config_path, 0)

    def client_pushes(worker: int, count: int) -> int:
        async def go():
            client = GrpcClient(experiment.layout, [address], worker=worker)
            params, applied = torch.empty(experiment.layout.size), 0
            for _ in range(count):
                read = await client.pull(params)
                applied += sum(p.applied for p in await client.push(torch.full_like(params, 1e-6), read))
            await client.aclose()
            return applied

        return asyncio.run(go())

    def round_of(count: int) -> int:
        with ThreadPoolExecutor(8) as pool:
            return sum(pool.map(client_pushes, range(8), [count] * 8))

    try:
        wait_until_serving(address, timeout=120, process=process)
        acknowledged = round_of(20)  # warm: buffers and threads made
        warm = resident_mb(process.pid)
        acknowledged += round_of(100)
        with grpc.insecure_channel(address) as channel:
            version = ps_pb2_grpc.ParameterServerStub(channel).Status(ps_pb2.StatusRequest(), timeout=30).version
        assert version == acknowledged == 8 * 120
        assert resident_mb(process.pid) < warm + 64  # 800 more pushes kept nothing
    finally:
        stop(process)


def test_an_lr_factor_is_refused_unless_the_server_optimizer_is_on_a_plateau_and_it_is_in_0_1(cluster, tmp_path):
    _, addresses = cluster
    with grpc.insecure_channel(addresses[0]) as channel:  # the module's cluster: Adagrad at a constant rate
        with pytest.raises(grpc.RpcError) as refused:
            ps_pb2_grpc.ParameterServerStub(channel).SetLrFactor(ps_pb2.LrFactorRequest(factor=0.5), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == ("Invalid lr factor for shard 0: its optimizer's lr is not a plateau schedule "
                                       '(set [server] schedule = {kind = "plateau"})')
    config_path = write_config(tmp_path, "cluster.shards=1", "cluster.workers=1", 'server.optimizer="sgd"',
                               "server.options.lr=0.1", 'server.schedule.kind="plateau"')
    process, address = start_server(config_path, 0)
    try:
        wait_until_serving(address, timeout=120, process=process)
        experiment = Experiment.build(load_config(config_path))
        client = GrpcClient(experiment.layout, [address], 0)

        async def cut_then_push():
            for hostile in (float("nan"), -1.0, 0.0, 1.5):
                with pytest.raises(ValueError, match=r"must be a number in \(0, 1\]"):
                    await client.set_lr_factor(hostile)
            before = torch.empty(experiment.layout.size)
            read = await client.pull(before)
            await client.set_lr_factor(0.25)
            await client.push(torch.ones(experiment.layout.size), read)
            after = torch.empty(experiment.layout.size)
            await client.pull(after)
            await client.aclose()
            return before, after

        before, after = asyncio.run(cut_then_push())
        assert torch.allclose(after, before - 0.025)
    finally:
        stop(process)
