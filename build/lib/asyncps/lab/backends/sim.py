"""The ``sim`` backend: the same protocol coroutines, in virtual time.

A small discrete-event scheduler drives every worker's coroutine, and the
evaluator's, on one thread. Each worker's client is the plain in-process one
under ``ps.delays.DelayedClient`` with this scheduler as its clock: a call
awaits the virtual time its message takes (drawn from the run's delay
models), a gradient's time is owed to the worker's next call, and a pull
waiting for a version waits in virtual time. The gradient math is real. Events at the same virtual time run in the order they
were scheduled, and a zero-length wait does not yield. The same config and
seed therefore give a byte-identical ``metrics.jsonl``. That is how one
laptop studies 64 workers with heavy-tailed stragglers.

The delays drawn are written to ``trace.jsonl`` in the run directory. A
``trace`` delay model replays them. When the config gives no compute delay,
a gradient takes one virtual second. With nothing taking time, each worker
would run to its end before the next began.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Coroutine

from asyncps.lab.backends.base import reported
from asyncps.lab.backends.local import LocalBackend
from asyncps.ps import DelayedClient, InProcessClient, TraceRecorder
from asyncps.ps.delays import NO_WAIT
from asyncps.workers.runtime import WorkerRuntime


class _Command:
    """What a coroutine hands the scheduler when it yields."""

    def __init__(self, kind: str, value):
        self.kind, self.value = kind, value

    def __await__(self):
        yield self


@dataclass(order=True)
class _Task:
    seq: int
    name: str = field(compare=False)
    coro: Coroutine = field(compare=False, repr=False)


class VirtualTime:
    """A deterministic scheduler of coroutines over a virtual clock."""

    def __init__(self):
        self.now = 0.0
        self._ready: list[tuple[float, int, _Task]] = []
        self._waiting: list[tuple[Callable[[], bool], _Task]] = []
        self._seq = itertools.count()

    def sleep(self, seconds: float) -> Awaitable[None]:
        # A zero-length wait keeps the turn: no other coroutine runs in between.
        # (A plain function returning the awaitable: a coroutine a call would cost more than the wait.)
        return _Command("sleep", seconds) if seconds > 0 else NO_WAIT

    def wait_until(self, ready: Callable[[], bool]) -> Awaitable[None]:
        """Wait until ``ready()``, asked again after every step of any coroutine."""
        return NO_WAIT if ready() else _Command("wait", ready)

    def spawn(self, coro: Coroutine, name: str) -> None:
        task = _Task(next(self._seq), name, coro)
        heapq.heappush(self._ready, (self.now, task.seq, task))

    def run(self, on_idle: Callable[[], None]) -> None:
        """Run until every coroutine has finished. When only waiting coroutines
        remain, ``on_idle`` is called once (to end the run) so that they can finish."""
        idle_called = False
        while self._ready or self._waiting:
            if not self._ready:
                if idle_called:
                    names = ", ".join(task.name for _, task in self._waiting)
                    raise RuntimeError(f"simulation deadlock at t={self.now:.6g}: {names} wait for what never comes")
                on_idle()
                idle_called = True
                self._wake_waiters()
                continue
            self.now, _, task = heapq.heappop(self._ready)
            self._step(task)
            if self._waiting:
                self._wake_waiters()

    def _step(self, task: _Task) -> None:
        try:
            command = task.coro.send(None)
        except StopIteration:
            return
        if command.kind == "sleep":
            heapq.heappush(self._ready, (self.now + command.value, next(self._seq), task))
        else:
            self._waiting.append((command.value, task))

    def _wake_waiters(self) -> None:
        still = []
        for ready, task in self._waiting:
            if ready():
                heapq.heappush(self._ready, (self.now, next(self._seq), task))
            else:
                still.append((ready, task))
        self._waiting = still


DEFAULT_COMPUTE_SECONDS = 1.0  # a gradient's virtual duration when the config gives none


class SimBackend(LocalBackend):
    """The local backend's shards and clients; its workers and evaluator coroutines in virtual time."""

    name = "sim"

    def start(self, fail) -> InProcessClient:
        self.sim = VirtualTime()
        self.metrics.use_clock(lambda: self.sim.now)
        self.trace = TraceRecorder()
        # The local backend's shards and evaluator client (no delays: it reads instantly), and one torch
        # thread, which here also makes every run's floating-point results the same.
        return super().start(fail)

    def _client(self, worker: int) -> InProcessClient:
        return InProcessClient(self.experiment.layout, self.shards, worker, wait=self.sim.wait_until)

    def start_worker(self, worker, ended, stopped) -> None:
        experiment, delays = self.experiment, self.experiment.delays
        samplers = delays.samplers(worker)
        if not delays.is_active("compute"):
            samplers["compute"] = lambda nbytes: DEFAULT_COMPUTE_SECONDS
        client = DelayedClient(self._client(worker), samplers, self.sim, self.trace)
        runtime = WorkerRuntime(worker, experiment.config.cluster.workers, client, experiment.model,
                                experiment.data_shards[worker], experiment.steps, self.metrics.record, stopped,
                                after_compute=client.compute, transform=experiment.transform)
        self.sim.spawn(reported(worker, runtime.work(experiment.protocol), ended), f"worker {worker}")

    def spawn(self, name, coro) -> None:
        self.sim.spawn(coro, name)

    def wait(self) -> None:
        self.sim.run(on_idle=self.end)
        self.trace.write(self.metrics.path.parent / "trace.jsonl")
