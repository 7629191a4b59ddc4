"""The work of a gRPC cluster's processes, given their experiment already built.

``asyncps serve`` and ``asyncps work`` build the experiment from the config
file and call these. ``asyncps run --backend grpc`` builds it once and starts
its shard and worker processes as ``Forked``: forks of a fork server that
has imported this module (torch, gRPC, the experiment's code) once, each
handed the pickled experiment, and everything else it needs as arguments
(the fork server's environment and working directory are those of its
start; each process takes this process's working directory and ``sys.path``
as multiprocessing hands them over, so that a plugin's package, imported
here from the working directory, imports there too). A process starts in milliseconds, not the seconds of a fresh
interpreter importing torch. The fork server is a fresh
interpreter of its own, started once per process (``start_fork_server``):
forking this process instead would be unsafe once it has used gRPC (a test
session, ``asyncps compare``), since gRPC's threads do not survive a fork.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import torch

from asyncps.lab.experiment import Experiment
from asyncps.lab.metrics import WORKER_PARTS, Metrics
from asyncps.ps import make_shards
from asyncps.ps.grpc_client import GrpcClient
from asyncps.ps.grpc_server import serve
from asyncps.workers.runtime import WorkerRuntime


def token_from_env() -> str | None:
    return os.environ.get("ASYNCPS_TOKEN") or None


def serve_shard(experiment: Experiment, shard: int, port: int, host: str = "127.0.0.1", token: str | None = None,
                tls: tuple[bytes, bytes] | None = None, checkpoints: str | None = None, run_id: str = "",
                announce: bool = True) -> int:
    """Serve shard ``shard`` until SIGTERM or SIGINT, then stop gracefully. With
    ``checkpoints``, resume from that directory and keep it up (``[recovery]``)."""
    torch.set_num_threads(1)
    num_shards = experiment.layout.num_shards
    if not 0 <= shard < num_shards:
        raise ValueError(f"Invalid shard: {shard} (the config has {num_shards} shards: 0..{num_shards - 1})")
    shards = make_shards(experiment.layout, experiment.initial_flat, experiment.initial_tables,
                         experiment.server_rule(), experiment.config.cluster.workers)
    plan = experiment.config.recovery.plan(Path(checkpoints)) if checkpoints else None
    recovery = plan.attach(shards[shard], run_id) if plan else None
    server, bound = serve(shards[shard], experiment.config.cluster.workers, port, host, token, tls, recovery)
    if announce:
        print(f"asyncps shard {shard} of {num_shards} serving on {host}:{bound}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=5).wait()
    if recovery is not None:
        recovery.close()
    return 0


def work(experiment: Experiment, worker: int, addresses: list[str], run_dir: str, token: str | None = None,
         tls_ca: bytes | None = None) -> int:
    """Run one worker's loop to the end, recording into ``<run_dir>/workers/``."""
    workers = experiment.config.cluster.workers
    if not 0 <= worker < workers:
        raise ValueError(f"Invalid worker: {worker} (the config has {workers} workers: 0..{workers - 1})")
    torch.set_num_threads(1)
    client = GrpcClient(experiment.layout, addresses, worker, token=token, tls_ca=tls_ca)
    part = Path(run_dir) / WORKER_PARTS / f"worker-{worker}.jsonl"
    with Metrics(part, start=0.0) as metrics:  # absolute wall times, merged by the evaluator
        runtime = WorkerRuntime(worker, workers, client, experiment.model, experiment.data_shards[worker],
                                experiment.steps, metrics.record, delays=experiment.delays,
                                transform=experiment.transform)

        async def main():
            await runtime.work(experiment.protocol)
            await client.worker_done()
            await client.aclose()

        asyncio.run(main())
    return 0


# glibc serves allocations of 32 MB or more from fresh mmap pages, and every
# first touch of a page costs microseconds: large messages would page-fault
# on every pull. Both thresholds are needed to keep freed memory for reuse.
# The environment sets them for a program started afresh (``asyncps serve``
# in a benchmark); ``reuse_freed_memory`` for a forked one.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 31)}


def reuse_freed_memory() -> None:
    """``MALLOC_ENV``'s settings, made by ``mallopt`` in a running process."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc: its defaults stay
    libc.mallopt(-1, 1 << 31)
    libc.mallopt(-3, 1 << 30)


FORK_SERVER = multiprocessing.get_context("forkserver")


def start_fork_server() -> None:
    """Start the fork server now, if it is not running, so that it imports
    while this process goes on (building the experiment)."""
    # The main module too: each process would import it again otherwise (an
    # `asyncps` script imports the whole command line).
    FORK_SERVER.set_forkserver_preload(["__main__", __name__])
    multiprocessing.forkserver.ensure_running()


def _child(target: Callable[..., int], args: tuple) -> None:
    # A process group of its own: a Ctrl-C at the terminal reaches only the
    # run's own process, which stops the shards and workers in order (a shard
    # that stopped by itself would be restarted as one that died).
    os.setpgrp()
    reuse_freed_memory()
    sys.exit(target(*args))


class Forked:
    """``target(*args)`` in a process of the fork server, with the part of
    ``subprocess.Popen`` the backend uses: ``pid``, ``poll``, ``wait``,
    ``send_signal``, ``terminate``, ``kill``. The process exits with the code
    ``target`` returns, or 1 after printing its exception; killed by a
    signal, its code is minus the signal's number."""

    def __init__(self, target: Callable[..., int], *args):
        start_fork_server()
        self.process = FORK_SERVER.Process(target=_child, args=(target, args), name=getattr(target, "__name__", ""))
        self.process.start()
        self.pid = self.process.pid
        self._lock = threading.Lock()  # one reader of the exit status at a time, as in subprocess.Popen

    def poll(self) -> int | None:
        if self._lock.acquire(blocking=False):
            try:
                return self.process.exitcode
            finally:
                self._lock.release()
        return None

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code once the process has exited; None if ``timeout`` ran out first."""
        if timeout is None:
            with self._lock:
                self.process.join()
                return self.process.exitcode
        give_up, delay = time.monotonic() + timeout, 0.001
        while (code := self.poll()) is None and time.monotonic() < give_up:
            time.sleep(delay)
            delay = min(2 * delay, 0.05)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
