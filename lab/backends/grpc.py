"""The ``grpc`` backend: every shard a server process, every worker a process.

``asyncps serve``, ``asyncps work`` and ``asyncps evaluate`` are the three
programs of a cluster; docker-compose runs exactly these. ``asyncps run
--backend grpc`` starts the servers and workers on 127.0.0.1 itself, evaluates
in its own process, and stops them at the end. Every process builds the same
``Experiment`` from the same config, so the initial parameters, the layout
and each worker's data shard agree without being shipped.

Ending a run: each worker tells every shard when it is done; a shard that
has heard from every worker closes. That ends the evaluator's wait, and it
writes the run directory. Early stopping closes the shards from the
evaluator, and the workers stop at their next call.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import torch
from tqdm import tqdm

from lab.config import load_config
from lab.evaluator import EVALUATOR, Evaluator
from lab.experiment import Experiment
from lab.backends.health import wait_until_serving
from lab.metrics import WORKER_PARTS, Metrics
from ps import DelayedClient, make_shards
from ps.grpc_client import GrpcClient
from ps.grpc_server import serve
from workers.runtime import WorkerRuntime

# glibc serves allocations of 32 MB or more from fresh mmap pages, and every
# first touch of a page costs microseconds: large messages would page-fault
# on every pull. Both thresholds are needed to keep freed memory for reuse.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 31)}


def token_from_env() -> str | None:
    return os.environ.get("ASYNCPS_TOKEN") or None


# -- the three programs --------------------------------------------------------------
def serve_main(config_path: str, shard: int, port: int, host: str = "127.0.0.1",
               tls: tuple[bytes, bytes] | None = None) -> int:
    """Serve one shard until SIGTERM or SIGINT, then stop gracefully."""
    experiment = Experiment.build(load_config(config_path))
    num_shards = experiment.layout.num_shards
    if not 0 <= shard < num_shards:
        raise ValueError(f"Invalid shard: {shard} (the config has {num_shards} shards: 0..{num_shards - 1})")
    shards = make_shards(experiment.layout, experiment.initial_flat, experiment.initial_tables,
                         experiment.server_rule())
    server, bound = serve(shards[shard], experiment.config.cluster.workers, port, host, token_from_env(), tls)
    print(f"asyncps shard {shard} of {num_shards} serving on {host}:{bound}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=5).wait()
    return 0


def work_main(config_path: str, worker: int, addresses: list[str], run_dir: str,
              tls_ca: bytes | None = None) -> int:
    """Run one worker's loop to the end, recording into ``<run_dir>/workers/``."""
    experiment = Experiment.build(load_config(config_path))
    workers = experiment.config.cluster.workers
    if not 0 <= worker < workers:
        raise ValueError(f"Invalid worker: {worker} (the config has {workers} workers: 0..{workers - 1})")
    torch.set_num_threads(1)
    client = GrpcClient(experiment.layout, addresses, worker, token=token_from_env(), tls_ca=tls_ca)
    delays = experiment.delays
    delayed = DelayedClient(client, delays) if delays.active else None
    part = Path(run_dir) / WORKER_PARTS / f"worker-{worker}.jsonl"
    with Metrics(part, start=0.0) as metrics:  # absolute wall times, merged by the evaluator
        runtime = WorkerRuntime(worker, workers, delayed or client, experiment.model,
                                experiment.data_shards[worker], experiment.steps, metrics.record, threading.Event(),
                                after_compute=delayed.compute if delayed and delays.is_active("compute") else None)

        async def main():
            await runtime.work(experiment.protocol)
            await client.worker_done()
            await client.aclose()

        asyncio.run(main())
    return 0


async def evaluate_cluster(experiment: Experiment, client: GrpcClient, metrics: Metrics) -> tuple[dict, dict]:
    """Evaluate while the workers train; return the final parameters once every shard has closed."""
    evaluator = Evaluator(experiment, client, metrics, client.close_run)
    await evaluator.run()
    await evaluator.evaluate()
    dense, tables, _ = await evaluator.read()
    await client.aclose()
    return dense, tables


def evaluate_main(config_path: str, addresses: list[str], run_dir: str | None = None,
                  tls_ca: bytes | None = None) -> int:
    """The evaluator of a cluster: waits for the shards, evaluates, writes the run directory."""
    from lab.runner import finish  # the runner imports this module for its backend

    config = load_config(config_path)
    experiment = Experiment.build(config)
    run_dir = Path(run_dir) if run_dir else config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(Path(config_path).read_text())
    for address in addresses:
        wait_until_serving(address, timeout=120.0)
    client = GrpcClient(experiment.layout, addresses, worker=EVALUATOR, token=token_from_env(), tls_ca=tls_ca)
    with Metrics(run_dir / "metrics.jsonl") as metrics:
        dense, tables = asyncio.run(evaluate_cluster(experiment, client, metrics))
    finish(config, run_dir, metrics.start, dense, tables)
    print(f"run directory: {run_dir}/", flush=True)
    return 0


# -- asyncps run --backend grpc ------------------------------------------------------
def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_grpc(experiment: Experiment, metrics: Metrics, progress: bool = True) -> tuple[dict, dict]:
    """Shards and workers as processes on 127.0.0.1; this process evaluates."""
    config = experiment.config
    run_dir = metrics.path.parent
    config_path = str(run_dir / "config.toml")
    env = {**os.environ, **MALLOC_ENV}
    program = [sys.executable, "-m", "lab.cli"]
    addresses = [f"127.0.0.1:{port}" for port in free_ports(config.cluster.shards)]
    servers = [subprocess.Popen([*program, "serve", config_path, "--shard", str(s), "--port", address.split(":")[1]],
                                env=env, stdout=subprocess.DEVNULL) for s, address in enumerate(addresses)]
    workers: list[subprocess.Popen] = []
    try:
        for server, address in zip(servers, addresses):
            wait_until_serving(address, timeout=120.0, process=server)
        workers = [subprocess.Popen([*program, "work", config_path, "--worker", str(w), "--shards",
                                     ",".join(addresses), "--run-dir", str(run_dir)], env=env)
                   for w in range(config.cluster.workers)]
        bar = tqdm(unit="update", desc=config.name, disable=not progress, mininterval=0.5)
        metrics.listeners.append(lambda kind, fields: kind == "eval" and bar.update(fields["updates"] - bar.n))
        client = GrpcClient(experiment.layout, addresses, worker=EVALUATOR)
        dense, tables = asyncio.run(evaluate_cluster(experiment, client, metrics))
        bar.close()
        failed = [w for w, p in enumerate(workers) if p.wait() != 0]
        if failed:
            raise RuntimeError(f"worker processes {failed} failed (their errors are printed above)")
        return dense, tables
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
        for server in servers:
            server.send_signal(signal.SIGTERM)
        for server in servers:
            server.wait(timeout=30)
