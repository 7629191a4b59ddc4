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
restarted by Ray (``[recovery] max_restarts``); it resumes from its last
checkpoint (every ``checkpoint_every`` updates, in ``<run>/checkpoints``),
and the calls it was serving are retried. The updates after that checkpoint
are lost, unless ``durability`` keeps a journal to replay; the event says
which version it resumed from.

Plugins (``model.name = "mypkg.nets:Net"``, ``optim.plugins``). The actors
unpickle the model, the protocol and the server rule by reference, so they
import the user's package: Ray puts the driver's working directory on every
worker's ``sys.path`` (``ray.init`` in this process, or joining a cluster),
as the plugin resolution puts it on this process's. On a cluster of several
machines that directory must exist at the same path on each, or the package
be installed there.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import ray
import torch
from ray.exceptions import RayActorError, RayTaskError

from asyncps.lab.backends.base import Backend, Threads, WorkerDied
from asyncps.lab.evaluator import EVALUATOR
from asyncps.lab.experiment import Experiment
from asyncps.lab.metrics import WORKER_PARTS, Metrics
from asyncps.lab.backends.ray_worker import WorkerActor
from asyncps.ps.ray_client import RayClient, get
from asyncps.ps.ray_server import ShardActor
from asyncps.ps.recovery import Resumed


@dataclass
class RayRun:
    """The actors of a run, in order; what a ``watch`` callback may act on."""

    shards: list
    workers: list


Watch = Callable[[RayRun, int, dict], None]  # (run, worker, record): told of every record a worker streams back


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


class RayBackend(Backend):
    """``watch(run, worker, record)`` is called, on a driver thread, with each
    record as it arrives: a test kills an actor there, at a known step."""

    name = "ray"

    def __init__(self, experiment: Experiment, metrics: Metrics, watch: Watch | None = None):
        super().__init__(experiment, metrics)
        self.watch = watch
        self.actors = RayRun([], [])
        self.threads = Threads()
        self.run_dir = metrics.path.parent.resolve()
        self.started = False

    def starting(self) -> str:
        cluster, where = self.experiment.config.cluster, self.experiment.config.ray.address
        return (f"{'starting a local Ray' if not where else f'joining Ray at {where}'}: "
                f"{cluster.shards} shard and {cluster.workers} worker actors")

    def start(self, fail) -> RayClient:
        # One torch thread for the evaluator here: its OpenMP threads would spin on the actors' cores.
        torch.set_num_threads(1)
        self.started = connect(self.experiment.config.ray.address)
        check_resources(self.experiment)
        experiment, ray_config, recovery = self.experiment, self.experiment.config.ray, self.experiment.config.recovery
        layout, workers = experiment.layout, experiment.config.cluster.workers
        plan = recovery.plan(self.run_dir / "checkpoints")
        run_id = uuid.uuid4().hex  # a restarted shard takes only this run's checkpoint and journal
        parts = {name: layout.split_table(name, full) for name, full in experiment.initial_tables.items()}
        remote = ray.remote(ShardActor).options(
            num_cpus=ray_config.shard_cpus, scheduling_strategy="SPREAD",
            max_restarts=recovery.max_restarts, max_task_retries=-1 if recovery.max_restarts else 0,
            # Synchronous workers all wait in a pull at once: a thread each, and more.
            max_concurrency=max(16, 4 * workers))
        for s, values in enumerate(layout.split(experiment.initial_flat)):
            self.actors.shards.append(remote.remote(s, values.numpy(), {name: parts[name][s].numpy() for name in parts},
                                                    experiment.server_rule(), plan, run_id, workers))
        self.actors.workers = self._worker_actors()
        # Every actor answers once its constructor has run (all start at once: each imports torch);
        # an error there is raised here.
        get([shard.status.remote() for shard in self.actors.shards] +
            [worker.ready.remote() for worker in self.actors.workers])
        # Times count from here, as on the local backend: not Ray's start, nor the actors'.
        self.metrics.use_clock(time.time, start=time.time())
        (self.run_dir / WORKER_PARTS).mkdir(exist_ok=True)
        return RayClient(layout, self.actors.shards, EVALUATOR, on_restart=self.shard_restarted)

    def _worker_actors(self) -> list:
        experiment = self.experiment
        workers = experiment.config.cluster.workers
        remote = ray.remote(WorkerActor).options(num_cpus=experiment.config.ray.worker_cpus,
                                                 scheduling_strategy="SPREAD")
        model = ray.put(experiment.model)  # one copy in the object store for every worker
        return [remote.remote(w, workers, model, experiment.data_shards[w], experiment.steps, experiment.protocol,
                              experiment.layout, experiment.delays, self.actors.shards, experiment.transform)
                for w in range(workers)]

    def start_worker(self, worker, ended, stopped) -> None:
        self.threads.start(f"follow-worker-{worker}", self.follow, worker, ended)

    def follow(self, w: int, ended) -> None:
        """Write worker ``w``'s records as they arrive, until its loop ends or it dies."""
        worker = self.actors.workers[w]
        with open(self.run_dir / WORKER_PARTS / f"worker-{w}.jsonl", "w") as part:
            try:
                for ref in worker.run.options(num_returns="streaming").remote():
                    records = ray.get(ref)
                    part.write("".join(json.dumps(record) + "\n" for record in records))
                    for record in records:
                        self.metrics.tell(record["kind"], record)
                        if self.watch is not None:
                            self.watch(self.actors, w, record)
            except RayTaskError as err:
                ended(w, err.cause or err)
                return
            except RayActorError as err:
                for shard in self.actors.shards:
                    shard.release.remote(w)  # its loans: the shards may update in place again
                ended(w, WorkerDied(first_line(err)))
                return
        ended(w, None)

    def spawn(self, name, coro) -> None:
        self.threads.spawn(name, coro)

    def wait(self) -> None:
        self.threads.join()

    def end(self) -> None:
        try:
            get([shard.close.remote() for shard in self.actors.shards])
        except RayActorError:
            pass  # a shard that is gone serves nobody

    def stop(self) -> None:
        for actor in self.actors.shards + self.actors.workers:
            ray.kill(actor)
        if self.started:
            ray.shutdown()

    def shard_restarted(self, status: dict) -> None:
        resumed = Resumed(*status["resumed"]).describe()
        self.metrics.record("event", message=f"shard {status['shard']} was restarted by Ray; {resumed}")
