"""The ``ray`` backend: every shard and every worker a Ray actor.

``asyncps run --backend ray`` starts a local Ray sized to this machine, or
joins a running cluster (``--ray-address HOST:PORT``, ``[ray] address``). A
process that has already initialized Ray runs there, and leaves it running:
only a Ray that this run started is shut down at its end. Shards and workers
are spread over the cluster's nodes (the SPREAD strategy), each asking for
``[ray] shard_cpus`` and ``worker_cpus``. This process is the driver: it
evaluates, as the other backends do, and writes the run directory from the
records every worker streams back.

Failures. A worker actor that dies is recorded as an ``event`` and the
others go on, as long as the protocol can: a synchronous round needs
``N - backup_workers`` workers, and when fewer remain the run stops with an
error that says so, rather than wait forever. A worker whose loop raises
stops the run, as on the local backend. A shard actor that dies is
restarted by Ray (``[ray] max_restarts``); it resumes from its last
checkpoint (every ``checkpoint_every`` updates, in ``<run>/checkpoints``),
and the calls it was serving are retried. The updates after that checkpoint
are lost; the event says which version it resumed from.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import ray
import torch
from ray.exceptions import RayActorError, RayTaskError
from tqdm import tqdm

from lab.evaluator import EVALUATOR, Evaluator
from lab.experiment import Experiment
from lab.metrics import WORKER_PARTS, Metrics
from lab.backends.ray_worker import WorkerActor
from ps.ray_client import RayClient, get
from ps.ray_server import ShardActor


@dataclass
class RayRun:
    """The actors of a run, in order; what a ``watch`` callback may act on."""

    shards: list
    workers: list


Watch = Callable[[RayRun, int, dict], None]  # (run, worker, record): told of every record a worker streams back


def run_ray(experiment: Experiment, metrics: Metrics, progress: bool = True,
            watch: Watch | None = None) -> tuple[dict, dict]:
    """Run the experiment on Ray; return the final ``(dense, tables)`` parameters.

    ``watch(run, worker, record)`` is called, on a driver thread, with each
    record as it arrives: a test kills an actor there, at a known step."""
    # One torch thread for the evaluator here: its OpenMP threads would spin on the actors' cores.
    torch.set_num_threads(1)
    started = connect(experiment.config.ray.address)
    actors: list = []
    try:
        check_resources(experiment)
        return Driver(experiment, metrics, progress, watch, actors).run()
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()


def connect(address: str) -> bool:
    """Use the Ray this process runs, else join ``address``, else start Ray
    here. True if this call started or joined it (and must shut it down)."""
    if ray.is_initialized():
        return False
    hint = ("start one with `ray start --head --port 6379` and pass its address, or leave out --ray-address "
            "(and ray.address) to start a local Ray for this run")
    if address and address != "auto" and not address.startswith("ray://"):
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as err:
            raise ValueError(f"Invalid ray.address = {address!r}: no Ray head answers there "
                             f"({err.strerror or err}); {hint}") from None
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING)
    except ConnectionError as err:
        raise ValueError(f"Invalid ray.address = {address!r}: could not join a Ray cluster ({err}). A head that "
                         "`ray start` started uses token authentication: set RAY_AUTH_MODE=token to join it (the "
                         f"token is read from ~/.ray/auth_token or RAY_AUTH_TOKEN); else {hint}") from None
    return True


def check_resources(experiment: Experiment) -> None:
    """Refuse a run whose actors the cluster cannot place: they would wait forever."""
    ray_config, cluster = experiment.config.ray, experiment.config.cluster
    wanted = cluster.workers * ray_config.worker_cpus + cluster.shards * ray_config.shard_cpus
    available = ray.cluster_resources().get("CPU", 0)
    if wanted > available:
        raise ValueError(f"Invalid config [ray]: the run asks the Ray cluster for {wanted:g} CPUs "
                         f"({cluster.workers} workers x ray.worker_cpus = {ray_config.worker_cpus:g}, "
                         f"{cluster.shards} shards x ray.shard_cpus = {ray_config.shard_cpus:g}) and it has "
                         f"{available:g}: lower them (0 shares the cores) or add nodes")


def first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


class Driver:
    """One run: starts the actors, follows the workers, evaluates, ends the run."""

    def __init__(self, experiment: Experiment, metrics: Metrics, progress: bool, watch: Watch | None,
                 actors: list):
        self.experiment = experiment
        self.metrics = metrics
        self.watch = watch
        self.actors = actors  # every actor started, killed by run_ray at the end whatever happens
        self.run_dir = metrics.path.parent.resolve()
        config = experiment.config
        self.bar = tqdm(total=experiment.steps * config.cluster.workers, unit="step", desc=config.name,
                        disable=not progress, mininterval=0.5)
        self.lock = threading.Lock()
        self.alive = config.cluster.workers
        self.failures: list[BaseException] = []
        self.ended = False

    # -- starting --------------------------------------------------------------------
    def start_shards(self) -> list:
        experiment, ray_config = self.experiment, self.experiment.config.ray
        layout, workers = experiment.layout, experiment.config.cluster.workers
        checkpoints = self.run_dir / "checkpoints"
        shutil.rmtree(checkpoints, ignore_errors=True)
        run_id = uuid.uuid4().hex  # a restarted shard takes only this run's checkpoint
        parts = {name: layout.split_table(name, full) for name, full in experiment.initial_tables.items()}
        remote = ray.remote(ShardActor).options(
            num_cpus=ray_config.shard_cpus, scheduling_strategy="SPREAD",
            max_restarts=ray_config.max_restarts, max_task_retries=-1 if ray_config.max_restarts else 0,
            # Synchronous workers all wait in a pull at once: a thread each, and more.
            max_concurrency=max(16, 4 * workers))
        shards = []
        for s, values in enumerate(layout.split(experiment.initial_flat)):
            checkpoint = str(checkpoints / f"shard-{s}.pt") if ray_config.checkpoint_every else None
            shards.append(remote.remote(s, values.numpy(), {name: parts[name][s].numpy() for name in parts},
                                        experiment.server_rule(), checkpoint, ray_config.checkpoint_every,
                                        run_id))
            self.actors.append(shards[-1])
        return shards

    def start_workers(self, shards: list) -> list:
        experiment = self.experiment
        workers = experiment.config.cluster.workers
        remote = ray.remote(WorkerActor).options(num_cpus=experiment.config.ray.worker_cpus,
                                                 scheduling_strategy="SPREAD")
        model = ray.put(experiment.model)  # one copy in the object store for every worker
        handles = []
        for w in range(workers):
            handles.append(remote.remote(w, workers, model, experiment.data_shards[w], experiment.steps,
                                         experiment.protocol, experiment.layout, experiment.delays, shards))
            self.actors.append(handles[-1])
        return handles

    # -- running ---------------------------------------------------------------------
    def run(self) -> tuple[dict, dict]:
        self.shards = shards = self.start_shards()
        evaluator = Evaluator(self.experiment, RayClient(self.experiment.layout, shards, EVALUATOR,
                                                         on_restart=self.shard_restarted),
                              self.metrics, self.end_run)
        self.run_actors = RayRun(shards, self.start_workers(shards))
        # Every actor answers once its constructor has run (all start at once: each imports torch);
        # an error there is raised here.
        get([shard.status.remote() for shard in shards] +
            [worker.ready.remote() for worker in self.run_actors.workers])
        # Times count from here, as on the local backend: not Ray's start, nor the actors'.
        self.metrics.use_clock(time.time, start=time.time())
        (self.run_dir / WORKER_PARTS).mkdir(exist_ok=True)
        followers = [threading.Thread(target=self.follow, args=(w, worker), name=f"follow-worker-{w}")
                     for w, worker in enumerate(self.run_actors.workers)]
        eval_thread = threading.Thread(target=self.evaluate, args=(evaluator,), name="evaluator")
        for thread in followers + [eval_thread]:
            thread.start()
        for thread in followers:
            thread.join()
        self.end_run()
        eval_thread.join()
        self.bar.close()
        asyncio.run(evaluator.evaluate())  # the final parameters
        dense, tables, _ = asyncio.run(evaluator.read())
        if self.failures:
            raise self.failures[0]
        return dense, tables

    def evaluate(self, evaluator: Evaluator) -> None:
        try:
            asyncio.run(evaluator.run())
        except BaseException as err:  # re-raised by run() once the workers have stopped
            self.fail(f"the evaluator failed: {err!r}", err)

    def follow(self, w: int, worker) -> None:
        """Write worker ``w``'s records as they arrive, until its loop ends or it dies."""
        with open(self.run_dir / WORKER_PARTS / f"worker-{w}.jsonl", "w") as part:
            try:
                for ref in worker.run.options(num_returns="streaming").remote():
                    records = ray.get(ref)
                    part.write("".join(json.dumps(record) + "\n" for record in records))
                    for record in records:
                        if record["kind"] == "train":
                            self.bar.update()
                        if self.watch is not None:
                            self.watch(self.run_actors, w, record)
            except RayTaskError as err:
                cause = err.cause or err
                self.fail(f"worker {w} failed: {cause!r}", cause)
            except RayActorError as err:
                self.worker_died(w, err)

    def worker_died(self, w: int, err: RayActorError) -> None:
        with self.lock:
            self.alive -= 1
            alive = self.alive
        workers = self.experiment.config.cluster.workers
        self.metrics.record("event", message=f"worker {w} died: {first_line(err)} ({alive} of {workers} workers "
                                             "remain)")
        for shard in self.shards:
            shard.release.remote(w)  # its snapshots: the shards may update in place again
        needed = self.experiment.protocol.min_workers(self.experiment.config.cluster.workers)
        if alive < needed:
            protocol = self.experiment.protocol.name
            self.fail(f"the run stopped: protocol {protocol!r} needs {needed} live workers and {alive} remain"
                      + (" (set protocol.options.backup_workers to go on without failed workers)"
                         if protocol == "sync" else ""))

    def fail(self, message: str, err: BaseException | None = None) -> None:
        """Record why the run stops, end it, and have ``run`` raise."""
        self.metrics.record("event", message=message)
        with self.lock:
            self.failures.append(err if err is not None else RuntimeError(message))
        self.end_run()

    def end_run(self) -> None:
        """Close every shard: waiting pulls, and later pushes, raise ShardClosed."""
        with self.lock:
            if self.ended:
                return
            self.ended = True
        try:
            get([shard.close.remote() for shard in self.shards])
        except RayActorError:
            pass  # a shard that is gone serves nobody

    def shard_restarted(self, status: dict) -> None:
        restored = status["restored"]
        resumed = (f"it resumed from its checkpoint at version {restored}" if restored is not None else
                   "it had no checkpoint and started over from the initial parameters at version 0")
        self.metrics.record("event", message=f"shard {status['shard']} was restarted by Ray; {resumed}")
