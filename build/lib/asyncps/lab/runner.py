"""``asyncps run``: a config in, a run directory out, one way on every backend.

``runs/<name>/`` receives ``config.toml`` (fully resolved), ``metrics.jsonl``,
``summary.json``, the plots, and ``model.pt``: the final parameters as
``{"dense": {name: tensor}, "tables": {name: tensor}}`` (``torch.load`` it).

A backend (``lab.backends``) decides only where shards, workers and the
evaluator run, and on which clock. ``Run`` does the rest, in this order on
every backend: the workers train while the evaluator scores the parameters
every ``eval_every`` updates. A worker that fails ends the run. A worker
that dies is recorded, and the others go on while the protocol can (a
synchronous round needs ``N - backup_workers``). Early stopping ends the
run. Once every worker has ended, the run ends: the shards close, the
evaluator's last wait returns, the final parameters are scored and read,
and only then is a failure raised.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import threading
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from asyncps.lab.backends.base import Backend, WorkerDied
from asyncps.lab.backends.grpc import GrpcBackend
from asyncps.lab.backends.grpc_processes import start_fork_server
from asyncps.lab.backends.local import LocalBackend
from asyncps.lab.backends.sim import SimBackend
from asyncps.lab.config import Config, to_toml
from asyncps.lab.evaluator import Evaluator
from asyncps.lab.experiment import Experiment
from asyncps.lab.metrics import WORKER_PARTS, Metrics, finalize_metrics, summarize, write_whole
from asyncps.lab.tensorboard import TensorBoard, summary_writer


def ray_backend(experiment: Experiment, metrics: Metrics) -> Backend:
    """The ``ray`` backend, imported when a run asks for it: importing Ray takes half a second."""
    try:
        from asyncps.lab.backends.ray import RayBackend
    except ModuleNotFoundError as err:
        if err.name != "ray":
            raise
        raise ValueError("Invalid backend 'ray' here: Ray is not installed (pip install 'ray>=2.9'; the docker "
                         "image leaves it out, as its programs run the grpc backend)") from None

    return RayBackend(experiment, metrics)


BACKENDS: dict[str, Callable[[Experiment, Metrics], Backend]] = {
    "local": LocalBackend, "sim": SimBackend, "grpc": GrpcBackend, "ray": ray_backend}


def run(config: Config, progress: bool = True, tensorboard: bool = False) -> Path:
    """Run the experiment ``config`` describes; return its run directory. ``tensorboard``:
    write TensorBoard scalars into ``<run>/tensorboard/`` as it goes (``lab.tensorboard``)."""
    if tensorboard:
        summary_writer()  # missing, it is an error before anything of an earlier run is replaced
    if config.backend == "grpc":
        start_fork_server()  # it imports while the experiment is built here
    experiment = Experiment.build(config)
    run_dir = fresh_run_dir(config.run_dir)
    (run_dir / "config.toml").write_text(to_toml(config))
    failure = None
    board = TensorBoard(run_dir / "tensorboard") if tensorboard else None
    with Metrics(run_dir / "metrics.jsonl") as metrics:
        if board is not None:
            metrics.listeners.append(board)
        attempt = Run(experiment, metrics, BACKENDS[config.backend](experiment, metrics), progress)
        try:
            attempt.execute()
        except BaseException as err:  # the run directory says what happened, then the error is raised
            failure = err
        finally:
            if board is not None:
                board.close()
    finish(config, run_dir, metrics.start, *(attempt.final or (None, None)), failure=failure)
    if failure is not None:
        raise failure
    return run_dir


INTERRUPTED = "interrupted (Ctrl-C)"

RUN_FILES = ("config.toml", "metrics.jsonl", "summary.json", "model.pt", "trace.jsonl", "*.png", "*.partial",
             WORKER_PARTS, "checkpoints", "report.html", "tensorboard")  # what a run (or `asyncps report` of it) writes there


def fresh_run_dir(run_dir: Path) -> Path:
    """``run_dir``, emptied of an earlier run's files under the same name: a
    rerun replaces that run whole, and nothing of it mixes into this one
    (its worker records, its model). Files a run does not write are left."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for pattern in RUN_FILES:
        for path in run_dir.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    return run_dir


def finish(config: Config, run_dir: Path, start: float, dense: dict | None, tables: dict | None,
           failure: BaseException | None = None) -> None:
    """The run directory's results: merged metrics, model.pt (when the final
    parameters could be read), summary.json (saying why, when the run
    failed), plots. Each file is written whole or not at all."""
    finalize_metrics(run_dir, start)
    if dense is not None:
        write_whole(run_dir / "model.pt", lambda path: torch.save({"dense": dense, "tables": tables}, path))
    else:
        (run_dir / "model.pt").unlink(missing_ok=True)  # an earlier run's under this name is not this one's
    summary = summarize(run_dir, config.train.target_accuracy)
    summary["failed"] = None if failure is None else INTERRUPTED if isinstance(failure, KeyboardInterrupt) \
        else f"{type(failure).__name__}: {failure}"
    summary["started_at"] = start  # the clock reading of the run's time 0: Unix time, or 0 in virtual time
    summary["clock"] = "virtual" if config.backend == "sim" else "wall"  # what run_time and every time count
    write_whole(run_dir / "summary.json", lambda path: path.write_text(json.dumps(summary, indent=2) + "\n"))
    from asyncps.lab.reports.plots import plot_run  # matplotlib: not imported by the processes that only train

    plot_run(run_dir)


