"""The three programs of a gRPC cluster: ``asyncps serve``, ``asyncps work``
and ``asyncps evaluate``. docker-compose runs exactly these, and ``asyncps
run --backend grpc`` starts the first two itself (``lab.backends.grpc``).
Every process builds the same ``Experiment`` from the same config, so the
initial parameters, the layout and each worker's data shard agree without
being shipped.

Ending a run: each worker tells every shard when it is done; a shard that
has heard from every worker closes. That ends the evaluator's wait, and it
writes the run directory. Early stopping closes the shards from the
evaluator, and the workers stop at their next call.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path

import torch

from lab.backends.grpc import GrpcBackend, token_from_env
from lab.backends.health import wait_until_serving
from lab.config import load_config
from lab.experiment import Experiment
from lab.metrics import WORKER_PARTS, Metrics
from lab.runner import Run, finish
from ps import DelayedClient, RealClock, make_shards
from ps.grpc_client import GrpcClient
from ps.grpc_server import serve
from workers.runtime import WorkerRuntime


def serve_main(config_path: str, shard: int, port: int, host: str = "127.0.0.1",
               tls: tuple[bytes, bytes] | None = None, checkpoints: str | None = None, run_id: str = "") -> int:
    """Serve one shard until SIGTERM or SIGINT, then stop gracefully. With
    ``checkpoints``, resume from that directory and keep it up (``[recovery]``)."""
    experiment = Experiment.build(load_config(config_path))
    num_shards = experiment.layout.num_shards
    if not 0 <= shard < num_shards:
        raise ValueError(f"Invalid shard: {shard} (the config has {num_shards} shards: 0..{num_shards - 1})")
    shards = make_shards(experiment.layout, experiment.initial_flat, experiment.initial_tables,
                         experiment.server_rule(), experiment.config.cluster.workers)
    plan = experiment.config.recovery.plan(Path(checkpoints)) if checkpoints else None
    recovery = plan.attach(shards[shard], run_id) if plan else None
    server, bound = serve(shards[shard], experiment.config.cluster.workers, port, host, token_from_env(), tls,
                          recovery)
    print(f"asyncps shard {shard} of {num_shards} serving on {host}:{bound}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=5).wait()
    if recovery is not None:
        recovery.close()
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
    delayed = DelayedClient(client, delays.samplers(worker), RealClock()) if delays.active else None
    part = Path(run_dir) / WORKER_PARTS / f"worker-{worker}.jsonl"
    with Metrics(part, start=0.0) as metrics:  # absolute wall times, merged by the evaluator
        runtime = WorkerRuntime(worker, workers, delayed or client, experiment.model, experiment.data_shards[worker],
                                experiment.steps, metrics.record, after_compute=delayed.compute if delayed else None)

        async def main():
            await runtime.work(experiment.protocol)
            await client.worker_done()
            await client.aclose()

        asyncio.run(main())
    return 0


def evaluate_main(config_path: str, addresses: list[str], run_dir: str | None = None,
                  tls_ca: bytes | None = None) -> int:
    """The evaluator of a cluster whose workers run elsewhere: waits for the
    shards, evaluates until they close, writes the run directory."""
    config = load_config(config_path)
    experiment = Experiment.build(config)
    run_dir = Path(run_dir) if run_dir else config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)  # the workers write their records here too: it is not emptied
    (run_dir / "config.toml").write_text(Path(config_path).read_text())
    for address in addresses:
        wait_until_serving(address, timeout=120.0, tls_ca=tls_ca)
    with Metrics(run_dir / "metrics.jsonl") as metrics:
        backend = GrpcBackend(experiment, metrics, addresses=addresses, tls_ca=tls_ca)
        dense, tables = Run(experiment, metrics, backend, progress=False).execute()
    finish(config, run_dir, metrics.start, dense, tables)
    print(f"run directory: {run_dir}/", flush=True)
    return 0
