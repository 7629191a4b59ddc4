"""The ``grpc`` backend: every shard a server process, every worker a process.

``asyncps run --backend grpc`` starts ``asyncps serve`` for each shard and
``asyncps work`` for each worker on 127.0.0.1, evaluates in its own process,
and stops them at the end. A worker process that exits with an error fails
the run; one killed by a signal has died, and the others go on while the
protocol can. With ``addresses`` given, the shards and workers are someone
else's (docker-compose): the run evaluates until the shards close.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys

from lab.backends.base import Backend, Threads, WorkerDied
from lab.backends.health import wait_until_serving
from lab.evaluator import EVALUATOR
from ps.grpc_client import GrpcClient

# glibc serves allocations of 32 MB or more from fresh mmap pages, and every
# first touch of a page costs microseconds: large messages would page-fault
# on every pull. Both thresholds are needed to keep freed memory for reuse.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 31)}
PROGRAM = [sys.executable, "-m", "lab.cli"]


def token_from_env() -> str | None:
    return os.environ.get("ASYNCPS_TOKEN") or None


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class GrpcBackend(Backend):
    name = "grpc"
    records_steps = False  # each worker process writes its own records; they are merged at the end

    def __init__(self, experiment, metrics, addresses: list[str] | None = None, tls_ca: bytes | None = None):
        super().__init__(experiment, metrics)
        self.external = addresses is not None
        self.addresses = addresses or [f"127.0.0.1:{port}" for port in free_ports(experiment.config.cluster.shards)]
        self.tls_ca = tls_ca
        self.run_dir = metrics.path.parent
        self.env = {**os.environ, **MALLOC_ENV}
        self.servers: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        self.threads = Threads()

    def client(self) -> GrpcClient:
        return GrpcClient(self.experiment.layout, self.addresses, EVALUATOR, token=token_from_env(),
                          tls_ca=self.tls_ca)

    def start(self) -> GrpcClient:
        if not self.external:
            config_path = str(self.run_dir / "config.toml")
            self.servers = [subprocess.Popen([*PROGRAM, "serve", config_path, "--shard", str(s), "--port",
                                              address.rsplit(":", 1)[1]], env=self.env, stdout=subprocess.DEVNULL)
                            for s, address in enumerate(self.addresses)]
            for server, address in zip(self.servers, self.addresses):
                wait_until_serving(address, timeout=120.0, process=server)
        return self.client()

    def start_worker(self, worker, ended, stopped) -> None:
        if self.external:
            return
        process = subprocess.Popen([*PROGRAM, "work", str(self.run_dir / "config.toml"), "--worker", str(worker),
                                    "--shards", ",".join(self.addresses), "--run-dir", str(self.run_dir)],
                                   env=self.env)
        self.workers.append(process)
        self.threads.start(f"watch-worker-{worker}", self._watch, worker, process, ended)

    @staticmethod
    def _watch(worker: int, process: subprocess.Popen, ended) -> None:
        code = process.wait()
        if code == 0:
            ended(worker, None)
        elif code < 0:
            ended(worker, WorkerDied(f"its process was killed by {signal.Signals(-code).name}"))
        else:
            ended(worker, RuntimeError(f"worker process {worker} exited with code {code} (its error is printed above)"))

    def spawn(self, name, coro) -> None:
        self.threads.spawn(name, coro)

    def wait(self) -> None:
        self.threads.join()

    def end(self) -> None:
        async def close_run():
            client = self.client()
            try:
                await client.close_run()
            finally:
                await client.aclose()

        asyncio.run(close_run())

    def stop(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.kill()
        for server in self.servers:
            server.send_signal(signal.SIGTERM)
        for server in self.servers:
            server.wait(timeout=30)
