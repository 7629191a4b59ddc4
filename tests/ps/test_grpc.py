"""The gRPC transport against real `asyncps serve` processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from lab.backends.grpc import free_ports
from lab.backends.health import wait_until_serving
from lab.config import load_config, to_toml
from lab.experiment import Experiment
from protos import ps_pb2, ps_pb2_grpc
from ps.grpc_client import GrpcClient
from ps.wire import meta_of

ROOT = Path(__file__).parents[2]


def start_server(config_path: Path, shard: int, *extra: str, env: dict | None = None):
    port = free_ports(1)[0]
    process = subprocess.Popen([sys.executable, "-m", "lab.cli", "serve", str(config_path), "--shard", str(shard),
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
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT}", f"--python_out={tmp_path}",
                    f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", str(ROOT / "protos/ps.proto")],
                   check=True)
    for name in ("ps_pb2.py", "ps_pb2.pyi", "ps_pb2_grpc.py"):
        assert (tmp_path / "protos" / name).read_text() == (ROOT / "protos" / name).read_text(), \
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


def raw_push(address: str, header: ps_pb2.PushHeader | None, datas: list[bytes], method="Push"):
    messages = ([ps_pb2.PushChunk(header=header)] if header is not None else []) + \
               [ps_pb2.PushChunk(data=d) for d in datas]
    with grpc.insecure_channel(address) as channel:
        return getattr(ps_pb2_grpc.ParameterServerStub(channel), method)(iter(messages), timeout=30)


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
    header = lambda **kw: ps_pb2.PushHeader(read_version=kw.pop("read_version", version), worker=0,  # noqa: E731
                                            meta=kw.pop("meta", meta()), **kw)
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


def test_model_larger_than_the_4mb_message_limit_streams_in_chunks(tmp_path):
    config_path = write_config(tmp_path, "cluster.shards=1", "cluster.workers=1", "model.options={hidden = [20000]}")
    experiment = Experiment.build(load_config(config_path))
    assert experiment.layout.size * 4 > 4 * 2 ** 20
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
    finally:
        stop(process)
