"""The ``grpc`` backend: every shard a server process, every worker a process.

``asyncps run --backend grpc`` starts a process for each shard and each
worker (``grpc_processes.Forked``: forks of a fork server, handed the
experiment this process built), on 127.0.0.1, evaluates in its own process,
and stops them at the end. A worker process that exits with an error fails
the run; one killed by a signal has died, and the others go on while the
protocol can. A shard process that exits before the end is restarted on its
address, from its checkpoint and journal (``[recovery]``), up to
``max_restarts`` times, while the clients retry; after that, the run fails
at once: the shards still alive are closed, the workers stopped, and the run
directory says so. With ``addresses`` given, the shards and workers are someone
else's (docker-compose, whose restart policy brings a shard back): the run
evaluates until the shards close.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import threading
import uuid
from pathlib import Path

import grpc

from asyncps.lab.backends.base import Backend, Threads, WorkerDied
from asyncps.lab.backends.grpc_processes import Forked, serve_shard, token_from_env, work
from asyncps.lab.backends.health import channel, wait_until_serving
from asyncps.lab.evaluator import EVALUATOR
from asyncps.lab.metrics import WORKER_PARTS
from asyncps.protos import ps_pb2, ps_pb2_grpc
from asyncps.ps.grpc_client import GrpcClient, token_metadata
from asyncps.ps.recovery import Resumed

RETRY_SECONDS = 30.0  # how long this process's calls retry a shard that does not answer (a restart takes seconds)
STOP_SECONDS = 5.0  # once the run has ended, how long a worker has to exit before it is stopped


def exit_of(code: int) -> str:
    """How a process ended, from its return code, for an event."""
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def follow(directory: Path, tell, stop: threading.Event, every: float = 0.5) -> None:
    """Tell ``tell`` of each "train" record the worker processes write into
    ``directory`` (as a progress bar would hear of a thread's), reading what
    each file has gained every ``every`` seconds, and once more when ``stop``
    is set."""
    read: dict[Path, int] = {}  # bytes of each file already read (whole lines)
    while True:
        stopping = stop.wait(every)  # then one last read: what the workers wrote as they finished
        for path in directory.glob("worker-*.jsonl"):
            with path.open("rb") as part:
                part.seek(read.get(path, 0))
                new = part.read()
            whole = new.rfind(b"\n") + 1
            read[path] = read.get(path, 0) + whole
            for line in new[:whole].splitlines():
                record = json.loads(line)
                if record["kind"] == "train":
                    tell("train", record)
        if stopping:
            return


class GrpcBackend(Backend):
    """Each worker process writes its own records (merged at the end); the
    progress bar hears of its steps as ``follow`` reads them."""

    name = "grpc"

    def __init__(self, experiment, metrics, addresses: list[str] | None = None, tls_ca: bytes | None = None):
        super().__init__(experiment, metrics)
        self.external = addresses is not None
        self.addresses = addresses or [f"127.0.0.1:{port}" for port in free_ports(experiment.config.cluster.shards)]
        self.tls_ca = tls_ca
        self.run_dir = metrics.path.parent.resolve()  # its processes' working directory may not be this one's
        self.servers: list[Forked] = []
        self.workers: list[Forked] = []
        self.threads = Threads()
        self.stopping = False
        self.lock = threading.Lock()  # between a shard's restart and the end of the run
        self.run_id = uuid.uuid4().hex  # a restarted shard takes only this run's checkpoint and journal
        self.following = threading.Event()  # set: stop following the workers' records
        self.follower: threading.Thread | None = None
        self.evaluator: GrpcClient | None = None  # the client start() returns

    def client(self, retry_seconds: float = RETRY_SECONDS, on_restart=None) -> GrpcClient:
        return GrpcClient(self.experiment.layout, self.addresses, EVALUATOR, token=token_from_env(),
                          tls_ca=self.tls_ca, retry_seconds=retry_seconds, on_restart=on_restart)

    def starting(self) -> str:
        cluster = self.experiment.config.cluster
        if self.external:
            return f"waiting for {cluster.shards} shards at {', '.join(self.addresses)}"
        return f"starting {cluster.shards} shard and {cluster.workers} worker processes"

    def start(self, fail) -> GrpcClient:
        if not self.external:
            self.servers = [self._serve(s) for s in range(len(self.addresses))]
            for server, address in zip(self.servers, self.addresses):
                wait_until_serving(address, timeout=120.0, process=server)
            # The workers once every shard serves: from here on, the watchers restart a shard that dies.
            self.workers = [Forked(work, self.experiment, w, self.addresses, str(self.run_dir), token_from_env())
                            for w in range(self.experiment.config.cluster.workers)]
            for s in range(len(self.servers)):  # not joined by wait(): a shard serves to the end
                threading.Thread(target=self._watch_shard, args=(s, fail), daemon=True).start()
        self.follower = threading.Thread(target=follow, daemon=True,
                                         args=(self.run_dir / WORKER_PARTS, self.metrics.tell, self.following))
        self.follower.start()
        client = self.evaluator = self.client(on_restart=self.shard_restarted)

        async def know_the_shards():  # their lives: a restart from here on is an event
            await client.status()
            await client.aclose()

        asyncio.run(know_the_shards())
        return client

    def _port(self, shard: int) -> str:
        return self.addresses[shard].rsplit(":", 1)[1]

    def _serve(self, shard: int) -> Forked:
        """Shard ``shard``'s process; a restarted one resumes from what it kept."""
        checkpoints = str(self.run_dir / "checkpoints") if self.experiment.config.recovery.checkpoint_every else None
        return Forked(serve_shard, self.experiment, shard, self._port(shard), "127.0.0.1", token_from_env(), None,
                      checkpoints, self.run_id, False)

    def _watch_shard(self, shard: int, fail) -> None:
        """Restart shard ``shard`` each time its process dies, ``max_restarts`` times; then fail the run."""
        restarts = self.experiment.config.recovery.max_restarts
        for restart in range(1, restarts + 2):
            code = self.servers[shard].wait()
            with self.lock:
                if self.stopping:
                    return
                died = f"shard {shard} died: its process {exit_of(code)}"
                if restart > restarts:
                    break
                self.metrics.record("event", message=f"{died}; restarting it ({restart} of {restarts} restarts)")
                self.servers[shard] = self._serve(shard)
            try:
                wait_until_serving(self.addresses[shard], timeout=120.0, process=self.servers[shard])
            except (RuntimeError, TimeoutError) as err:
                died = f"shard {shard} could not be restarted: {err}"
                break
        if not self.stopping:
            self.evaluator.retry_seconds = 0  # the shard is gone for good: its reads fail at once
            fail(died + (f" ({restarts} restarts used)" if restarts else ""))

    def shard_restarted(self, status: ps_pb2.StatusReply) -> None:
        resumed = Resumed(None if status.restored < 0 else status.restored, status.replayed).describe()
        self.metrics.record("event", message=f"shard {status.shard} was restarted; {resumed}")

    def start_worker(self, worker, ended, stopped) -> None:
        if not self.external:  # its process was started with the shards'
            self.threads.start(f"watch-worker-{worker}", self._watch, worker, self.workers[worker], ended)

    @staticmethod
    def _watch(worker: int, process: Forked, ended) -> None:
        code = process.wait()
        if code == 0:
            ended(worker, None)
        elif code < 0:
            ended(worker, WorkerDied(f"its process {exit_of(code)}"))
        else:
            ended(worker, RuntimeError(f"worker process {worker} exited with code {code} (its error is printed above)"))

    def spawn(self, name, coro) -> None:
        self.threads.spawn(name, coro)

    def wait(self) -> None:
        self.threads.join()

    def end(self) -> None:
        # Blocking calls, on no event loop: the evaluator's loop may still be
        # running in its thread (after a Ctrl-C), and gRPC's poller can wake a
        # loop of this thread after it has closed.
        metadata = token_metadata(token_from_env())
        for address in self.addresses:
            try:
                with channel(address, self.tls_ca) as to_shard:
                    ps_pb2_grpc.ParameterServerStub(to_shard).Close(ps_pb2.StatusRequest(), metadata=metadata,
                                                                    timeout=1.0)
            except grpc.RpcError:
                pass  # a shard that is gone serves nobody; the live ones are closed all the same
        # The workers stop at their next call to a closed shard; one stuck on a dead shard is stopped.
        timer = threading.Timer(STOP_SECONDS, self._stop_workers)
        timer.daemon = True
        timer.start()

    def _stop_workers(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.terminate()

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
        for process in self.workers:
            if process.poll() is None:
                process.kill()
        for server in self.servers:
            server.send_signal(signal.SIGTERM)
        for process in self.workers + self.servers:
            process.wait(timeout=30)
        self.following.set()
        if self.follower is not None:
            self.follower.join(timeout=30)
