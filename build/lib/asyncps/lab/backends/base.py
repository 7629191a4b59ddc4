"""What a backend supplies to a run: placement and a clock, nothing else.

``lab.runner`` drives every run the same way: it asks the backend to place
the shards, start each worker and run the evaluator beside them, and it
handles a worker's end (finished, failed, or dead), early stopping and the
end of the run itself, in that one place. A backend reports each worker's
end through ``ended(worker, error)``: ``None`` when its loop finished,
``WorkerDied`` when its process or actor is gone, else the loop's error.
"""

from __future__ import annotations

import abc
import asyncio
import threading
from typing import Callable, ClassVar, Coroutine

from asyncps.lab.experiment import Experiment
from asyncps.lab.metrics import Metrics
from asyncps.ps import Client

Ended = Callable[[int, BaseException | None], None]  # (worker, None | its error | WorkerDied)


class WorkerDied(RuntimeError):
    """A worker's process or actor is gone (killed, or its node lost): the
    others go on as long as the protocol can."""


class Backend(abc.ABC):
    """Where a run's shards, workers and evaluator live."""

    name: ClassVar[str]

    def __init__(self, experiment: Experiment, metrics: Metrics):
        self.experiment = experiment
        self.metrics = metrics

    def starting(self) -> str | None:
        """What ``start`` does, when it takes long enough to say so while the user waits."""
        return None

    @abc.abstractmethod
    def start(self, fail: Callable[[str], None]) -> Client:
        """Place the shards; the evaluator's client. ``fail(message)`` ends the
        run with an error (a shard that died and will not come back)."""

    @abc.abstractmethod
    def start_worker(self, worker: int, ended: Ended, stopped: Callable[[], bool]) -> None:
        """Start ``worker``'s loop; report its end with ``ended``. A worker in
        this process also stops between batches once ``stopped()``."""

    @abc.abstractmethod
    def spawn(self, name: str, coro: Coroutine) -> None:
        """Run ``coro`` beside the workers (the evaluator's loop)."""

    @abc.abstractmethod
    def wait(self) -> None:
        """Return once every worker has ended and every spawned coroutine has returned."""

    @abc.abstractmethod
    def end(self) -> None:
        """Close the shards: waiting pulls, and later calls, raise ShardClosed."""

    def stop(self) -> None:
        """Let go of everything ``start`` made; called however the run ended."""


class Threads:
    """Coroutines each on a thread of its own, with its own event loop: how
    the real-time backends run the evaluator, and local runs its workers."""

    def __init__(self):
        self.threads: list[threading.Thread] = []

    def spawn(self, name: str, coro: Coroutine) -> None:
        self.start(name, asyncio.run, coro)

    def start(self, name: str, target: Callable, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join()


async def reported(worker: int, loop: Coroutine, ended: Ended) -> None:
    """Run a worker's ``loop`` in this process and report how it ended."""
    try:
        await loop
    except BaseException as err:  # the run's to handle: lab.runner decides what a failure means
        ended(worker, err)
        return
    ended(worker, None)
