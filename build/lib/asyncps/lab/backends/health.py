"""Is a shard serving? The standard gRPC health check, and nothing heavier.

Only grpc is imported here, so a container health check that runs every few
seconds does not load torch each time (seconds of CPU per check on 2 cores).
Run it as ``python -m asyncps.lab.backends.health HOST:PORT``, or ``asyncps health HOST:PORT``.
"""

from __future__ import annotations

import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from asyncps.protos import CHANNEL_OPTIONS


def channel(address: str, tls_ca: bytes | None = None) -> grpc.Channel:
    """A plaintext channel, or a TLS one trusting ``tls_ca`` (PEM)."""
    if tls_ca is None:
        return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=tls_ca), options=CHANNEL_OPTIONS)


def health_main(address: str, timeout: float = 3.0, tls_ca: bytes | None = None) -> int:
    """0 if the server at ``address`` reports SERVING."""
    try:
        with channel(address, tls_ca) as to_shard:
            reply = health_pb2_grpc.HealthStub(to_shard).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    except grpc.RpcError as err:
        print(f"{address}: {err.code().name}", file=sys.stderr)
        return 1
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def wait_until_serving(address: str, timeout: float, process=None, tls_ca: bytes | None = None) -> None:
    """Return once ``address`` is serving; fail if ``process`` (its server: a
    ``subprocess.Popen``, or anything with its ``poll``) exits first."""
    give_up = time.monotonic() + timeout
    with channel(address, tls_ca) as to_shard:
        stub = health_pb2_grpc.HealthStub(to_shard)
        while True:
            if process is not None and (code := process.poll()) is not None:
                raise RuntimeError(f"the shard server for {address} exited with code {code}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass  # not up yet
            if time.monotonic() > give_up:  # whether nothing answered, or something not serving did
                raise TimeoutError(f"no shard server was serving at {address} within {timeout} s")
            time.sleep(0.1)


def unreachable(addresses: list[str], timeout: float, tls_ca: bytes | None = None) -> list[str]:
    """The addresses not serving within ``timeout`` seconds, one deadline for
    them all (once it has passed, each address still to check is asked once)."""
    give_up = time.monotonic() + timeout
    missing = []
    for address in addresses:
        try:
            wait_until_serving(address, max(0.0, give_up - time.monotonic()), tls_ca=tls_ca)
        except TimeoutError:
            missing.append(address)
    return missing


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m asyncps.lab.backends.health HOST:PORT")
    sys.exit(health_main(sys.argv[1]))