class Run:
    """One run of an experiment on a backend, from the shards' start to the final parameters."""

    def __init__(self, experiment: Experiment, metrics: Metrics, backend: Backend, progress: bool = True):
        self.experiment = experiment
        self.metrics = metrics
        self.backend = backend
        self.workers = experiment.config.cluster.workers
        self.running = self.workers  # workers whose loop has not ended
        self.alive = self.workers  # workers not dead
        self.failures: list[BaseException] = []
        self.ended = False
        self.lock = threading.Lock()
        self.progress = progress
        self.final: tuple[dict, dict] | None = None  # the final (dense, tables), once read

    def execute(self) -> tuple[dict, dict]:
        """Run to the end; the final ``(dense, tables)`` parameters, or the first failure raised."""
        bar = self._progress_bar()
        try:
            starting = None if bar.disable else self.backend.starting()
            if starting:  # a cluster takes seconds to start: say so, rather than wait in silence
                name = bar.desc
                bar.set_description_str(f"{name}: {starting}")
            client = self.backend.start(self.fail)
            if starting:
                bar.set_description_str(name)
            evaluator = Evaluator(self.experiment, client, self.metrics, self.end)
            try:
                for w in range(self.workers):
                    self.backend.start_worker(w, self.worker_ended, self.stopped)
                self.backend.spawn("evaluator", self._guarded("the evaluator", evaluator.run()))
                self.backend.wait()
            except KeyboardInterrupt:  # Ctrl-C: the shards close, so the workers and the evaluator stop
                self.metrics.record("event", message=f"the run was {INTERRUPTED}")
                self.end()
                raise
            self.end()
            self._read_final(evaluator)
        finally:
            try:
                self.backend.stop()  # the last of the records reach the bar as the backend stops
            finally:
                bar.close()
        if self.failures:
            raise self.failures[0]
        return self.final

    def _read_final(self, evaluator: Evaluator) -> None:
        """Score and read the final parameters; after a failure, as far as they can be read."""
        async def score_and_read():
            try:
                await evaluator.evaluate()
                return await evaluator.read()
            finally:
                await evaluator.client.aclose()

        try:
            dense, tables, read = asyncio.run(score_and_read())
        except Exception as err:
            if not self.failures:
                raise
            self.metrics.record("event", message=f"the final parameters could not be read: {err!r}")
            return
        # Each shard's version counts the updates it holds: the pushes it acknowledged as applied,
        # less those a restore from a checkpoint lost (lab.metrics.summarize compares the two).
        self.metrics.record("final", shard_versions=list(read.of_shard))
        self.final = dense, tables

    def stopped(self) -> bool:
        return self.ended

    def worker_ended(self, w: int, error: BaseException | None) -> None:
        """A worker's loop is over: finished (``None``), failed, or dead (``WorkerDied``)."""
        if isinstance(error, WorkerDied):
            self._died(w, error)
        elif error is not None:
            self.fail(f"worker {w} failed: {error!r}", error)
        with self.lock:
            self.running -= 1
            last = self.running == 0
        if last:
            self.end()

    def _died(self, w: int, error: WorkerDied) -> None:
        with self.lock:
            self.alive -= 1
            alive = self.alive
        self.metrics.record("event", message=f"worker {w} died: {error} ({alive} of {self.workers} workers remain)")
        if self.ended:  # stopped with the run
            return
        protocol = self.experiment.protocol
        needed = protocol.min_workers(self.workers)
        if alive < needed:
            self.fail(f"the run stopped: worker {w} died, and protocol {protocol.name!r} needs {needed} live workers "
                      f"({alive} remain)"
                      + (" (set protocol.options.backup_workers to go on without failed workers)"
                         if protocol.name == "sync" else ""))

    def fail(self, message: str, err: BaseException | None = None) -> None:
        """Record why the run stops, end it, and have ``execute`` raise."""
        self.metrics.record("event", message=message)
        with self.lock:
            self.failures.append(err if err is not None else RuntimeError(message))
        self.end()

    def end(self) -> None:
        """End the run once: the shards close, and every waiting pull returns."""
        with self.lock:
            if self.ended:
                return
            self.ended = True
        self.backend.end()

    async def _guarded(self, name: str, coro) -> None:
        try:
            await coro
        except BaseException as err:  # raised by execute once the workers have stopped
            self.fail(f"{name} failed: {err!r}", err)

    def _progress_bar(self) -> tqdm:
        """The steps done of all the workers' steps, the last test accuracy, and
        each event (a worker died, early stopping ended the run) as a line."""
        name = self.experiment.config.name
        bar = tqdm(total=self.experiment.steps * self.workers, unit="step", disable=not self.progress,
                   mininterval=0.5, desc=name + (" (virtual time)" if self.backend.name == "sim" else ""))

        def move(kind: str, fields: dict) -> None:
            if kind == "train":
                bar.update()
            elif kind == "eval" and "test_accuracy" in fields:
                bar.set_postfix(test_acc=f"{fields['test_accuracy']:.3f}", refresh=False)
            elif kind == "event":
                bar.write(f"{name}: {fields['message']}", file=sys.stderr)

        if self.progress:
            self.metrics.listeners.append(move)
        return bar
